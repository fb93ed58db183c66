"""Model construction for training: the engine's jcs.models builders (trainable batch norm) or the
baseline U-Net, plus the builder arguments that go into the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from jcs.models import build_classifier, build_segmenter
from torch import nn

from training.config import ClassifierConfig, SegmenterConfig, apply_overrides
from training.unet import UNet


def segmenter_architecture(config: SegmenterConfig) -> dict[str, Any]:
    """jcs.models.build_segmenter keyword arguments (what the engine rebuilds from the card)."""
    return {
        "joint": config.joint,
        "width_mult": config.width_mult,
        "feature_input": config.feature_input,
        "batchnorm": "batch",
    }


def classifier_architecture(config: ClassifierConfig) -> dict[str, Any]:
    """jcs.models.build_classifier keyword arguments."""
    architecture: dict[str, Any] = {
        "depth": config.depth,
        "num_classes": 2,
        "width_mult": config.width_mult,
        "feature_input": config.feature_input,
        "batchnorm": "batch",
    }
    if config.output_stride != 32:
        architecture["output_stride"] = config.output_stride
    return architecture


def build_segmentation_model(config: SegmenterConfig) -> nn.Module:
    """The network to train; it has ``forward_logits`` returning (N, K, H, W) side-output logits."""
    if config.arch == "unet":
        if config.feature_input or config.joint:
            raise ValueError("the U-Net baseline takes images only (no joint or feature-input mode)")
        return UNet(config.unet_width, in_channels=3)
    if config.arch != "jcs":
        raise ValueError(f"segmenter arch must be 'jcs' or 'unet', not {config.arch!r}")
    if config.joint and config.feature_input:
        raise ValueError(
            "joint training from the feature release needs the Res2Net stem features too; "
            "train the joint model on images"
        )
    if config.feature_input and config.width_mult != 1.0:
        raise ValueError(
            "feature-input training needs width_mult 1.0: the COVID-CS release stores the full VGG16 "
            "conv1_2 features (64 channels)"
        )
    model = build_segmenter(**segmenter_architecture(config))
    if config.joint and config.classifier_checkpoint:
        load_joint_backbone(model, config.classifier_checkpoint)
    return model


def load_joint_backbone(model: nn.Module, checkpoint: str) -> None:
    """§III-B4: start the joint model's Res2Net from a classifier trained on the classification set."""
    from training.common import load_training_checkpoint

    state = load_training_checkpoint(checkpoint)["model"]
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.res2net.load_state_dict(backbone, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"classifier {checkpoint} does not fit the joint model's Res2Net: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def source_state_dict(source: str) -> dict[str, torch.Tensor]:
    """The weights of a training checkpoint (a path) or of registry weights (a name, SHA-256 checked)."""
    from jcs.weights import load_model

    from training.common import load_training_checkpoint

    if source.endswith(".pt") or Path(source).is_file():
        return load_training_checkpoint(source)["model"]
    return load_model(source, verify=True)[0].state_dict()


def load_initial_weights(model: nn.Module, source: str) -> None:
    """Fine-tuning: copy into ``model`` (strictly) the weights of a training checkpoint (a path) or of
    registry weights (a name, e.g. the bundled model); optimiser and schedule start afresh."""
    state = source_state_dict(source)
    target = model.state_dict()
    state = {k: v.to(target[k].dtype) if k in target else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{source} does not fit the model being trained: {str(exc)[:300]}") from None


def build_classification_model(config: ClassifierConfig) -> nn.Module:
    return build_classifier(**classifier_architecture(config))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_from_dict(kind: str, values: dict[str, Any]) -> SegmenterConfig | ClassifierConfig:
    """The training configuration stored in a checkpoint or model card."""
    config = SegmenterConfig() if kind == "segmenter" else ClassifierConfig()
    apply_overrides(config, values, f"stored {kind} config")
    return config


def model_from_checkpoint(path: str | Path) -> tuple[str, nn.Module, SegmenterConfig | ClassifierConfig]:
    """(kind, trained network, its config) from a training checkpoint."""
    from training.common import load_training_checkpoint

    state = load_training_checkpoint(path)
    kind = state.get("extra", {}).get("kind", "segmenter")
    config = config_from_dict(kind, state["config"])
    net = build_segmentation_model(config) if kind == "segmenter" else build_classification_model(config)
    net.load_state_dict(state["model"])
    return kind, net, config
