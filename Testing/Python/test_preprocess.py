"""Tests of jcs.preprocess against hand computations of the lung window and the official model inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from jcs.errors import InputError
from jcs.io import read_ct
from jcs.preprocess import (
    LUNG_WINDOW,
    axial_slices_uint8,
    classifier_crop_box,
    classifier_input,
    segmenter_input,
    window_to_uint8,
)

MEAN_RGB = np.array([0.485, 0.456, 0.406])
STD_RGB = np.array([0.229, 0.224, 0.225])


def test_lung_window_values() -> None:
    assert LUNG_WINDOW.level == -600.0 and LUNG_WINDOW.width == 1500.0
    hu = np.array([-3024, -1350, -990, 10, 150, 2000], dtype=np.int16)
    # [-1350, 150] HU -> [0, 255]: -990 HU -> 360 * 255 / 1500 = 61.2, 10 HU -> 1360 * 0.17 = 231.2
    np.testing.assert_array_equal(window_to_uint8(hu), [0, 0, 61, 231, 255, 255])
    # Mediastinal window (40, 400): 100 HU -> (100 + 160) * 255 / 400 = 165.75
    assert window_to_uint8(np.array([100.0]), level=40, width=400)[0] == 166
    assert window_to_uint8(np.zeros((2, 3, 4), np.float32)).shape == (2, 3, 4)
    with pytest.raises(InputError, match="width must be positive"):
        window_to_uint8(hu, width=0)


def test_axial_slices_uint8_windows_axial_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1200, 300, size=(20, 36, 40)).astype(np.int16)  # jcs.validate: >= 32 px, >= 50 mm
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((2.0, 2.0, 1.0))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))  # RAS: flipped in x and y
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    ct = read_ct(tmp_path / "ct.nrrd")
    slices = axial_slices_uint8(ct, level=-500, width=1000)
    assert slices.dtype == np.uint8 and slices.shape == (20, 36, 40)
    np.testing.assert_array_equal(slices, window_to_uint8(hu[:, ::-1, ::-1], level=-500, width=1000))

    grey = rng.integers(0, 256, size=(36, 34)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "slice.png"))
    np.testing.assert_array_equal(axial_slices_uint8(read_ct(tmp_path / "slice.png")), grey[None])


def _pil_like_halving(image: np.ndarray) -> np.ndarray:
    """Hand computation of a 2x bilinear antialiased downscale: taps 1/8, 3/8, 3/8, 1/8 (edges
    renormalised), horizontal pass first, each pass rounded half up to 8 bit."""

    def halve(rows: np.ndarray) -> np.ndarray:
        n = rows.shape[-1] // 2
        out = np.empty(rows.shape[:-1] + (n,))
        for j in range(n):
            taps = [(2 * j - 1, 1), (2 * j, 3), (2 * j + 1, 3), (2 * j + 2, 1)]
            taps = [(i, w) for i, w in taps if 0 <= i < rows.shape[-1]]
            out[..., j] = sum(rows[..., i] * w for i, w in taps) / sum(w for _, w in taps)
        return np.floor(out + 0.5)

    return halve(halve(image.astype(np.float64)).T).T


def test_classifier_input_matches_hand_computation() -> None:
    yy, xx = np.mgrid[:512, :512]
    image = ((xx * 3 + yy * 7) % 256).astype(np.uint8)
    tensor = classifier_input(np.stack([image, 255 - image]))
    assert tensor.shape == (2, 3, 224, 224) and tensor.dtype == torch.float32
    for n, slice_ in enumerate((image, 255 - image)):
        resized = _pil_like_halving(slice_)[16:240, 16:240] / 255.0  # 512 -> 256, centre 224 crop at 16
        expected = (resized[None] - MEAN_RGB[:, None, None]) / STD_RGB[:, None, None]
        np.testing.assert_allclose(tensor[n].numpy(), expected, atol=1e-5)


def test_classifier_input_matches_pil_other_sizes() -> None:
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    for height, width in [(300, 420), (630, 500)]:
        slice_ = np.clip(rng.normal(128, 40, (height, width)), 0, 255).astype(np.uint8)
        if width <= height:
            new_w, new_h = 256, int(256 * height / width)
        else:
            new_w, new_h = int(256 * width / height), 256
        pil = np.asarray(image_module.fromarray(slice_).resize((new_w, new_h), image_module.BILINEAR), float)
        top, left = int(round((new_h - 224) / 2)), int(round((new_w - 224) / 2))
        expected = pil[top : top + 224, left : left + 224]
        ours = classifier_input(slice_[None])[0, 0].numpy() * STD_RGB[0] + MEAN_RGB[0]
        diff = np.abs(ours * 255 - expected)
        assert diff.max() < 1.01  # PIL's fixed-point weights: at most one grey level apart
        assert (diff > 0.5).mean() < 0.01


def test_classifier_crop_box() -> None:
    assert classifier_crop_box(512, 512) == (32.0, 32.0, 480.0, 480.0)
    # 300 x 420 -> 256 x 358, crop top 16 left 67: scale 300/256 and 420/358
    y0, x0, y1, x1 = classifier_crop_box(300, 420)
    assert (y0, y1) == pytest.approx((16 * 300 / 256, 240 * 300 / 256))
    assert (x0, x1) == pytest.approx((67 * 420 / 358, 291 * 420 / 358))
    with pytest.raises(InputError):
        classifier_crop_box(0, 10)


def test_segmenter_input_channel_order() -> None:
    values = np.array([0, 51, 128, 255], dtype=np.uint8)
    slices = np.broadcast_to(values[:, None, None], (4, 512, 512)).copy()
    tensor = segmenter_input(slices)
    assert tensor.shape == (4, 3, 512, 512) and tensor.dtype == torch.float32
    x = values / 255.0
    # B, G, R-ordered normalisation then reversal: channel 0 uses 0.406/0.225, channel 2 0.485/0.229.
    expected = np.stack([(x - 0.406) / 0.225, (x - 0.456) / 0.224, (x - 0.485) / 0.229], axis=1)
    np.testing.assert_allclose(tensor[:, :, 100, 200].numpy(), expected, atol=1e-6)


def test_segmenter_input_resizes() -> None:
    yy, xx = np.mgrid[:512, :512]
    image = ((xx + 2 * yy) % 256).astype(np.uint8)
    tensor = segmenter_input(image[None], size=256)
    assert tensor.shape == (1, 3, 256, 256)
    grey = tensor[0, 0].numpy() * 0.225 + 0.406
    np.testing.assert_allclose(grey * 255, _pil_like_halving(image), atol=1e-3)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((1, 4, 4), np.float32), np.zeros((2, 0, 4), np.uint8)]
)
def test_bad_batches_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(InputError, match="uint8 batch"):
        classifier_input(bad)
    with pytest.raises(InputError, match="uint8 batch"):
        segmenter_input(bad)


def test_real_ct_slices_window() -> None:
    """The bundled real scan windowed: air at -1024 HU maps to 55, and real slices batch."""
    from jcs.sample import sample_path

    slices = axial_slices_uint8(read_ct(sample_path()))
    assert slices.shape == (48, 368, 512) and slices.dtype == np.uint8
    assert slices[24, 0, 0] == 55  # corner: air, (-1024 + 1350) * 255 / 1500 = 55.4
    batch = classifier_input(slices[20:24])
    assert batch.shape == (4, 3, 224, 224)
    # 368 x 512 -> 256 x 356, crop rows 16..240 and columns 66..290
    expected = (16 * 368 / 256, 66 * 512 / 356, 240 * 368 / 256, 290 * 512 / 356)
    assert classifier_crop_box(368, 512) == pytest.approx(expected)
