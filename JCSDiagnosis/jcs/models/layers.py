"""Building blocks shared by the JCS models: batch norm in the official checkpoint layout, conv units, SE.

Key names and parameter layouts follow the official JCS release (Wu et al., IEEE TIP 2021) so that its
checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

BatchNormMode = Literal["frozen", "batch"]
BATCHNORM_MODES: tuple[str, ...] = ("frozen", "batch")


def scaled(channels: int, width_mult: float) -> int:
    """``channels`` scaled by ``width_mult``, rounded to a multiple of 8 (at least 8).

    Every paper width is a multiple of 8, so ``width_mult=1.0`` returns the paper's widths unchanged.
    """
    if width_mult == 1.0:
        return channels
    return max(8, int(round(channels * width_mult / 8.0)) * 8)


def check_width_mult(width_mult: float) -> None:
    """Raise ``ValueError`` unless ``width_mult`` is a positive finite number."""
    if not (isinstance(width_mult, (int, float)) and 0.0 < float(width_mult) < float("inf")):
        raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")


def check_batchnorm(batchnorm: str) -> None:
    """Raise ``ValueError`` for an unknown batch-norm mode."""
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose state dict has no ``num_batches_tracked``, like the official checkpoints.

    ``frozen=True`` (the official behaviour, used to reproduce the released weights): always uses the
    stored statistics as ``x * (weight / sqrt(running_var)) + (bias - running_mean * scale)``, with no
    epsilon, and ``weight``/``bias`` are not trained. ``frozen=False``: an ordinary trainable batch norm
    (batch statistics in training mode, eps 1e-5), for training small models from scratch.
    """

    def __init__(self, num_features: int, *, frozen: bool = True) -> None:
        super().__init__(num_features, eps=0.0 if frozen else 1e-5)
        self.register_buffer("num_batches_tracked", None)
        self.frozen = frozen
        if frozen:
            self.weight.requires_grad_(False)
            self.bias.requires_grad_(False)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing: list[str],
        unexpected: list[str],
        errors: list[str],
    ) -> None:
        # Skip BatchNorm's hook that inserts a `num_batches_tracked` entry into metadata-less state dicts:
        # this layer has no such buffer, so the inserted key would be reported as unexpected.
        nn.Module._load_from_state_dict(
            self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.frozen:
            return super().forward(x)
        mean, var = self.running_mean, self.running_var
        if mean is None or var is None:  # never: built with track_running_stats=True
            raise RuntimeError("FrozenBatchNorm2d has no running statistics")
        scale = self.weight * torch.rsqrt(var + self.eps)
        shift = self.bias - mean * scale
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)


def batch_norm(num_features: int, batchnorm: BatchNormMode) -> FrozenBatchNorm2d:
    """A :class:`FrozenBatchNorm2d` in the given mode (``"frozen"`` as released, ``"batch"`` trainable)."""
    return FrozenBatchNorm2d(num_features, frozen=batchnorm == "frozen")


class ConvBNReLU(nn.Module):
    """Convolution (with bias) followed by an optional batch norm and an optional ReLU.

    Keys: ``conv.*`` and, with a norm, ``bn.*``. ``norm`` is ``None`` (no norm), a
    :class:`FrozenBatchNorm2d` mode (``"frozen"``/``"batch"``, the VGG encoder) or ``"standard"``
    (``nn.BatchNorm2d``, the joint model's fusion layers, whose checkpoints carry ``num_batches_tracked``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        padding: int | None = None,
        norm: str | None = None,
        relu: bool = True,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad, bias=True)
        if norm is None:
            self.bn: nn.Module | None = None
        elif norm == "standard":
            self.bn = nn.BatchNorm2d(out_channels)
        else:
            check_batchnorm(norm)
            self.bn = batch_norm(out_channels, norm)  # type: ignore[arg-type]
        self.act = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x


class SEBlock(nn.Module):
    """Squeeze-and-excitation channel attention (paper §III-B2, used in GAM and AFF).

    ``s = sigmoid(W2 relu(W1 mean_hw(x)))``, output ``x * s``; hidden width ``channels // reduction``.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.linear1 = nn.Linear(channels, hidden)
        self.linear2 = nn.Linear(hidden, channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        embedding = x.mean(dim=(2, 3))  # one reduction: fast for channels_last, equal up to rounding
        weights = torch.sigmoid(self.linear2(self.act(self.linear1(embedding))))
        return x * weights.view(n, c, 1, 1)
