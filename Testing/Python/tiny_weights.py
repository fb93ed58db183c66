"""Deterministic tiny classifier + segmenter weights in a temporary registry, for fast tests.

The models have the paper's architectures at a small width (``width_mult``); they are randomly
initialised from a fixed seed, their batch-norm statistics are set from one batch of chest-phantom
slices so activations stay in a sane range, and the output heads are centred and scaled so slice and
pixel probabilities spread away from 0.5. They mean nothing medically; they exercise the whole
pipeline in seconds.

Tests use the ``tiny_weights`` fixture (``conftest.py``): it points ``JCS_WEIGHTS_DIR`` at the
registry and returns ``{"classifier": name, "segmenter": name}``; ``tiny_weights_dir`` is the registry
folder. Other tools can call ``write_tiny_weights(directory)`` directly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from jcs.models import build_classifier, build_segmenter
from jcs.preprocess import classifier_input, segmenter_input, window_to_uint8
from jcs.weights import INPUT_SPECS, save_weights
from phantoms import make_chest_phantom
from torch import nn

TINY_CLASSIFIER_NAME = "tiny-classifier"
TINY_SEGMENTER_NAME = "tiny-segmenter"
TINY_CLASSIFIER_ARCH = {"depth": 50, "num_classes": 2, "width_mult": 0.125, "batchnorm": "batch"}
TINY_SEGMENTER_ARCH = {"joint": False, "width_mult": 0.125, "batchnorm": "batch"}
TINY_SEGMENTER_SIZE = 128
"""Input size in the tiny segmenter's card (the engine reads it); the paper's 512 is 16x slower."""


@functools.lru_cache(maxsize=4)
def _calibration_slices(seed: int) -> np.ndarray:
    """(N, H, W) uint8 lung-window slices of a small chest phantom with lesions."""
    phantom = make_chest_phantom(shape=(16, 96, 96), seed=seed)
    hu = sitk.GetArrayFromImage(phantom.image)
    return window_to_uint8(hu[2:14:2])


def _calibrate_batch_norm(model: nn.Module, images: torch.Tensor) -> None:
    """Set running BN statistics to those of one batch (momentum 1 for one pass; no training)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in norms:
        module.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(images)
    for module in norms:
        module.momentum = 0.1
    model.eval()


def _head_inputs(model: nn.Module, head: nn.Module, images: torch.Tensor) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    return captured[0]


def make_tiny_classifier(seed: int = 0) -> nn.Module:
    """Tiny Res2Net-v1b classifier, deterministic for ``seed`` (a fresh copy on every call)."""
    return calibrated_classifier(TINY_CLASSIFIER_ARCH, seed)


def make_tiny_segmenter(seed: int = 0) -> nn.Module:
    """Tiny JCS segmenter, deterministic for ``seed`` (a fresh copy on every call)."""
    return calibrated_segmenter(TINY_SEGMENTER_ARCH, TINY_SEGMENTER_SIZE, seed)


def calibrated_classifier(architecture: dict[str, Any], seed: int = 0) -> nn.Module:
    """Untrained classifier of any ``architecture`` (``batchnorm="batch"``) made well-behaved as below."""
    model = build_classifier(**architecture)
    model.load_state_dict(_classifier_state(tuple(sorted(architecture.items())), seed))
    return model.eval()


def calibrated_segmenter(architecture: dict[str, Any], size: int, seed: int = 0) -> nn.Module:
    """Untrained segmenter of any ``architecture`` (``batchnorm="batch"``), calibrated at ``size``."""
    model = build_segmenter(**architecture)
    model.load_state_dict(_segmenter_state(tuple(sorted(architecture.items())), size, seed))
    return model.eval()


@functools.lru_cache(maxsize=4)
def _classifier_state(architecture: tuple[tuple[str, Any], ...], seed: int) -> dict[str, torch.Tensor]:
    """Residual branches are damped (a random deep ReLU net is otherwise chaotic, so bf16 rounding
    changes its output as much as the input does), and the ``fc`` logit difference reads the main
    direction of variation of the pooled features, orthogonal to their mean, scaled so COVID-19
    probabilities spread over (0, 1)."""
    torch.manual_seed(seed)
    model = build_classifier(**dict(architecture))
    images = classifier_input(_calibration_slices(seed))
    _calibrate_batch_norm(model, images)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(".bn3"):
                module.weight.mul_(0.3)
                module.bias.mul_(0.3)
    features = _head_inputs(model, model.fc, images)
    with torch.no_grad():
        mean = features.mean(dim=0)
        direction = torch.linalg.svd(features - mean, full_matrices=False).Vh[0]
        direction -= (direction @ mean) / (mean @ mean) * mean
        direction *= 4.0 / (features @ direction).std().clamp_min(1e-6)
        model.fc.weight.copy_(torch.stack([-direction / 2, direction / 2]))
    return model.state_dict()


@functools.lru_cache(maxsize=4)
def _segmenter_state(
    architecture: tuple[tuple[str, Any], ...], size: int, seed: int
) -> dict[str, torch.Tensor]:
    """The final side output reads the main direction of variation of its input features (a random
    direction would be dominated by features that bf16 rounding changes), scaled, and thresholded
    at the emptiest value between its 30th and 80th percentiles, so few pixels sit near 0.5."""
    torch.manual_seed(seed + 1)
    model = build_segmenter(**dict(architecture))
    images = segmenter_input(_calibration_slices(seed), size=size)
    _calibrate_batch_norm(model, images)
    features = _head_inputs(model, model.cls1, images)
    with torch.no_grad():
        pixels = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        direction = torch.linalg.svd(pixels - pixels.mean(dim=0), full_matrices=False).Vh[0]
        logits = pixels @ direction
        scale = 4.0 / logits.std().clamp_min(1e-6)
        model.cls1.weight.copy_((direction * scale).view_as(model.cls1.weight))
        low, high = (float(v) for v in torch.quantile(logits[::7], torch.tensor([0.3, 0.8])))
        counts = torch.histc(logits, bins=50, min=low, max=high)
        valley = low + (float(torch.argmin(counts)) + 0.5) * (high - low) / 50
        model.cls1.bias.fill_(-valley * float(scale))
    return model.state_dict()


def write_tiny_weights(directory: Path | str, seed: int = 0) -> dict[str, str]:
    """Write the tiny classifier and segmenter into registry ``directory``; returns their names."""
    common = {
        "training_data": "none: random initialisation with calibrated batch norm (test fixture)",
        "metrics": {},
        "intended_use": "Software tests only. Outputs are meaningless.",
    }
    save_weights(
        make_tiny_classifier(seed),
        {
            "name": TINY_CLASSIFIER_NAME,
            "kind": "classifier",
            "architecture": TINY_CLASSIFIER_ARCH,
            "threshold": 25,
            **common,
        },
        directory,
    )
    save_weights(
        make_tiny_segmenter(seed),
        {
            "name": TINY_SEGMENTER_NAME,
            "kind": "segmenter",
            "architecture": TINY_SEGMENTER_ARCH,
            "input": {**INPUT_SPECS["segmenter"], "size": TINY_SEGMENTER_SIZE},
            **common,
        },
        directory,
    )
    return {"classifier": TINY_CLASSIFIER_NAME, "segmenter": TINY_SEGMENTER_NAME}
