"""The JCS models (Wu et al., IEEE TIP 2021): Res2Net-v1b classifier and the JCS segmenter.

``build_classifier`` / ``build_segmenter`` build the paper configuration by default; their state-dict
keys and shapes equal the official checkpoints', which ``load_checkpoint`` reads safely and
``detect_official_format`` recognises. ``width_mult`` gives smaller CPU-trainable variants with the same
key names; ``feature_input`` starts the models after their first stage (COVID-CS feature release).
"""

from __future__ import annotations

from .checkpoint import (
    OFFICIAL_FORMATS,
    build_model,
    detect_official_format,
    expected_shapes,
    load_checkpoint,
    load_state_dict_strict,
    model_from_state_dict,
)
from .jcs_net import AFF, GAM, AFFDecoder, JCSNet, JointFusion
from .layers import BatchNormMode, FrozenBatchNorm2d, SEBlock
from .res2net import Bottle2neck, Res2NetV1b
from .vgg import VGG16BN

__all__ = [
    "AFF",
    "AFFDecoder",
    "BatchNormMode",
    "Bottle2neck",
    "FrozenBatchNorm2d",
    "GAM",
    "JCSNet",
    "JointFusion",
    "OFFICIAL_FORMATS",
    "Res2NetV1b",
    "SEBlock",
    "VGG16BN",
    "build_classifier",
    "build_model",
    "build_segmenter",
    "detect_official_format",
    "expected_shapes",
    "load_checkpoint",
    "load_state_dict_strict",
    "model_from_state_dict",
]


def build_classifier(
    depth: int = 101,
    num_classes: int = 2,
    width_mult: float = 1.0,
    feature_input: bool = False,
    batchnorm: BatchNormMode = "frozen",
    output_stride: int = 32,
) -> Res2NetV1b:
    """JCS classifier: Res2Net-v1b 26w×4s (depth 50 or 101), avg-pool, ``fc`` without bias (paper §III-A).

    ``forward(x)`` gives logits ``(N, num_classes)``; class 1 = COVID-19. ``batchnorm="frozen"`` reproduces
    the official frozen batch norm; ``"batch"`` makes it trainable (for training from scratch).
    ``output_stride=16`` dilates the last stage (same weights, a finer Grad-CAM grid); 32 is the paper's.
    """
    return Res2NetV1b(
        depth,
        num_classes,
        width_mult=width_mult,
        feature_input=feature_input,
        output_stride=output_stride,
        batchnorm=batchnorm,
    )


def build_segmenter(
    joint: bool = False,
    width_mult: float = 1.0,
    feature_input: bool = False,
    batchnorm: BatchNormMode = "frozen",
) -> JCSNet:
    """JCS segmenter (paper §III-B); ``joint=True`` fuses Res2Net-101-v1b features (§III-B4).

    ``forward(x)`` gives ``(N, 5, H, W)`` sigmoid probabilities, channel 0 final; ``forward_logits`` the
    same before the sigmoid.
    """
    return JCSNet(joint=joint, width_mult=width_mult, feature_input=feature_input, batchnorm=batchnorm)
