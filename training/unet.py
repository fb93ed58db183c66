"""A plain 4-level U-Net (Ronneberger et al., MICCAI 2015): the baseline the JCS segmenter must beat.

Not part of the engine; used only for the baseline row of the evaluation (as the paper's Table VII
compares JCS against U-Net). Output: lesion logits ``(N, 1, H, W)``.
"""

from __future__ import annotations

import torch
from torch import nn


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder widths w, 2w, 4w, 8w (four levels) with a 16w bottleneck; bilinear up-sampling."""

    def __init__(self, width: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(5)]
        self.down = nn.ModuleList()
        previous = in_channels
        for w in widths:
            self.down.append(_double_conv(previous, w))
            previous = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            _double_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(4))
        )
        self.head = nn.Conv2d(width, 1, 1)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Lesion logits (N, 1, H, W); H and W must be multiples of 16."""
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"U-Net input size must be a multiple of 16, got {tuple(x.shape[-2:])}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Lesion probability (N, 1, H, W)."""
        return torch.sigmoid(self.forward_logits(x))
