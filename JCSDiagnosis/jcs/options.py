"""One vocabulary for the options of a reading: str-enums, the options dataclass and the argparse helper.

The enums accept their string (``SegmentPolicy("always")``) and compare equal to it, so one vocabulary
serves the Python API, ``results.json`` and the command lines of ``jcs`` and ``jcs-viewer``
(:func:`add_diagnosis_arguments`). Standard library only: the viewer's and the CLI's start-up stay fast.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, TypeVar

LESION_MARGIN_MM = 10.0
"""Predicted opacities farther than this from the lungs are dropped (HU volumes; negative keeps all)."""


class _Choice(str, Enum):
    """A str-enum whose ``str()`` and ``format()`` are its value (``enum.StrEnum`` needs Python 3.11)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(str(member.value) for member in cls)


class DecisionRule(_Choice):
    """Which slices count as positive (:mod:`jcs.decision`)."""

    CLASSIFIER = "classifier"
    SEGMENTER = "segmenter"


class SegmentPolicy(_Choice):
    """When lesions are segmented: in cases read positive (the paper's), or in every case."""

    POSITIVE_ONLY = "positive-only"
    ALWAYS = "always"


class Device(_Choice):
    """Where the models run; ``auto`` takes CUDA, then Apple MPS, then the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Precision(_Choice):
    """Number format of the models; ``auto``: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class ProgressStyle(_Choice):
    """How ``jcs diagnose`` reports progress: a bar on stderr, JSON lines on stdout, or nothing."""

    BAR = "bar"
    JSON = "json"
    NONE = "none"


AUTO = "auto"
"""``--decision auto``: the rule the classifier's model card recommends, else the paper's."""

E = TypeVar("E", bound=_Choice)


def parse_choice(kind: type[E], value: str | E, what: str) -> E:
    """``value`` as a member of ``kind``; a clear error naming the choices otherwise."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(kind.values())
        raise ValueError(f"{what} must be one of {choices}, not {value!r}") from None


@dataclass(frozen=True)
class DiagnosisOptions:
    """Every option of ``jcs diagnose`` that shapes a reading, with the command's defaults.

    ``decision`` is a :class:`DecisionRule` or ``"auto"`` (the classifier card's recommendation);
    ``threshold``/``batch_size`` None: chosen per weights and scan / per device.
    """

    classifier: str | None = None
    segmenter: str | None = None
    device: Device = Device.AUTO
    precision: Precision = Precision.AUTO
    threshold: int | None = None
    decision: DecisionRule | str = AUTO
    segment_policy: SegmentPolicy = SegmentPolicy.POSITIVE_ONLY
    batch_size: int | None = None
    lesion_margin_mm: float = LESION_MARGIN_MM
    dicom_seg: bool = False
    progress: ProgressStyle = ProgressStyle.BAR

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise strings to the enums once, here
        set_(self, "device", parse_choice(Device, self.device, "device"))
        set_(self, "precision", parse_choice(Precision, self.precision, "precision"))
        set_(self, "segment_policy", parse_choice(SegmentPolicy, self.segment_policy, "segment policy"))
        set_(self, "progress", parse_choice(ProgressStyle, self.progress, "progress style"))
        if self.decision != AUTO:
            set_(self, "decision", parse_choice(DecisionRule, self.decision, "decision rule"))
        if self.threshold is not None and (isinstance(self.threshold, bool) or self.threshold < 0):
            raise ValueError(f"threshold must be a non-negative number of slices, not {self.threshold!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {self.batch_size}")
        if not math.isfinite(self.lesion_margin_mm):
            raise ValueError(f"lesion margin must be a finite number of mm, not {self.lesion_margin_mm!r}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DiagnosisOptions:
        """The options of parsed arguments (:func:`add_diagnosis_arguments`; missing ones keep defaults)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        if getattr(args, "quiet", False):
            values["progress"] = ProgressStyle.NONE
        return cls(**values)

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`jcs.inference.DiagnosisEngine.from_registry`."""
        return {
            "device": self.device,
            "threshold": self.threshold,
            "segment_policy": self.segment_policy,
            "decision": self.decision,
            "precision": self.precision,
            "batch_size": self.batch_size,
        }


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def enum_choices(kind: type[_Choice], *extra: str) -> dict[str, Any]:
    """``type``/``choices`` of an enum option: the member is stored; an unknown value is left as text so
    argparse refuses it as ``invalid choice: 'x' (choose from ...)``."""

    def parse(text: str) -> _Choice | str:
        try:
            return kind(text)
        except ValueError:
            return text

    return {"type": parse, "choices": [*extra, *kind.values()]}


def _option_specs() -> dict[str, tuple[str, dict[str, Any]]]:
    """``DiagnosisOptions`` field -> (flag, argparse keywords) of each engine option."""
    return {
        "classifier": ("--classifier", {"help": "classifier weights name (default: the bundled one)"}),
        "segmenter": ("--segmenter", {"help": "segmenter weights name (default: the bundled one)"}),
        "device": ("--device", {
            "default": Device.AUTO, **enum_choices(Device),
            "help": "where the models run: 'auto' takes a CUDA or Apple GPU when present, else the CPU "
            "(default)",
        }),
        "precision": ("--precision", {
            "default": Precision.AUTO, **enum_choices(Precision),
            "help": "number format of the models: 'auto' is fp16 on CUDA, bf16 on CPUs with native bf16, "
            "else fp32 (default); fp16 needs CUDA",
        }),
        "threshold": ("--threshold", {
            "type": int_at_least(0),
            "help": "case is positive when more than T slices are (default: the weights' card, else 25; "
            "under the segmenter rule without a card value, 25 mm of slices)",
        }),
        "decision": ("--decision", {
            "default": AUTO, **enum_choices(DecisionRule, AUTO),
            "help": "which slices count as positive: 'classifier' (the paper's: COVID-19 probability > "
            "0.5) or 'segmenter' (predicted opacification covers more than a share of the slice's lung); "
            "'auto' follows the classifier's model card (default)",
        }),
        "segment_policy": ("--segment", {
            "dest": "segment_policy", "default": SegmentPolicy.POSITIVE_ONLY, **enum_choices(SegmentPolicy),
            "help": "when lesions are segmented: 'positive-only' for cases read positive (default), "
            "'always' for every case (slower)",
        }),
        "batch_size": ("--batch-size", {
            "type": int_at_least(1), "help": "slices per batch (default: chosen per device)",
        }),
        "lesion_margin_mm": ("--lesion-margin-mm", {
            "type": finite_float, "default": LESION_MARGIN_MM,
            "help": "CT volumes: drop predicted lesion voxels farther than this from the lungs; negative "
            f"keeps all (default {LESION_MARGIN_MM:g})",
        }),
    }


#: The engine options :func:`add_diagnosis_arguments` adds by default (all of them).
ENGINE_OPTIONS = tuple(_option_specs())


def add_diagnosis_arguments(parser: argparse.ArgumentParser, names: Sequence[str] = ENGINE_OPTIONS) -> None:
    """The engine's options (weights, device, precision, threshold, decision rule, segmentation policy,
    batch size, lesion margin; or the ``names`` given, :class:`DiagnosisOptions` field names) on
    ``parser``: the one definition, shared by ``jcs diagnose`` and ``jcs-viewer``. The segmentation
    policy's flag is ``--segment`` (stored as ``segment_policy``)."""
    specs = _option_specs()
    unknown = set(names) - set(specs)
    if unknown:
        raise ValueError(f"not engine options: {', '.join(sorted(unknown))}")
    for name in names:
        flag, keywords = specs[name]
        parser.add_argument(flag, **keywords)
