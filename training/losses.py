"""Training losses of the paper: image mixing (eq. 3), activation-map supervision (eq. 4) and the
deeply supervised BCE + Dice segmentation loss (eq. 6)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def sample_mixing_lambda(rng: np.random.Generator, alpha: float = 0.5) -> float:
    """λ ~ Beta(α, α) of eq. (3) (α = 0.5 in the paper)."""
    return float(rng.beta(alpha, alpha))


def mix(tensor: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """Eq. (3): λ·a + (1 − λ)·b with b the batch permuted by ``perm`` (images, labels or masks)."""
    return lam * tensor + (1.0 - lam) * tensor[perm]


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of 2-class logits (N, 2) against soft COVID-19 probabilities (N,) (mixed labels)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(target * log_p[:, 1] + (1.0 - target) * log_p[:, 0]).mean()


def class_activation_map(features: torch.Tensor, fc_weight: torch.Tensor, cls: int = 1) -> torch.Tensor:
    """COVID-class activation map Σ_c w_{cls,c} F_c of the last stage (N, C, h, w) → (N, h, w)."""
    return torch.einsum("nchw,c->nhw", features.float(), fc_weight[cls].float())


def log_odds_activation_map(features: torch.Tensor, fc_weight: torch.Tensor) -> torch.Tensor:
    """Σ_c (w_{1,c} − w_{0,c}) F_c: the map whose positive part is the engine's log-odds Grad-CAM."""
    return class_activation_map(features, fc_weight, 1) - class_activation_map(features, fc_weight, 0)


def normalize_map(cam: torch.Tensor, eps: float = 1e-6, rectify: bool = True) -> torch.Tensor:
    """Per-map min–max scaling to [0, 1], the normalised activation map of eq. (4).

    ``rectify`` applies a ReLU first (as the first bundled classifier was trained). A map that is
    negative everywhere then becomes 0 and gives eq. (4) no gradient at all, so a model whose COVID-19
    map is negative everywhere is never taught where to look; ``rectify=False`` scales the raw map.
    """
    if rectify:
        cam = F.relu(cam)
    low = cam.amin(dim=(-2, -1), keepdim=True)
    high = cam.amax(dim=(-2, -1), keepdim=True)
    return (cam - low) / (high - low + eps)


def attention_loss(
    cam: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor,
    eps: float = 1e-6,
    rectify: bool = True,
    balanced: bool = False,
) -> torch.Tensor:
    """Eq. (4): mean squared (L2) distance between the normalised activation map and the lesion mask.

    ``cam`` (N, h, w) raw activation maps; ``mask`` (N, 1, H, W) lesion masks (possibly mixed, eq. 3)
    brought to (h, w) by area averaging and scaled to a maximum of 1; only samples with ``valid``
    True and a non-empty mask count. Returns 0 (keeping the graph) when none does.

    ``balanced`` weighs lesion and lesion-free cells equally (half the loss each, per map) instead of
    per cell: lesions cover ~1–5 % of a slice, so the plain mean is minimised by a map that is low
    everywhere and never learns where its peak goes. It also counts valid lesion-free maps (target 0
    everywhere: the map is charged for its mean).
    """
    target = F.adaptive_avg_pool2d(mask.float(), cam.shape[-2:])[:, 0]
    peak = target.amax(dim=(-2, -1))
    use = valid.bool()
    if not balanced:
        use = use & (peak > eps)
    if not bool(use.any()):
        return cam.sum() * 0.0
    target = target[use] / peak[use, None, None].clamp_min(eps)
    error = (normalize_map(cam[use], rectify=rectify) - target) ** 2
    if not balanced:
        return error.mean(dim=(-2, -1)).mean()
    lesion_share = target.sum(dim=(-2, -1), keepdim=True)
    free_share = (1.0 - target).sum(dim=(-2, -1), keepdim=True)
    has_lesion = (lesion_share > eps).float()
    weight = has_lesion * 0.5 * target / lesion_share.clamp_min(eps) + (1.0 - 0.5 * has_lesion) * (
        1.0 - target
    ) / free_share.clamp_min(eps)
    return (weight * error).sum(dim=(-2, -1)).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − (2|P∩G| + s)/(|P| + |G| + s) per image, averaged over the batch."""
    dims = tuple(range(1, prob.dim()))
    inter = (prob * target).sum(dim=dims)
    total = prob.sum(dim=dims) + target.sum(dim=dims)
    return (1.0 - (2.0 * inter + smooth) / (total + smooth)).mean()


def deep_supervision_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """Eq. (6): Σ over side outputs of BCE + Dice, each side output upsampled to the label size.

    ``logits`` (N, K, h, w) side outputs before the sigmoid (K = 5 for JCS, 1 for the U-Net);
    ``target`` (N, 1, H, W) in {0, 1}. Returns the total and the per-output values.
    """
    logits = logits.float()
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    parts = []
    for k in range(logits.shape[1]):
        side = logits[:, k : k + 1]
        bce = F.binary_cross_entropy_with_logits(side, target)
        parts.append(bce + dice_loss(torch.sigmoid(side), target))
    total = torch.stack(parts).sum()
    return total, [float(p.detach()) for p in parts]
