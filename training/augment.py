"""Geometry and intensity augmentation, input normalisation and the robustness perturbations.

Images travel as float tensors (1, H, W) holding 8-bit grey values 0…255, are warped by one affine
transform (scale, rotation, flip, crop) together with their mask, optionally re-windowed, gamma- or
CLAHE-adjusted and noised ("strong" mode), quantised back to 8-bit values (the engine only sees 8-bit
slices) and normalised exactly like ``jcs.preprocess`` (checked by the tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from skimage import exposure

SEG_MEAN = (0.406, 0.456, 0.485)  # official segmentation normalisation after the B,G,R → R,G,B swap
SEG_STD = (0.225, 0.224, 0.229)
CLS_MEAN = (0.485, 0.456, 0.406)  # ImageNet, R,G,B
CLS_STD = (0.229, 0.224, 0.225)


AUGMENT_MODES = ("paper", "strong", "robust")
INTENSITY_MODES = ("strong", "robust")  # modes that also change the look (random_intensity)
# Classifier CLAHE share per mode: "robust" gives half of all slices the CLAHE look, so that look (all
# of COVID-19-CT-Seg is CLAHE-enhanced, and all positive) cannot predict the class.
CLASSIFIER_CLAHE_P = {"strong": 0.2, "robust": 0.5}


def _dihedral(k: int) -> torch.Tensor:
    """The k-th (0…7) right-angle orientation of the square: k % 4 quarter turns, flipped when k ≥ 4."""
    quarter = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    turn = torch.linalg.matrix_power(quarter, k % 4)
    return turn @ torch.diag(torch.tensor([-1.0, 1.0])) if k >= 4 else turn


def identity() -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def centre_crop_theta(height: int, width: int, fraction: float) -> torch.Tensor:
    """Affine theta of jcs.preprocess.classifier_input's geometry: the centre square of side
    ``fraction`` × the shorter side (resize shorter side to 256, crop 224 → fraction 0.875)."""
    short = min(height, width)
    return torch.tensor([[fraction * short / width, 0.0, 0.0], [0.0, fraction * short / height, 0.0]])


def random_affine(
    rng: np.random.Generator,
    mode: str,
    base: torch.Tensor | None = None,
    crop: bool = False,
    view: float = 1.0,
) -> torch.Tensor:
    """Random output→input affine theta composed after ``base``.

    ``paper``: horizontal flip and a random crop (zoom 1–1.15, paper §V-B "random flip + crop");
    ``strong``: also zoom 0.8–1.3, rotation ±12°, anisotropy ±6 %, shifts ±8 %, vertical flip 10 %;
    ``robust``: ``strong`` and, for half of the samples, one of the eight right-angle orientations
    (90° rotations with or without a flip: slices that arrive upside down or transposed).
    ``view`` < 1 samples a window of that fraction of the image (patch training at full resolution).
    """
    if mode not in AUGMENT_MODES:
        raise ValueError(f"augmentation mode must be one of {AUGMENT_MODES}, not {mode!r}")
    flip_x = -1.0 if rng.random() < 0.5 else 1.0
    if mode == "paper":
        zoom, angle, aniso, flip_y, shift = rng.uniform(1.0, 1.15), 0.0, 1.0, 1.0, 0.0
    else:
        zoom = math.exp(rng.uniform(math.log(0.8), math.log(1.3)))
        angle = math.radians(rng.uniform(-12.0, 12.0))
        aniso = math.exp(rng.uniform(-0.06, 0.06))
        flip_y = -1.0 if rng.random() < 0.1 else 1.0
        shift = 0.08
    sx, sy = view * flip_x * aniso / zoom, view * flip_y / (aniso * zoom)
    cos, sin = math.cos(angle), math.sin(angle)
    linear = torch.tensor([[cos * sx, -sin * sy], [sin * sx, cos * sy]])
    slack = max(0.0, 1.0 - view / zoom) if crop or mode == "paper" or view < 1.0 else 0.0
    tx, ty = (rng.uniform(-slack - shift, slack + shift) for _ in range(2))
    if mode == "robust" and rng.random() < 0.5:
        linear = linear @ _dihedral(int(rng.integers(8)))
    theta = torch.cat([linear, torch.tensor([[tx], [ty]])], dim=1)
    if base is None:
        return theta
    return torch.cat([base[:, :2] @ theta[:, :2], base[:, :2] @ theta[:, 2:] + base[:, 2:]], dim=1)


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of a (C, H, W) tensor."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def warp(
    image: torch.Tensor, mask: torch.Tensor, theta: torch.Tensor, out_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample image (bilinear, zero padding) and mask (bilinear, fractional) with one affine theta.

    Callers first :func:`resize` to about the output scale (antialiased, like the engine's resize),
    so this warp never downsamples by much.
    """
    grid = F.affine_grid(theta[None].float(), [1, 1, *out_size], align_corners=False)
    image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    mask = F.grid_sample(mask[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return image, mask


def shorter_side_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(H, W) after resizing the shorter side to ``shorter`` (aspect kept)."""
    short = min(height, width)
    return round(height * shorter / short), round(width * shorter / short)


def random_intensity(image: torch.Tensor, rng: np.random.Generator, clahe_p: float = 0.2) -> torch.Tensor:
    """Other hospitals' looks: window/contrast change, brightness, gamma, CLAHE (``clahe_p``), blur, noise."""
    x = image
    if rng.random() < 0.8:  # another display window: affine map with clipping
        low, high = rng.uniform(-60.0, 60.0), rng.uniform(170.0, 330.0)
        x = (x - low) * (255.0 / (high - low))
    if rng.random() < 0.3:
        x = x + rng.uniform(-25.0, 25.0)
    x = x.clamp(0.0, 255.0)
    if rng.random() < 0.5:
        x = 255.0 * (x / 255.0) ** math.exp(rng.uniform(-0.5, 0.5))
    if rng.random() < clahe_p:
        x = clahe(x, clip_limit=rng.uniform(0.005, 0.03))
    if rng.random() < 0.2:
        sigma = rng.uniform(0.4, 1.2)
        radius = 2
        taps = torch.exp(-(torch.arange(-radius, radius + 1.0) ** 2) / (2 * sigma**2))
        taps = taps / taps.sum()
        x = F.conv2d(F.pad(x[None], (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1))[0]
    if rng.random() < 0.3:
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        x = x + torch.randn(x.shape, generator=generator) * rng.uniform(1.0, 8.0)
    return x


def clahe(image: torch.Tensor, clip_limit: float = 0.01) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation (skimage) of a 0…255 (1, H, W) tensor."""
    array = np.clip(image[0].numpy() / 255.0, 0.0, 1.0)
    return torch.from_numpy(exposure.equalize_adapthist(array, clip_limit=clip_limit) * 255.0).float()[None]


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit grey values (kept as float)."""
    return image.clamp(0.0, 255.0).round()


def _normalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    grey = image / 255.0
    return torch.cat([(grey - m) / s for m, s in zip(mean, std, strict=True)], dim=-3)


def segmenter_normalize(image: torch.Tensor) -> torch.Tensor:
    """(…, 1, H, W) 8-bit values → (…, 3, H, W) as jcs.preprocess.segmenter_input (official, §V-B)."""
    return _normalize(image, SEG_MEAN, SEG_STD)


def classifier_normalize(image: torch.Tensor) -> torch.Tensor:
    """(…, 1, H, W) 8-bit values → (…, 3, H, W) ImageNet-normalised as jcs.preprocess.classifier_input."""
    return _normalize(image, CLS_MEAN, CLS_STD)


def _affine_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((image.astype(np.float32) - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)


def _zoom_out(array: np.ndarray, factor: float, order: int) -> np.ndarray:
    from skimage.transform import rescale

    small = rescale(
        array.astype(np.float32), factor, order=order, anti_aliasing=order > 0, preserve_range=True
    )
    out = np.zeros_like(array, dtype=np.float32)
    y0, x0 = (array.shape[0] - small.shape[0]) // 2, (array.shape[1] - small.shape[1]) // 2
    out[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return out


Perturbation = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

PERTURBATIONS: dict[str, Perturbation] = {
    # Another source's looks, applied to validation slices (uint8 image, {0,1} mask) for the robustness
    # report; fixed (no randomness) so that runs are comparable.
    "narrow_window": lambda im, m: (_affine_uint8(im, 40.0, 200.0), m),
    "wide_window_grey_floor": lambda im, m: (_affine_uint8(im, -90.0, 330.0), m),
    "clahe": lambda im, m: (
        (exposure.equalize_adapthist(im / 255.0, clip_limit=0.02) * 255).round().astype(np.uint8),
        m,
    ),
    "gamma0.6_flip": lambda im, m: (
        (255.0 * (im[:, ::-1] / 255.0) ** 0.6).round().astype(np.uint8),
        m[:, ::-1].copy(),
    ),
    "zoom0.8_dark": lambda im, m: (
        np.clip(_zoom_out(im, 0.8, 1) * 0.75, 0, 255).round().astype(np.uint8),
        (_zoom_out(m, 0.8, 0) > 0.5).astype(np.uint8),
    ),
}
