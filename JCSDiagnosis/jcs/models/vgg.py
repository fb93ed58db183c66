"""VGG16-BN encoder of the JCS segmenter (paper §III-B1), in the official checkpoint layout."""

from __future__ import annotations

import torch
from torch import nn

from .layers import BatchNormMode, ConvBNReLU, check_batchnorm, check_width_mult, scaled

# (block name, number of convs, paper width)
BLOCKS: tuple[tuple[int, int, int], ...] = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


class VGG16BN(nn.Module):
    """Five VGG16-BN blocks ``conv{b}_{i}`` (conv + frozen BN + ReLU) returning each block's last output.

    As in the official JCS code, block 5 runs on ``conv4_3`` directly (no max-pool before it), so
    ``conv5_3`` has the stride of ``conv4_3`` (8) and the outputs have strides 1, 2, 4, 8, 8.
    ``feature_input=True`` starts after block 1: the input is ``conv1_2`` (the COVID-CS ``vgg_feats``).
    """

    # the convolutions, set in __init__ by name from BLOCKS
    conv1_1: ConvBNReLU
    conv1_2: ConvBNReLU
    conv2_1: ConvBNReLU
    conv2_2: ConvBNReLU
    conv3_1: ConvBNReLU
    conv3_2: ConvBNReLU
    conv3_3: ConvBNReLU
    conv4_1: ConvBNReLU
    conv4_2: ConvBNReLU
    conv4_3: ConvBNReLU
    conv5_1: ConvBNReLU
    conv5_2: ConvBNReLU
    conv5_3: ConvBNReLU

    def __init__(
        self, *, width_mult: float = 1.0, feature_input: bool = False, batchnorm: BatchNormMode = "frozen"
    ) -> None:
        super().__init__()
        check_width_mult(width_mult)
        check_batchnorm(batchnorm)
        self.feature_input = feature_input
        self.out_channels: list[int] = []
        in_channels = 3
        for block, convs, width in BLOCKS:
            width = scaled(width, width_mult)
            for i in range(1, convs + 1):
                setattr(self, f"conv{block}_{i}", ConvBNReLU(in_channels, width, 3, norm=batchnorm))
                in_channels = width
            self.out_channels.append(width)
        self.pool = nn.MaxPool2d(2, stride=2)

    def stem(self, image: torch.Tensor) -> torch.Tensor:
        """Block 1 (``conv1_1``, ``conv1_2``): what the COVID-CS ``vgg_feats`` hold."""
        return self.conv1_2(self.conv1_1(image))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Block outputs ``[conv1_2, conv2_2, conv3_3, conv4_3, conv5_3]``."""
        conv1 = x if self.feature_input else self.stem(x)
        conv2 = self.conv2_2(self.conv2_1(self.pool(conv1)))
        conv3 = self.conv3_3(self.conv3_2(self.conv3_1(self.pool(conv2))))
        conv4 = self.conv4_3(self.conv4_2(self.conv4_1(self.pool(conv3))))
        conv5 = self.conv5_3(self.conv5_2(self.conv5_1(conv4)))
        return [conv1, conv2, conv3, conv4, conv5]
