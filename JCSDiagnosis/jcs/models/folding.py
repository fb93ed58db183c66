"""Inference-time folding of batch norm into the preceding convolution.

Every batch norm in the JCS models directly follows a convolution, so in eval mode ``bn(conv(x)) =
conv'(x)`` with ``W' = W * s``, ``b' = (b - mean) * s + beta`` and ``s = gamma / sqrt(var + eps)``.
Folding removes about a quarter of the CPU time of the classifier (the element-wise BN passes). The folded
model has different state-dict keys (no BN entries), so fold only after loading weights, for inference.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU
from .res2net import Bottle2neck, Res2NetV1b


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.Module) -> None:
    """Fold the eval-mode ``bn`` into ``conv`` in place (adds a bias to ``conv`` when it has none).

    Does nothing when ``bn`` was already folded (replaced by an identity).
    """
    if not isinstance(bn, nn.BatchNorm2d):
        return
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    folded_bias = (bias - bn.running_mean) * scale + bn.bias
    if conv.bias is None:
        conv.bias = nn.Parameter(folded_bias, requires_grad=conv.weight.requires_grad)
    else:
        conv.bias.copy_(folded_bias)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every batch norm of a JCS classifier or segmenter into its convolution, in place.

    Puts the model in eval mode (folding uses the stored statistics) and returns it. Outputs equal the
    unfolded model's up to float rounding; folding an already folded model changes nothing.
    """
    model.eval()
    for module in list(model.modules()):
        if isinstance(module, ConvBNReLU) and module.bn is not None:
            _fold(module.conv, module.bn)
            module.bn = None
        elif isinstance(module, Bottle2neck):
            _fold(module.conv1, module.bn1)
            module.bn1 = nn.Identity()
            for i, (conv, bn) in enumerate(zip(module.convs, module.bns, strict=True)):
                _fold(conv, bn)
                module.bns[i] = nn.Identity()
            _fold(module.conv3, module.bn3)
            module.bn3 = nn.Identity()
            if module.downsample is not None:
                _fold(module.downsample[1], module.downsample[2])
                module.downsample[2] = nn.Identity()
        elif isinstance(module, Res2NetV1b):
            _fold(module.conv1[0], module.conv1[1])
            _fold(module.conv1[3], module.conv1[4])
            _fold(module.conv1[6], module.bn1)
            module.conv1[1] = nn.Identity()
            module.conv1[4] = nn.Identity()
            module.bn1 = nn.Identity()
    return model
