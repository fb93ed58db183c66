"""Grad-CAM on the classifier's last stage, as in the JCS paper (§III-A, eq. (1)-(2)).

For class c (1 = COVID-19) with score y^c (the logit before softmax) and the K feature maps A^k of
the last stage (``layer4``), eq. (1) weighs each map by its spatially averaged gradient,

    alpha_k^c = 1/Z * sum_ij d y^c / d A^k_ij,

and eq. (2) keeps the positive part of the weighted sum, L^c = ReLU(sum_k alpha_k^c A^k). The map is
computed for a whole batch at once (samples are independent in eval mode), upsampled from the
classifier's input (the official 224x224 centre crop, or the whole slice for weights whose card asks
for ``input.whole_slice``) back onto the slice pixels it covers, and normalised to [0, 1] per slice
(divided by its maximum; slices without positive evidence stay 0). Weights built with
``output_stride=16`` give a 16x16 map for a 256 input instead of 8x8.

The engine's heatmap is that normalised map weighted by the slice's COVID-19 probability
(:func:`weight_by_probability`): eq. (2) says *where* the evidence for class c lies on a slice, its
per-slice normalisation hides *how much* there is, so a slice the classifier calls negative would
glow as brightly as a positive one. Weighted, a slice's peak equals p(COVID-19); where on the slice
the heat lies (pointing game, share of heat on lesions) is unchanged.

``score="log-odds"`` uses the class's log-odds y^c - log sum_{j != c} exp(y^j) (for two classes
y^1 - y^0) as the score instead of the bare logit. The decision p(c) > 0.5 depends only on this
score, and it stays meaningful for a model whose class-1 logit is negative everywhere while it still
wins against class 0 (then eq. (2) on the bare logit is zero on every pixel). Model cards name the
score their classifier needs (``gradcam.score``); the paper's logit is the default.

The backbone runs with parameter gradients switched off, so autograd only records the few
operations after ``layer4`` (pooling and ``fc``): Grad-CAM costs barely more than classification.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jcs.preprocess import classifier_crop_box

COVID_CLASS = 1
GRADCAM_SCORES = ("logit", "log-odds")


@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Temporarily switch off ``requires_grad`` of every parameter of ``model``."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def grad_cam(
    classifier: nn.Module,
    x: torch.Tensor,
    *,
    target_class: int = COVID_CLASS,
    layer: nn.Module | None = None,
    score: str = "logit",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classify batch ``x`` and compute its Grad-CAM maps (eq. (1)-(2)) in the same forward pass.

    Returns ``(logits (N, classes), cam (N, h, w))`` with ``cam`` at the resolution of ``layer``
    (default ``classifier.layer4``; 7x7 for a 224 input), float32, not normalised. Must not run
    under ``torch.inference_mode`` (the head's gradient is needed); autocast contexts are honoured.
    """
    if score not in GRADCAM_SCORES:
        raise ValueError(f"Grad-CAM score must be one of {GRADCAM_SCORES}, not {score!r}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("grad_cam needs autograd; call it outside torch.inference_mode()")
    if layer is None:
        layer = classifier.get_submodule("layer4")
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        features = output.detach().requires_grad_(True)
        captured.append(features)
        return features

    handle = layer.register_forward_hook(hook)
    try:
        with _frozen_parameters(classifier), torch.enable_grad():
            logits = classifier(x.detach())
            if len(captured) != 1:
                raise RuntimeError(f"Grad-CAM layer ran {len(captured)} times in one forward pass, not once")
            features = captured[0]
            target = logits[:, target_class]
            if score == "log-odds":
                others = torch.cat([logits[:, :target_class], logits[:, target_class + 1 :]], dim=1)
                target = target - torch.logsumexp(others.float(), dim=1)
            (gradients,) = torch.autograd.grad(target.sum(), features)
    finally:
        handle.remove()
    alpha = gradients.float().mean(dim=(2, 3), keepdim=True)  # eq. (1): 1/Z sum_ij dy^c/dA^k_ij
    cam = F.relu((alpha * features.detach().float()).sum(dim=1))  # eq. (2)
    return logits.detach(), cam


def cam_to_slices(cam: torch.Tensor, height: int, width: int, whole_slice: bool = False) -> np.ndarray:
    """Map (N, h, w) Grad-CAM maps onto (N, height, width) slices, normalised to [0, 1] per slice.

    Each map is bilinearly upsampled to the slice rectangle the classifier saw
    (``jcs.preprocess.classifier_crop_box``: the official centre crop, or the whole slice for
    whole-slice weights); pixels outside it get 0.
    """
    y0, x0, y1, x1 = (int(round(v)) for v in classifier_crop_box(height, width, whole_slice))
    y0, x0 = max(y0, 0), max(x0, 0)
    y1, x1 = min(y1, height), min(x1, width)
    out = np.zeros((cam.shape[0], height, width), dtype=np.float32)
    if y1 <= y0 or x1 <= x0:
        return out
    up = F.interpolate(cam[:, None].float(), size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
    up = up[:, 0].clamp_min_(0.0)
    peak = up.amax(dim=(1, 2), keepdim=True)
    up = torch.where(peak > 0, up / peak.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(up))
    out[:, y0:y1, x0:x1] = up.cpu().numpy()
    return out


def weight_by_probability(heatmap: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per-slice normalised heatmaps (N, H, W) times each slice's COVID-19 probability (N,).

    The brightness of the overlay then reads as the classifier's confidence: a slice with
    p(COVID-19) = 0.03 keeps its pattern at 3 % of the colour scale instead of at full heat.
    """
    weights = np.clip(np.asarray(probabilities, dtype=np.float32), 0.0, 1.0)
    if weights.shape != heatmap.shape[:1]:
        count = weights.shape[0] if weights.ndim else 0
        raise ValueError(f"{count} probabilities for {heatmap.shape[0]} heatmaps")
    return heatmap * weights[:, None, None]
