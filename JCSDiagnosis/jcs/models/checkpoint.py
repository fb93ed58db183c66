"""Loading checkpoints safely and recognising the official JCS checkpoint formats.

Only safetensors files and ``torch.load(weights_only=True)`` are used: no arbitrary pickles. The four
official formats (classifier on Res2Net-101/-50, single and joint segmentation) are recognised by their
exact key set and tensor shapes, derived from our own model definitions built on the ``meta`` device.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jcs.errors import WeightsError

from .jcs_net import JCSNet
from .res2net import Res2NetV1b

# Official format name -> (kind, builder kwargs at the paper configuration).
OFFICIAL_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "classifier_res2net101_v1b_26w_4s_fc2": ("classifier", {"depth": 101, "num_classes": 2}),
    "classifier_res2net50_v1b_26w_4s_fc2": ("classifier", {"depth": 50, "num_classes": 2}),
    "segmentation_single": ("segmenter", {"joint": False}),
    "segmentation_joint": ("segmenter", {"joint": True}),
}

_OPTIONAL_SUFFIX = ".num_batches_tracked"
_MAX_LISTED = 8


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` and strip a common ``module.`` prefix (DataParallel)."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{source}: not a state dict (expected a non-empty mapping of names to tensors)")
    not_tensors = [
        str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)
    ]
    if not_tensors:
        raise WeightsError(
            f"{source}: not a state dict; entries that are not named tensors: "
            + ", ".join(not_tensors[:_MAX_LISTED])
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_checkpoint(path_or_obj: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Load a checkpoint and return its clean state dict (tensors on the CPU).

    Accepts a ``.safetensors`` file, a PyTorch file (read with ``torch.load(weights_only=True)``) or an
    already loaded object; unwraps ``{"state_dict": ...}`` and removes ``module.`` prefixes.
    Raises :class:`jcs.errors.WeightsError` for a missing, unreadable or non-state-dict input.
    """
    if isinstance(path_or_obj, Mapping):
        return _unwrap(path_or_obj, "checkpoint object")
    path = Path(path_or_obj)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: unreadable or corrupt safetensors file ({exc})") from exc
        return _unwrap(obj, str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: refused to load: the file holds Python objects other than tensors, which are not "
            f"loaded for safety (weights_only=True). Re-save it as a plain state dict or safetensors. ({exc})"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable or corrupt PyTorch file ({exc})") from exc
    return _unwrap(obj, str(path))


_BUILDERS: dict[str, type[nn.Module]] = {"classifier": Res2NetV1b, "segmenter": JCSNet}


def _builder(kind: str) -> type[nn.Module]:
    if kind not in _BUILDERS:
        raise ValueError(f"unknown model kind {kind!r}; expected 'classifier' or 'segmenter'")
    return _BUILDERS[kind]


def build_model(kind: str, **architecture: Any) -> nn.Module:
    """Build a model from its kind (``"classifier"``/``"segmenter"``) and builder kwargs (model cards)."""
    return _builder(kind)(**architecture)


def expected_shapes(kind: str, **architecture: Any) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the model and its shape, without allocating weights."""
    return dict(_expected_shapes_cached(kind, tuple(sorted(architecture.items()))))


@functools.lru_cache(maxsize=16)
def _expected_shapes_cached(
    kind: str, items: tuple[tuple[str, Any], ...]
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):
        model = build_model(kind, **dict(items))
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def state_dict_mismatch(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, mis-shaped)`` keys of ``state_dict`` against ``expected`` shapes.

    Batch-norm ``num_batches_tracked`` counters may be absent (PyTorch fills them on load).
    """
    missing = [k for k in expected if k not in state_dict and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {tuple(state_dict[k].shape)} != {expected[k]}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    return missing, unexpected, misshaped


def detect_official_format(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the official checkpoint format (a manifest entry) the state dict matches exactly, else None."""
    for name, (kind, arch) in OFFICIAL_FORMATS.items():
        if not any(state_dict_mismatch(state_dict, expected_shapes(kind, **arch))):
            return name
    return None


def _listing(label: str, keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return f"{len(keys)} {label}: {', '.join(keys[:_MAX_LISTED])}{more}"


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "weights",
    assign: bool = False,
) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with a :class:`WeightsError` that lists the
    missing, unexpected and mis-shaped keys (and names a matching official format, if any).

    ``assign=True`` adopts the tensors instead of copying them: build the model on the ``meta`` device
    and load with it to skip allocating and initialising weights that are overwritten anyway.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected, misshaped = state_dict_mismatch(state_dict, expected)
    if missing or unexpected or misshaped:
        parts = [
            _listing(label, keys)
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if keys
        ]
        official = detect_official_format(state_dict)
        hint = f" The file matches the official format {official!r}." if official else ""
        arch = getattr(model, "architecture", None)
        raise WeightsError(
            f"{source} do not fit the model {type(model).__name__}{'' if arch is None else f' {arch}'}: "
            + "; ".join(parts)
            + "."
            + hint
        )
    model.load_state_dict(dict(state_dict), strict=True, assign=assign)


def model_from_state_dict(
    kind: str, state_dict: Mapping[str, torch.Tensor], *, source: str = "weights", **architecture: Any
) -> nn.Module:
    """Build a model (``kind`` + builder kwargs) holding exactly ``state_dict``, in eval mode.

    The model is built on the ``meta`` device and adopts the (float32-cast) tensors, so no weights are
    allocated or randomly initialised first (seconds and a model's worth of memory for the full-size
    networks). Raises :class:`WeightsError` if the builder arguments are invalid or the state dict does
    not fit (every key, every shape), and ``ValueError`` for an unknown ``kind``.
    """
    builder = _builder(kind)
    try:
        with torch.device("meta"):
            model = builder(**architecture)
    except (TypeError, ValueError) as exc:
        raise WeightsError(
            f"{source}: cannot build a {kind} from architecture {architecture}: {exc}"
        ) from exc
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    load_state_dict_strict(model, tensors, source=source, assign=True)
    unset = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if unset:
        raise WeightsError(f"{source}: the weights leave model tensors unset ({', '.join(unset[:3])})")
    return model.eval()
