"""Slice-wise JCS diagnosis of a CT volume: classification, Grad-CAM and lesion segmentation.

Pipeline (paper §III): every axial slice is windowed to 8 bit and classified (Res2Net, class 1 =
COVID-19); Grad-CAM of class 1 on the last stage explains each decision (eq. (1)-(2)); the case is
positive when more than T slices are positive (paper §IV, T = 25 for scans of about 300 slices); the
segmenter then delineates the opacities, by default only in positive cases as in the paper.

Which slices count as positive is the *decision rule*: ``classifier`` (the paper's: the classifier's
slice probability > 0.5) or ``segmenter`` (the segmenter's opacification covers more than a share of
the slice's lung area, ``jcs.lung``). A classifier's model card may recommend the segmenter rule (its
``decision`` block, for a classifier measured not to generalise); under it the segmenter runs on every
slice and T, unless given, keeps the paper's 25 mm of cranio-caudal involvement
(:func:`scaled_threshold`).

Slices are streamed through the models in batches, so no float copy of the whole volume is made per
stage. The device is chosen automatically (CUDA, then Apple MPS, then CPU); on an out-of-memory error
the batch is halved, and on an accelerator that cannot run even one slice the engine moves to the CPU.
Reduced precision (bf16 on CPUs with native bf16, fp16 on CUDA) is used under autocast; the test-suite
checks it gives the same decisions as fp32 and lesion masks with Dice >= 0.99.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jcs.decision import (
    CHECKED_SLICE_SPACING_MM,
    DEFAULT_THRESHOLD,
    OPACIFIED_LUNG_FRACTION,
    SLICE_THRESHOLD,
    oversized_components,
    scaled_threshold,
    segmenter_reading,
)
from jcs.errors import CancelledError, JCSError, WeightsError
from jcs.gradcam import COVID_CLASS, GRADCAM_SCORES, cam_to_slices, grad_cam, weight_by_probability
from jcs.io import CTVolume
from jcs.options import AUTO, DecisionRule, Device, Precision, SegmentPolicy, parse_choice
from jcs.preprocess import SEGMENTER_SIZE, axial_slices_uint8, classifier_input, segmenter_input
from jcs.weights import WeightsCard, default_weights, load_model

if TYPE_CHECKING:
    from jcs.lung import FoundLungs

NO_WEIGHTS_MESSAGE = (
    "no classifier weights were named and none are bundled with this installation. Get weights with "
    "`jcs weights import-official CHECKPOINT --name NAME` (an official JCS checkpoint) or train your own "
    "(see training/), then pass `--classifier NAME`; `jcs weights list` shows what is installed"
)

ProgressCallback = Callable[[str, float], None]
CancelCallback = Callable[[], bool]

# Rough activation memory per slice in fp32 for the full-width models, used to size GPU batches.
_CLASSIFIER_BYTES_PER_SLICE = 120 * 2**20
_SEGMENTER_BYTES_PER_SLICE = 900 * 2**20
_CPU_CLASSIFIER_BATCH = 16
_CPU_SEGMENTER_BATCH = 4
_MAX_GPU_BATCH = 64


@dataclass
class DiagnosisResult:
    """Outputs of :meth:`DiagnosisEngine.diagnose`; arrays are on the axial grid ``(Z, Y, X)``."""

    slice_probabilities: np.ndarray
    positive_slice_count: int
    threshold: int
    positive: bool
    heatmap: np.ndarray
    lesion_probability: np.ndarray | None
    lesion_mask: np.ndarray
    segmented: bool
    timings_s: dict[str, float]
    weights: dict[str, dict[str, str]]
    device: str
    precision: Precision
    notes: list[str] = field(default_factory=list)
    decision: DecisionRule = DecisionRule.CLASSIFIER
    min_lung_fraction: float = OPACIFIED_LUNG_FRACTION
    lungs: np.ndarray | None = None
    slice_lung_fraction: np.ndarray | None = None

    @property
    def slice_positive(self) -> np.ndarray:
        """Boolean (Z,) per-slice decisions of the decision rule the case was decided by."""
        if self.decision == DecisionRule.SEGMENTER and self.slice_lung_fraction is not None:
            return self.slice_lung_fraction > self.min_lung_fraction
        return self.slice_probabilities > SLICE_THRESHOLD

    @property
    def classifier_positive_count(self) -> int:
        """Slices the classifier calls positive (probability > 0.5), whatever the decision rule."""
        return int((self.slice_probabilities > SLICE_THRESHOLD).sum())


def classifier_threshold(card: WeightsCard | None) -> int:
    """T of the paper's rule for a classifier: the one its model card recommends, else 25."""
    return card.threshold if card is not None and card.threshold is not None else DEFAULT_THRESHOLD


def resolve_device(device: Device | str | torch.device = Device.AUTO) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit device must be available."""
    name = str(device)
    if name == Device.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise JCSError(f"unknown device {name!r}; use auto, cpu, cuda or mps") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise JCSError("device 'cuda' was requested but no CUDA GPU is available to PyTorch")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise JCSError("device 'mps' was requested but Apple MPS is not available to PyTorch")
    if resolved.type not in Device.values():
        raise JCSError(f"unsupported device {name!r}; use auto, cpu, cuda or mps")
    return resolved


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16/AMX on x86, per oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return False
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        return bool(probe())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def resolve_precision(precision: Precision | str, device: torch.device) -> Precision:
    """``auto``: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32; explicit values are checked.

    The one precision detection of the project (training uses it too)."""
    chosen: Precision = _choice(Precision, precision, "precision")
    if chosen == Precision.AUTO:
        if device.type == "cuda":
            return Precision.FP16
        if device.type == "cpu" and cpu_supports_bf16():
            return Precision.BF16
        return Precision.FP32
    if chosen == Precision.FP16 and device.type != "cuda":
        raise JCSError(f"fp16 inference needs a CUDA device, not {device.type}")
    if chosen == Precision.BF16:
        if device.type == "cpu" and not cpu_supports_bf16():
            raise JCSError("bf16 inference was requested but this CPU has no native bf16 support")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise JCSError("bf16 inference was requested but this GPU does not support bf16")
        if device.type == "mps":
            raise JCSError("bf16 inference is not supported on Apple MPS; use fp32")
    return chosen


def _choice(kind: Any, value: Any, what: str) -> Any:
    """``value`` as a member of the str-enum ``kind``; :class:`JCSError` naming the choices otherwise."""
    try:
        return parse_choice(kind, value, what)
    except ValueError as exc:
        raise JCSError(str(exc)) from None


def autocast_dtype(precision: Precision | str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: fp32, no autocast)."""
    return {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(Precision(precision))


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    message = str(exc).lower()
    oom = "out of memory" in message or "can't allocate memory" in message
    return isinstance(exc, RuntimeError) and oom


def _prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    # torch's stub of Module.to omits memory_format, which Module.to accepts
    model = model.to(device=device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
    model.requires_grad_(False)
    return model


@dataclass(frozen=True)
class ClassifierSpec:
    """How slices are fed to a classifier and how its Grad-CAM is scored: what its model card says.

    ``whole_slice`` 0 is the official 256/224 centre crop; S resizes the whole slice to S×S
    (card ``input.whole_slice``), so the heatmap covers every pixel. ``gradcam_score`` is the score
    of eq. (1)-(2) (``jcs.gradcam``; card ``gradcam.score``, default the paper's logit).
    """

    standardize: bool = False
    whole_slice: int = 0
    gradcam_score: str = "logit"

    @classmethod
    def from_card_data(cls, data: Mapping[str, Any], name: str = "classifier") -> ClassifierSpec:
        """The spec of a card's JSON data (``input`` and ``gradcam`` blocks; both optional)."""
        spec = data.get("input", {})
        score = data.get("gradcam", {}).get("score", "logit")
        if score not in GRADCAM_SCORES:
            raise WeightsError(
                f"model card {name!r} names an unknown Grad-CAM score {score!r} "
                f"(known: {', '.join(GRADCAM_SCORES)})"
            )
        return cls(
            standardize=bool(spec.get("per_image_standardize", False)),
            whole_slice=int(spec.get("size", 256)) if spec.get("whole_slice") else 0,
            gradcam_score=score,
        )

    @classmethod
    def from_card(cls, card: WeightsCard | None) -> ClassifierSpec:
        return cls() if card is None else cls.from_card_data(card.data, card.name)


class DiagnosisEngine:
    """Runs the JCS models over a CT volume; see the module docstring for the pipeline.

    ``segmenter_size`` (an extension of the contract) is the segmenter's square input size: by
    default the size in the segmenter's model card (``input.size``), else the paper's 512. A card with
    ``input.per_image_standardize`` gets its slices standardised per image (jcs.preprocess); one with
    ``input.test_time_flip`` averages each prediction with that of the left-right mirrored slice.
    ``decision`` is the decision rule (module docstring); ``threshold=None`` scales T to each scan.
    """

    def __init__(
        self,
        classifier: nn.Module,
        segmenter: nn.Module | None = None,
        *,
        device: Device | str | torch.device = Device.AUTO,
        threshold: int | None = DEFAULT_THRESHOLD,
        segment_policy: SegmentPolicy | str = SegmentPolicy.POSITIVE_ONLY,
        decision: DecisionRule | str = DecisionRule.CLASSIFIER,
        min_lung_fraction: float = OPACIFIED_LUNG_FRACTION,
        precision: Precision | str = Precision.AUTO,
        batch_size: int | None = None,
        classifier_card: WeightsCard | None = None,
        segmenter_card: WeightsCard | None = None,
        segmenter_size: int | None = None,
        classifier_spec: ClassifierSpec | None = None,
    ) -> None:
        policy: SegmentPolicy = _choice(SegmentPolicy, segment_policy, "segment policy")
        rule: DecisionRule = _choice(DecisionRule, decision, "decision rule")
        bad_threshold = isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0
        if threshold is not None and bad_threshold:
            raise JCSError(f"threshold must be a non-negative number of slices, not {threshold!r}")
        if rule == DecisionRule.SEGMENTER and segmenter is None:
            raise JCSError("the segmenter decision rule needs segmenter weights")
        if not 0.0 <= min_lung_fraction < 1.0:
            raise JCSError(f"minimum lung fraction must lie in [0, 1), not {min_lung_fraction!r}")
        if batch_size is not None and batch_size < 1:
            raise JCSError(f"batch size must be at least 1, not {batch_size}")
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.threshold = threshold
        self.segment_policy = policy
        self.decision = rule
        self.min_lung_fraction = float(min_lung_fraction)
        self.batch_size = batch_size
        self.classifier = _prepare_model(classifier, self.device)
        self.segmenter = None if segmenter is None else _prepare_model(segmenter, self.device)
        self.classifier_card = classifier_card
        self.segmenter_card = segmenter_card
        #: T of the paper's rule for this classifier (also the segmenter rule's fallback when no lungs
        #: are found and no threshold was given).
        self.classifier_threshold = classifier_threshold(classifier_card)
        if classifier_spec is None:
            classifier_spec = ClassifierSpec.from_card(classifier_card)
        #: how slices are fed to the classifier and its Grad-CAM scored (from its card)
        self.classifier_spec = classifier_spec
        card_input = segmenter_card.data.get("input", {}) if segmenter_card is not None else {}
        if segmenter_size is None:
            segmenter_size = int(card_input.get("size", SEGMENTER_SIZE))
        if segmenter_size < 32:
            raise JCSError(f"segmenter input size must be at least 32 pixels, not {segmenter_size}")
        self.segmenter_size = segmenter_size
        self.segmenter_standardize = bool(card_input.get("per_image_standardize", False))
        self.segmenter_flip = bool(card_input.get("test_time_flip", False))

    @classmethod
    def from_registry(
        cls, classifier: str | None = None, segmenter: str | None = None, **kwargs: Any
    ) -> DiagnosisEngine:
        """Engine with registry weights (defaults: the bundled ones; no segmenter if none is found).

        ``decision="auto"`` takes the rule the classifier's card recommends (its ``decision`` block: a
        classifier measured not to generalise defers to the segmenter), else the paper's rule.
        Without an explicit ``threshold``: under the classifier rule the classifier card's
        recommended T (else 25); under the segmenter rule the block's ``threshold``, else T scaled to
        each scan (:func:`scaled_threshold`), and the classifier's T again for a scan decided by the
        classifier rule because its lungs were not found.
        """
        decision = kwargs.pop("decision", AUTO)
        classifier = classifier or default_weights("classifier")
        if classifier is None:
            raise WeightsError(NO_WEIGHTS_MESSAGE)
        classifier_model, classifier_card = load_model(classifier)
        if classifier_card.kind != "classifier":
            raise WeightsError(f"weights {classifier!r} are a {classifier_card.kind}, not a classifier")
        segmenter = segmenter or default_weights("segmenter")
        segmenter_model, segmenter_card = None, None
        if segmenter is not None:
            segmenter_model, segmenter_card = load_model(segmenter)
            if segmenter_card.kind != "segmenter":
                raise WeightsError(f"weights {segmenter!r} are a {segmenter_card.kind}, not a segmenter")
        for card in (classifier_card, segmenter_card):
            if card is not None and card.architecture.get("feature_input"):
                raise WeightsError(
                    f"weights {card.name!r} take COVID-CS first-stage features, not CT slices; "
                    "they cannot diagnose images"
                )
        rule = classifier_card.data.get("decision")
        rule = rule if isinstance(rule, dict) else {}
        if decision == AUTO:
            wanted = rule.get("rule") == DecisionRule.SEGMENTER and segmenter_model is not None
            decision = DecisionRule.SEGMENTER if wanted else DecisionRule.CLASSIFIER
        decision = _choice(DecisionRule, decision, "decision rule")
        kwargs["decision"] = decision
        if decision == DecisionRule.CLASSIFIER and kwargs.get("threshold") is None:
            kwargs["threshold"] = classifier_threshold(classifier_card)
        if decision == DecisionRule.SEGMENTER:
            share = float(rule.get("min_lung_fraction", OPACIFIED_LUNG_FRACTION))
            kwargs.setdefault("min_lung_fraction", share)
            if kwargs.get("threshold") is None:
                kwargs["threshold"] = rule.get("threshold")
        return cls(
            classifier_model,
            segmenter_model,
            classifier_card=classifier_card,
            segmenter_card=segmenter_card,
            **kwargs,
        )

    # -- helpers -------------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of the engine's precision (a no-op for fp32)."""
        return autocast(self.precision, self.device)

    def initial_batch(self, stage: str) -> int:
        """Starting batch size of a stage ("classify" or "segment") on the current device."""
        if self.batch_size is not None:
            return self.batch_size
        if self.device.type == "cpu":
            return _CPU_CLASSIFIER_BATCH if stage == "classify" else _CPU_SEGMENTER_BATCH
        per_slice = _CLASSIFIER_BYTES_PER_SLICE if stage == "classify" else _SEGMENTER_BYTES_PER_SLICE
        if self.precision != Precision.FP32:
            per_slice //= 2
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
        else:
            free = 4 * 2**30
        return int(max(1, min(_MAX_GPU_BATCH, free * 0.6 // per_slice)))

    def _move_to_cpu(self) -> None:
        self.device = torch.device("cpu")
        self.precision = resolve_precision(Precision.AUTO, self.device)
        self.classifier = _prepare_model(self.classifier, self.device)
        if self.segmenter is not None:
            self.segmenter = _prepare_model(self.segmenter, self.device)
        self._empty_cache()

    @staticmethod
    def _empty_cache() -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if torch.backends.mps.is_available():
            torch.mps.empty_cache()

    def _batches(
        self,
        stage: str,
        n: int,
        run: Callable[[int, int], None],
        progress: ProgressCallback | None,
        should_cancel: CancelCallback | None,
        notes: list[str],
    ) -> None:
        """Call ``run(start, stop)`` over ``range(n)`` in batches, shrinking them on out-of-memory."""
        batch = self.initial_batch(stage)
        start = 0
        while start < n:
            if should_cancel is not None and should_cancel():
                raise CancelledError(f"diagnosis cancelled during {stage} at slice {start} of {n}")
            stop = min(n, start + batch)
            try:
                run(start, stop)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                if not _is_out_of_memory(exc):
                    raise
                self._empty_cache()
                if stop - start > 1:
                    batch = max(1, (stop - start) // 2)
                    notes.append(f"{stage}: out of memory on {self.device.type}; batch size now {batch}")
                    continue
                if self.device.type != "cpu":
                    notes.append(f"{stage}: out of memory on {self.device.type} with one slice; moved to CPU")
                    self._move_to_cpu()
                    batch = self.initial_batch(stage)
                    continue
                raise JCSError(f"out of memory while running {stage} on a single slice") from exc
            start = stop
            if progress is not None:
                progress(stage, stop / n)

    # -- stages --------------------------------------------------------------------------------

    def classify_slices(
        self,
        slices: np.ndarray,
        *,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCallback | None = None,
        notes: list[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """COVID-19 probability (Z,) and Grad-CAM heatmap (Z, H, W; peak = probability) of uint8 slices."""
        n, height, width = slices.shape
        probabilities = np.zeros(n, dtype=np.float32)
        heatmap = np.zeros((n, height, width), dtype=np.float32)
        spec = self.classifier_spec

        def run(start: int, stop: int) -> None:
            with torch.no_grad():
                x = classifier_input(slices[start:stop], spec.standardize, spec.whole_slice)
                x = to_model_device(x, self.device)
            with self.autocast():
                logits, cam = grad_cam(self.classifier, x, target_class=COVID_CLASS, score=spec.gradcam_score)
            probabilities[start:stop] = covid_probability(logits)
            heat = cam_to_slices(cam.cpu(), height, width, bool(spec.whole_slice))
            heatmap[start:stop] = weight_by_probability(heat, probabilities[start:stop])

        self._batches("classify", n, run, progress, should_cancel, [] if notes is None else notes)
        return probabilities, heatmap

    def segment_slices(
        self,
        slices: np.ndarray,
        *,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCallback | None = None,
        notes: list[str] | None = None,
    ) -> np.ndarray:
        """Lesion probability (Z, H, W) float32 of uint8 slices (segmenter output 0, resized back)."""
        if self.segmenter is None:
            raise JCSError("no segmenter weights are loaded")
        segmenter = self.segmenter
        n, height, width = slices.shape
        probability = np.zeros((n, height, width), dtype=np.float32)

        def run(start: int, stop: int) -> None:
            x = segmenter_input(
                slices[start:stop], size=self.segmenter_size, standardize=self.segmenter_standardize
            )
            x = to_model_device(x, self.device)
            maps = segment_batch(segmenter, x, (height, width), self.precision, self.segmenter_flip)
            probability[start:stop] = maps.cpu().numpy()

        self._batches("segment", n, run, progress, should_cancel, [] if notes is None else notes)
        return probability

    def diagnose(
        self,
        ct: CTVolume,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCallback | None = None,
        *,
        lungs: FoundLungs | None = None,
    ) -> DiagnosisResult:
        """Diagnose ``ct``: per-slice probabilities, case decision, Grad-CAM and (policy) lesions.

        ``progress(stage, fraction)`` is called after each batch with stage ``"prepare"``,
        ``"classify"``, ``"segment"`` or ``"done"``; ``should_cancel()`` is polled before each batch
        and a True answer raises :class:`jcs.errors.CancelledError`. ``lungs`` (:func:`jcs.lung.find_lungs`
        of ``ct``) spares the segmenter rule finding them again; without them it finds them itself.
        """
        timings: dict[str, float] = {}
        notes: list[str] = []
        t_total = time.perf_counter()
        report: ProgressCallback = progress if progress is not None else _no_progress
        if should_cancel is not None and should_cancel():
            raise CancelledError("diagnosis cancelled before it started")
        t0 = time.perf_counter()
        slices = axial_slices_uint8(ct)
        timings["prepare"] = time.perf_counter() - t0
        report("prepare", 1.0)
        t0 = time.perf_counter()
        probabilities, heatmap = self.classify_slices(
            slices, progress=report, should_cancel=should_cancel, notes=notes
        )
        timings["classify"] = time.perf_counter() - t0
        count = int((probabilities > SLICE_THRESHOLD).sum())
        threshold = self._case_threshold(ct, slices.shape[0], notes)
        reading = _CaseCount(self.decision, threshold, count, count > threshold)
        lesion_probability = self._segment_case(
            slices, reading.positive, report, should_cancel, notes, timings
        )
        if lesion_probability is None:
            lesion_mask = np.zeros(slices.shape, dtype=np.uint8)
        else:
            lesion_mask = (lesion_probability > SLICE_THRESHOLD).astype(np.uint8)
        if self.decision == DecisionRule.SEGMENTER:
            t0 = time.perf_counter()
            self._apply_segmenter_rule(ct, lesion_mask, reading, lungs, notes)
            timings["lungs"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_total
        report("done", 1.0)
        return DiagnosisResult(
            slice_probabilities=probabilities,
            positive_slice_count=reading.count,
            threshold=reading.threshold,
            positive=reading.positive,
            heatmap=heatmap,
            lesion_probability=lesion_probability,
            lesion_mask=lesion_mask,
            segmented=lesion_probability is not None,
            timings_s=timings,
            weights=self.weights_summary(),
            device=self.device.type,
            precision=self.precision,
            notes=notes,
            decision=reading.decision,
            min_lung_fraction=self.min_lung_fraction,
            lungs=reading.lungs,
            slice_lung_fraction=reading.fractions,
        )

    def weights_summary(self) -> dict[str, dict[str, str]]:
        """Name, source and checksum of the loaded weights (model cards), by kind."""
        cards = {"classifier": self.classifier_card, "segmenter": self.segmenter_card}
        return {kind: card.summary() for kind, card in cards.items() if card is not None}

    def _case_threshold(self, ct: CTVolume, n_slices: int, notes: list[str]) -> int:
        """T of this scan: 0 for a single slice, the engine's, else scaled to the scan."""
        if n_slices == 1:
            notes.append("single slice: the case is positive when the slice is (threshold 0)")
            return 0
        if self.threshold is not None:
            return self.threshold
        spacing = slice_spacing_mm(ct) if ct.is_hu else float("nan")
        return scaled_threshold(n_slices, spacing if spacing > 0 else None)

    def _segment_case(
        self,
        slices: np.ndarray,
        positive: bool,
        report: ProgressCallback,
        should_cancel: CancelCallback | None,
        notes: list[str],
        timings: dict[str, float],
    ) -> np.ndarray | None:
        """Lesion probability when the policy (or the segmenter rule) segments this case, else None."""
        if self.segmenter is None:
            notes.append("no segmenter weights: lesions were not segmented")
            return None
        wanted = (
            self.decision == DecisionRule.SEGMENTER or self.segment_policy == SegmentPolicy.ALWAYS or positive
        )
        if not wanted:
            return None
        t0 = time.perf_counter()
        probability = self.segment_slices(slices, progress=report, should_cancel=should_cancel, notes=notes)
        timings["segment"] = time.perf_counter() - t0
        return probability

    def _apply_segmenter_rule(
        self,
        ct: CTVolume,
        lesion_mask: np.ndarray,
        reading: _CaseCount,
        lungs: FoundLungs | None,
        notes: list[str],
    ) -> None:
        """Count by the segmenter rule into ``reading``; when no lungs are found, a note and the classifier
        rule (with the classifier's T unless one was given)."""
        if lungs is None:
            from jcs.lung import find_lungs  # SciPy, imported only for this rule (start-up of the CLI)

            lungs = find_lungs(ct)
        reading.lungs = lungs.labels
        if lungs.problem is not None:
            notes.append(f"{lungs.problem}; the case was decided by the classifier rule")
            reading.decision = DecisionRule.CLASSIFIER
            if self.threshold is None and lesion_mask.shape[0] > 1:
                reading.threshold = self.classifier_threshold
                reading.positive = reading.count > reading.threshold
            return
        rule = segmenter_reading(lesion_mask, lungs.labels, reading.threshold, self.min_lung_fraction)
        single = lesion_mask.shape[0] == 1
        if single and oversized_components(lesion_mask[0] > 0, int((lungs.labels > 0).sum())).any():
            notes.append(
                "single slice: an opacity larger than half of the slice's lung was not counted as a lesion "
                "(at a lung base or apex it is usually liver, heart or diaphragm)"
            )
        reading.fractions = rule.slice_lung_fraction
        reading.count, reading.positive = rule.positive_slice_count, rule.positive
        spacing = slice_spacing_mm(ct) if ct.is_hu and lesion_mask.shape[0] > 1 else float("nan")
        if spacing > CHECKED_SLICE_SPACING_MM:
            notes.append(
                f"slices are {spacing:g} mm apart: the segmenter rule was checked on slices up to "
                f"{CHECKED_SLICE_SPACING_MM:g} mm; on thicker slices normal lungs can show more "
                "opacified slices than the threshold allows, so read a positive call with care "
                "(or pass a higher --threshold)"
            )


@dataclass
class _CaseCount:
    """The case count while :meth:`DiagnosisEngine.diagnose` decides it."""

    decision: DecisionRule
    threshold: int
    count: int
    positive: bool
    lungs: np.ndarray | None = None
    fractions: np.ndarray | None = None


def _no_progress(stage: str, fraction: float) -> None:
    """A progress callback that reports nothing."""


def autocast(precision: Precision | str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a resolved precision on ``device`` (a no-op for fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_model_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A prepared batch on the models' device, channels-last as the models are."""
    return x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def covid_probability(logits: torch.Tensor) -> np.ndarray:
    """COVID-19 probability (softmax of class 1) per slice of classifier logits (N, 2)."""
    return torch.softmax(logits.float(), dim=1)[:, COVID_CLASS].cpu().numpy()


def classify_batch(classifier: nn.Module, x: torch.Tensor, precision: Precision | str) -> np.ndarray:
    """COVID-19 probability per slice of a prepared batch (:func:`jcs.preprocess.classifier_input` on the
    device), without Grad-CAM: the classify stage's scores, for evaluations."""
    with torch.no_grad(), autocast(precision, x.device):
        logits = classifier(x)
    return covid_probability(logits)


def segment_batch(
    segmenter: nn.Module, x: torch.Tensor, size_hw: tuple[int, int], precision: Precision | str, flip: bool
) -> torch.Tensor:
    """The segment stage on one prepared batch (:func:`jcs.preprocess.segmenter_input` on the device):
    lesion probability (N, H, W) of output channel 0, averaged with the left-right mirrored pass when
    ``flip`` (card ``input.test_time_flip``), resized bilinearly to ``size_hw`` and clamped to [0, 1]."""
    with torch.inference_mode():
        with autocast(precision, x.device):
            maps = segmenter(x)[:, :1]
            if flip:
                maps = (maps.float() + segmenter(x.flip(-1))[:, :1].float().flip(-1)) / 2
        maps = F.interpolate(maps.float(), size=size_hw, mode="bilinear", align_corners=False)
        return maps[:, 0].clamp_(0.0, 1.0)


def slice_spacing_mm(ct: CTVolume) -> float:
    """Spacing between axial slices (mm) of ``ct``'s axial grid."""
    spacing = ct.axial_image().GetSpacing()
    return float(spacing[2]) if len(spacing) > 2 and math.isfinite(spacing[2]) else float("nan")
