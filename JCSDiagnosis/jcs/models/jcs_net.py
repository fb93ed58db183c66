"""JCS segmenter (paper §III-B): VGG16-BN encoder, EFM of two GAMs, AFF decoder, 5 deep-supervised outputs.

The joint variant (§III-B4) also runs a Res2Net-101-v1b and fuses its stage features into the encoder
features before decoding. Module and key names follow the official code (``gpd``/``gpd1`` are the GAMs,
``fpn`` is the AFF decoder, ``fuse`` the joint fusion) so its checkpoints load with ``strict=True``;
upsampling is bilinear with ``align_corners=False`` everywhere, as there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BatchNormMode, ConvBNReLU, SEBlock, check_batchnorm, check_width_mult
from .res2net import Res2NetV1b
from .vgg import VGG16BN


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class GAM(nn.Module):
    """Group atrous module (paper §III-B2, Fig. 4).

    1×1 expansion to ``2C`` channels (+ReLU), split into 4 groups of ``C/2`` each convolved with its own
    atrous rate, concatenation, ReLU, SE attention (reduction 4), 1×1 reduction to ``C`` (+ReLU) and a 3×3
    transition conv (+ReLU).
    """

    def __init__(self, channels: int, rates: Sequence[int] = (1, 3, 6, 9)) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"GAM needs an even channel count, got {channels}")
        expanded = channels * 2
        group = channels // 2
        if group * len(rates) != expanded:
            raise ValueError(f"GAM splits {expanded} channels into groups of {group}: needs 4 rates")
        self.group = group
        # Registration order = the official state-dict order.
        self.expand_conv = ConvBNReLU(channels, expanded, 1)
        self.reduce_conv = ConvBNReLU(expanded, channels, 1)
        self.end_conv = ConvBNReLU(channels, channels, 3)
        self.se_block = SEBlock(expanded, reduction=4)
        self.dilation_convs = nn.ModuleList(nn.Conv2d(group, group, 3, padding=r, dilation=r) for r in rates)
        self.act1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(self.expand_conv(x), self.group, dim=1)
        y = torch.cat([conv(g) for conv, g in zip(self.dilation_convs, groups, strict=True)], dim=1)
        y = self.se_block(self.act1(y))
        return self.end_conv(self.reduce_conv(y))


class AFF(nn.Module):
    """Attentive feature fusion of one decoder level (paper §III-B3, Fig. 5).

    ``low`` (lateral, ``C/2`` channels) and ``high`` (upsampled top-down, ``C/2``) are concatenated,
    re-weighted by SE, convolved (3×3); ``high`` is concatenated again, SE, 1×1 reduction, 3×3 conv.
    The SE blocks here have a single hidden unit (reduction = channels), as in the official code.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        wide = channels * 3 // 2
        self.se1 = SEBlock(channels, reduction=channels)
        self.conv1 = ConvBNReLU(channels, channels, 3)
        self.se2 = SEBlock(wide, reduction=wide)
        self.reduce_conv = ConvBNReLU(wide, channels, 1)
        self.conv2 = ConvBNReLU(channels, channels, 3)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.se1(torch.cat([low, high], dim=1)))
        x = self.se2(torch.cat([x, high], dim=1))
        return self.conv2(self.reduce_conv(x))


class AFFDecoder(nn.Module):
    """Top-down decoder over the 6 encoder levels with :class:`AFF` fusion (paper §III-B3).

    The coarsest level passes a 1×1 and a 3×3 conv; every finer level fuses its 1×1 lateral projection
    with the 1×1-projected, bilinearly upsampled result of the level above. Returns all 6 level results,
    finest first.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int]) -> None:
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError("AFFDecoder needs as many output widths as input widths")
        levels = len(in_channels)
        self.inners_a = nn.ModuleList(
            ConvBNReLU(in_channels[i], out_channels[i] // 2, 1) for i in range(levels - 1)
        )
        self.inners_a.append(ConvBNReLU(in_channels[-1], out_channels[-1], 1))
        self.inners_b = nn.ModuleList(
            ConvBNReLU(out_channels[i + 1], out_channels[i] // 2, 1) for i in range(levels - 1)
        )
        self.fuse = nn.ModuleList(AFF(out_channels[i]) for i in range(levels - 1))
        self.fuse.append(ConvBNReLU(out_channels[-1], out_channels[-1], 3))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        result = self.fuse[-1](self.inners_a[-1](features[-1]))
        results = [result]
        for idx in range(len(features) - 2, -1, -1):
            top_down = _resize(self.inners_b[idx](result), features[idx].shape[2:])
            result = self.fuse[idx](self.inners_a[idx](features[idx]), top_down)
            results.insert(0, result)
        return results


class JointFusion(nn.Module):
    """Fusion of VGG and Res2Net stage features in the joint model (paper §III-B4).

    Per level: the VGG feature is bilinearly resized to the Res2Net feature's size, concatenated with it,
    and passed through three 3×3 conv + batch norm + ReLU units.
    """

    def __init__(
        self, vgg_channels: Sequence[int], res2net_channels: Sequence[int], out_channels: Sequence[int]
    ):
        super().__init__()
        self.cat_modules = nn.ModuleList()
        self.se_modules = nn.ModuleList()
        self.fuse_modules = nn.ModuleList()
        for c1, c2, out in zip(vgg_channels, res2net_channels, out_channels, strict=True):
            self.cat_modules.append(ConvBNReLU(c1 + c2, out, 3, norm="standard"))
            self.se_modules.append(ConvBNReLU(out, out, 3, norm="standard"))
            self.fuse_modules.append(ConvBNReLU(out, out, 3, norm="standard"))

    def forward(self, vgg: Sequence[torch.Tensor], res2net: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        fused = []
        for cat, se, fuse, a, b in zip(
            self.cat_modules, self.se_modules, self.fuse_modules, vgg, res2net, strict=True
        ):
            fused.append(fuse(se(cat(torch.cat([_resize(a, b.shape[2:]), b], dim=1)))))
        return fused


class JCSNet(nn.Module):
    """The JCS segmentation network; ``joint=True`` adds the Res2Net-101-v1b branch and :class:`JointFusion`.

    Input: the official segmentation preprocessing, ``(N, 3, H, W)`` (512×512 in the paper), or with
    ``feature_input=True`` the VGG ``conv1_2`` features ``(N, 64, H, W)`` (and for the joint model the
    Res2Net stem features ``(N, 64, H/2, W/2)`` as ``res2net_input``). Output of :meth:`forward`:
    ``(N, 5, H, W)`` sigmoid probabilities of the 5 side outputs (deep supervision), channel 0 the final
    prediction.
    """

    def __init__(
        self,
        *,
        joint: bool = False,
        width_mult: float = 1.0,
        feature_input: bool = False,
        batchnorm: BatchNormMode = "frozen",
    ) -> None:
        super().__init__()
        check_width_mult(width_mult)
        check_batchnorm(batchnorm)
        self.architecture = {
            "joint": joint,
            "width_mult": float(width_mult),
            "feature_input": feature_input,
            "batchnorm": batchnorm,
        }
        self.joint = joint
        self.feature_input = feature_input
        self.vgg16 = VGG16BN(width_mult=width_mult, feature_input=feature_input, batchnorm=batchnorm)
        enc = [*self.vgg16.out_channels, self.vgg16.out_channels[-1]]
        dec = list(enc)
        if joint:
            self.res2net: Res2NetV1b | None = Res2NetV1b(
                101, None, width_mult=width_mult, feature_input=feature_input, batchnorm=batchnorm
            )
            self.fuse: JointFusion | None = JointFusion(enc[:-1], self.res2net.stage_channels, enc[:-1])
        else:
            self.res2net = None
            self.fuse = None
        self.gpd = GAM(enc[-1], rates=(1, 3, 6, 9))
        self.gpd1 = GAM(enc[-1], rates=(1, 2, 3, 4))
        self.pool = nn.MaxPool2d(2, stride=2)
        self.fpn = AFFDecoder(enc, dec)
        for i in range(5):
            setattr(self, f"cls{i + 1}", nn.Conv2d(dec[i], 1, 1))

    @property
    def input_channels(self) -> int:
        """Channels :meth:`forward` expects: 3 for images, the ``conv1_2`` width for features."""
        return self.vgg16.out_channels[0] if self.feature_input else 3

    def efm(self, conv5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Enhanced feature module (paper §III-B2): GAM(1,3,6,9) → max-pool → GAM(1,2,3,4).

        Returns the enhanced 5th-level feature and the new 6th level.
        """
        conv5 = self.gpd(conv5)
        return conv5, self.gpd1(self.pool(conv5))

    def forward_logits(self, x: torch.Tensor, res2net_input: torch.Tensor | None = None) -> torch.Tensor:
        """The 5 side outputs before the sigmoid, ``(N, 5, H, W)``, for training losses.

        ``res2net_input`` (joint model only): the Res2Net's input; by default ``x`` itself (the same
        preprocessed image, as in the official code). Required with ``feature_input=True``: the stem
        features ``(N, 64, H/2, W/2)``.
        """
        if x.ndim != 4 or x.shape[1] != self.input_channels:
            raise ValueError(f"JCSNet expects input (N, {self.input_channels}, H, W), got {tuple(x.shape)}")
        conv1, conv2, conv3, conv4, conv5 = self.vgg16(x)
        conv5, conv6 = self.efm(conv5)
        encoder = [conv1, conv2, conv3, conv4, conv5]
        if self.res2net is not None and self.fuse is not None:
            if res2net_input is None:
                if self.feature_input:
                    raise ValueError(
                        "the joint model in feature-input mode needs res2net_input (stem features)"
                    )
                res2net_input = x
            encoder = self.fuse(encoder, self.res2net.features(res2net_input))
        elif res2net_input is not None:
            raise ValueError("res2net_input is only used by the joint model")
        levels = self.fpn([*encoder, conv6])
        size = x.shape[2:]
        side = [_resize(getattr(self, f"cls{i + 1}")(levels[i]), size) for i in range(5)]
        return torch.cat(side, dim=1)

    def forward(self, x: torch.Tensor, res2net_input: torch.Tensor | None = None) -> torch.Tensor:
        """Sigmoid probabilities ``(N, 5, H, W)`` of the side outputs; channel 0 is the prediction."""
        return torch.sigmoid(self.forward_logits(x, res2net_input))
