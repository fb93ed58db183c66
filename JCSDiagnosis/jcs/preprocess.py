"""Slice preprocessing: HU lung window to 8 bit, and the input tensors of the official JCS models.

The official weights were trained on 8-bit slices (see ``shared/reference/README.md``):

- classifier (paper §III-A, Res2Net): grey slice as RGB, shorter side resized to 256 (bilinear with
  antialiasing, as PIL), centre crop 224, /255, ImageNet mean/std in R, G, B order;
- segmenter (paper §III-B, JCS): slice resized to 512×512, /255, per-channel normalisation with mean
  (0.406, 0.456, 0.485) and std (0.225, 0.224, 0.229) given in B, G, R order, then the channel order
  reversed to R, G, B.

Resizing mirrors PIL on 8-bit images: the resized slice is rounded back to 8 bit before /255.
Everything works on batches ``(N, H, W)`` at once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from jcs.errors import InputError
from jcs.io import CTVolume


class Window(NamedTuple):
    """A display window in Hounsfield units."""

    level: float
    width: float


LUNG_WINDOW = Window(level=-600.0, width=1500.0)
"""Lung window used to turn HU into the 8-bit slices the models expect: [-1350, 150] HU → [0, 255]."""

CLASSIFIER_RESIZE = 256
CLASSIFIER_CROP = 224
SEGMENTER_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEGMENTER_MEAN_BGR = (0.406, 0.456, 0.485)
SEGMENTER_STD_BGR = (0.225, 0.224, 0.229)
_CHUNK_SLICES = 16
_ROUND_EPS = 1e-3


def window_to_uint8(
    hu: np.ndarray, level: float = LUNG_WINDOW.level, width: float = LUNG_WINDOW.width
) -> np.ndarray:
    """Map HU linearly from [level - width/2, level + width/2] to [0, 255], clipped and rounded."""
    if width <= 0:
        raise InputError(f"window width must be positive, got {width}")
    low = level - width / 2.0
    scaled = (np.asarray(hu, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / width)
    return np.rint(np.clip(scaled, 0.0, 255.0, out=scaled), out=scaled).astype(np.uint8)


def axial_slices_uint8(
    ct: CTVolume, level: float = LUNG_WINDOW.level, width: float = LUNG_WINDOW.width
) -> np.ndarray:
    """(Z, H, W) uint8 axial slices: HU volumes windowed, 8-bit images passed through unchanged.

    HU volumes are windowed a few slices at a time so no float copy of the whole volume is made.
    """
    view = sitk.GetArrayViewFromImage(ct.axial_image())
    if not ct.is_hu:
        return np.array(view, dtype=np.uint8)
    out = np.empty(view.shape, dtype=np.uint8)
    for start in range(0, view.shape[0], _CHUNK_SLICES):
        out[start : start + _CHUNK_SLICES] = window_to_uint8(
            view[start : start + _CHUNK_SLICES], level, width
        )
    return out


def _as_uint8_batch(slices: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(slices)
    if tensor.dtype != torch.uint8 or tensor.dim() != 3 or min(tensor.shape[1:], default=0) < 1:
        raise InputError(
            f"expected a (N, H, W) uint8 batch of slices, got {tuple(tensor.shape)} {tensor.dtype}"
        )
    return tensor


def _resize_uint8(batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear antialiased resize of (N, H, W) uint8 to float (N, 1, h, w) holding 8-bit values.

    Like PIL's ``Image.resize(..., BILINEAR)``: horizontal pass first, each pass rounded half up to
    8 bit (``_ROUND_EPS`` absorbs float32 error where PIL's fixed-point sums are exactly ``k + 0.5``).
    """
    images = batch.unsqueeze(1).to(torch.float32)
    for size in ((images.shape[2], width), (height, width)):
        if images.shape[2:] != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
            images = images.add_(0.5 + _ROUND_EPS).floor_().clamp_(0.0, 255.0)
    return images


def _classifier_geometry(height: int, width: int) -> tuple[int, int, int, int]:
    """(resized height, resized width, crop top, crop left) of torchvision Resize(256) + CenterCrop(224)."""
    if height <= width:
        rh, rw = CLASSIFIER_RESIZE, int(CLASSIFIER_RESIZE * width / height)
    else:
        rh, rw = int(CLASSIFIER_RESIZE * height / width), CLASSIFIER_RESIZE
    top = int(round((rh - CLASSIFIER_CROP) / 2.0))
    left = int(round((rw - CLASSIFIER_CROP) / 2.0))
    return rh, rw, top, left


def classifier_input(
    slices_uint8: np.ndarray | torch.Tensor, standardize: bool = False, whole_slice: int = 0
) -> torch.Tensor:
    """(N, 3, S, S) float32 classifier input from (N, H, W) uint8 slices, ImageNet-normalised.

    Official preprocessing (``whole_slice=0``): shorter side resized to 256, centre crop S = 224.
    ``whole_slice=S`` resizes the whole slice to S×S instead, so nothing is cut off and Grad-CAM covers
    every pixel (for weights whose card asks for it). ``standardize`` then applies
    :func:`standardize_per_image` (for weights trained with it).
    """
    batch = _as_uint8_batch(slices_uint8)
    if whole_slice:
        crop = _resize_uint8(batch, whole_slice, whole_slice) / 255.0
    else:
        rh, rw, top, left = _classifier_geometry(batch.shape[1], batch.shape[2])
        resized = _resize_uint8(batch, rh, rw)
        crop = resized[:, :, top : top + CLASSIFIER_CROP, left : left + CLASSIFIER_CROP] / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (crop - mean) / std
    return (standardize_per_image(x) if standardize else x).contiguous()


def classifier_crop_box(
    height: int, width: int, whole_slice: bool = False
) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) of the slice region the classifier sees, in slice pixel edges.

    Pixel ``i`` spans ``[i, i + 1)``, so a 512×512 slice gives (32, 32, 480, 480) for the official 224
    crop and (0, 0, 512, 512) for whole-slice input; a Grad-CAM map is placed back by resizing it to
    ``(y1 - y0, x1 - x0)`` and pasting it at ``(y0, x0)``.
    """
    if height < 1 or width < 1:
        raise InputError(f"slice size must be positive, got {height}x{width}")
    if whole_slice:
        return (0.0, 0.0, float(height), float(width))
    rh, rw, top, left = _classifier_geometry(height, width)
    sy, sx = height / rh, width / rw
    return (top * sy, left * sx, (top + CLASSIFIER_CROP) * sy, (left + CLASSIFIER_CROP) * sx)


def standardize_per_image(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero mean, unit variance per image and channel of ``(…, C, H, W)``.

    Removes any affine grey-value change (another window, brightness, contrast), so a model trained
    with it does not depend on one source's look; model cards ask for it with
    ``input.per_image_standardize``.
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / (std + eps)


def segmenter_input(
    slices_uint8: np.ndarray | torch.Tensor, size: int = SEGMENTER_SIZE, standardize: bool = False
) -> torch.Tensor:
    """(N, 3, size, size) float32 segmenter input from (N, H, W) uint8 slices (official preprocessing).

    Channel 0 uses mean 0.406 / std 0.225 and channel 2 mean 0.485 / std 0.229: the B, G, R-ordered
    normalisation followed by the reversal to R, G, B of the official code. ``standardize`` then applies
    :func:`standardize_per_image` (for weights trained with it).
    """
    if size < 1:
        raise InputError(f"segmenter input size must be positive, got {size}")
    batch = _as_uint8_batch(slices_uint8)
    grey = _resize_uint8(batch, size, size) / 255.0
    mean = torch.tensor(SEGMENTER_MEAN_BGR).view(1, 3, 1, 1)
    std = torch.tensor(SEGMENTER_STD_BGR).view(1, 3, 1, 1)
    x = (grey - mean) / std
    return (standardize_per_image(x) if standardize else x).contiguous()
