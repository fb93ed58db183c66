"""Res2Net-v1b 26w×4s (Gao et al., TPAMI 2021), the JCS classifier and the joint model's second encoder.

JCS paper §III-A: the classifier is Res2Net with a deep stem, global average pooling and a 2-way fully
connected layer without bias (class 1 = COVID-19). Layout, key names and forward follow the official
JCS code so that its checkpoints load with ``strict=True`` and give the same outputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import BatchNormMode, batch_norm, check_batchnorm, check_width_mult, scaled

DEPTHS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class Bottle2neck(nn.Module):
    """Res2Net bottleneck: 1×1 conv, ``scale`` groups of hierarchical 3×3 convs, 1×1 conv, residual.

    ``stage=True`` is the first block of a stage: its groups do not accumulate, the last group is
    average-pooled with the block's stride, and the shortcut is projected (v1b: avg-pool, then 1×1 conv).
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        stage: bool = False,
        base_width: int = 26,
        scale: int = 4,
        dilation: int = 1,
        batchnorm: BatchNormMode = "frozen",
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0)))
        out_channels = planes * self.expansion
        self.width = width
        self.stage = stage
        self.conv1 = nn.Conv2d(in_channels, width * scale, 1, bias=False)
        self.bn1 = batch_norm(width * scale, batchnorm)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
            for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(batch_norm(width, batchnorm) for _ in range(scale - 1))
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if stage else None
        self.conv3 = nn.Conv2d(width * scale, out_channels, 1, bias=False)
        self.bn3 = batch_norm(out_channels, batchnorm)
        self.relu = nn.ReLU(inplace=True)
        if stage and (stride != 1 or in_channels != out_channels):
            self.downsample: nn.Sequential | None = nn.Sequential(
                nn.AvgPool2d(stride, stride=stride, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                batch_norm(out_channels, batchnorm),
            )
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        groups = torch.split(out, self.width, dim=1)
        outputs = []
        sp = groups[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            if i > 0:
                sp = groups[i] if self.stage else sp + groups[i]
            sp = self.relu(bn(conv(sp)))
            outputs.append(sp)
        outputs.append(self.pool(groups[-1]) if self.pool is not None else groups[-1])
        out = self.bn3(self.conv3(torch.cat(outputs, dim=1)))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + residual)


class Res2NetV1b(nn.Module):
    """Res2Net-v1b 26w×4s with a deep stem (``conv1.0 … conv1.6``, ``bn1``) and four stages.

    With ``num_classes`` set it is the JCS classifier (avg-pool + ``fc`` without bias); with
    ``num_classes=None`` it is a backbone whose :meth:`features` feeds the joint segmenter.
    ``feature_input=True`` starts after the stem: the input is the stem output (64 channels at half the
    image resolution, the COVID-CS ``res2net_feats`` release); the stem keys are kept so checkpoints load.
    """

    # the four stages, set in __init__ by name
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        depth: int = 101,
        num_classes: int | None = 2,
        *,
        width_mult: float = 1.0,
        feature_input: bool = False,
        output_stride: int = 32,
        batchnorm: BatchNormMode = "frozen",
    ) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"Res2Net-v1b depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        check_width_mult(width_mult)
        check_batchnorm(batchnorm)
        if output_stride not in (16, 32):
            raise ValueError(f"Res2Net-v1b output_stride must be 16 or 32, got {output_stride!r}")
        self.architecture = {
            "depth": depth,
            "num_classes": num_classes,
            "width_mult": float(width_mult),
            "feature_input": feature_input,
            "batchnorm": batchnorm,
        }
        if output_stride != 32:
            self.architecture["output_stride"] = output_stride
        self.feature_input = feature_input
        stem_mid, stem_out = scaled(32, width_mult), scaled(64, width_mult)
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem_mid, 3, stride=2, padding=1, bias=False),
            batch_norm(stem_mid, batchnorm),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_mid, stem_mid, 3, stride=1, padding=1, bias=False),
            batch_norm(stem_mid, batchnorm),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_mid, stem_out, 3, stride=1, padding=1, bias=False),
        )
        self.bn1 = batch_norm(stem_out, batchnorm)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stem_channels = stem_out
        in_channels = stem_out
        self.stage_channels: list[int] = [stem_out]
        # output_stride 16 keeps layer4 at layer3's resolution with dilated 3x3 convs (as DeepLab does):
        # the same parameters and key names, a Grad-CAM grid twice as fine (16x16 for a 256 input).
        last_stride, last_dilation = (2, 1) if output_stride == 32 else (1, 2)
        for index, (blocks, planes, stride) in enumerate(
            zip(DEPTHS[depth], (64, 128, 256, 512), (1, 2, 2, last_stride), strict=True), start=1
        ):
            planes = scaled(planes, width_mult)
            layer = nn.Sequential(
                *(
                    Bottle2neck(
                        in_channels if b == 0 else planes * Bottle2neck.expansion,
                        planes,
                        stride=stride if b == 0 else 1,
                        stage=b == 0,
                        dilation=last_dilation if index == 4 else 1,
                        batchnorm=batchnorm,
                    )
                    for b in range(blocks)
                )
            )
            setattr(self, f"layer{index}", layer)
            in_channels = planes * Bottle2neck.expansion
            self.stage_channels.append(in_channels)
        self.num_features = in_channels
        if num_classes is not None:
            self.avgpool: nn.Module | None = nn.AdaptiveAvgPool2d(1)
            self.fc: nn.Linear | None = nn.Linear(in_channels, num_classes, bias=False)
        else:
            self.avgpool = None
            self.fc = None
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and not module.weight.is_meta:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @property
    def input_channels(self) -> int:
        """Channels the model expects: 3 for images, the stem width with ``feature_input=True``."""
        return self.stem_channels if self.feature_input else 3

    def stem(self, image: torch.Tensor) -> torch.Tensor:
        """The first stage: deep stem + ``bn1`` + ReLU (what the COVID-CS ``res2net_feats`` hold)."""
        return self.relu(self.bn1(self.conv1(image)))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs ``[stem, layer1, layer2, layer3, layer4]`` (strides 2, 4, 8, 16, 32)."""
        if x.ndim != 4 or x.shape[1] != self.input_channels:
            expected = f"(N, {self.input_channels}, H, W)"
            raise ValueError(f"Res2NetV1b expects input {expected}, got {tuple(x.shape)}")
        x0 = x if self.feature_input else self.stem(x)
        x1 = self.layer1(self.maxpool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x0, x1, x2, x3, x4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, num_classes)``; index 1 is COVID-19 for the 2-class model."""
        if self.fc is None or self.avgpool is None:
            raise RuntimeError("this Res2Net is a backbone without a classification head; use features()")
        x4 = self.features(x)[-1]
        return self.fc(torch.flatten(self.avgpool(x4), 1))
