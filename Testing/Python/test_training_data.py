"""Training data: list files and their errors, patient splits, augmentation parity with jcs.preprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from jcs.preprocess import classifier_input, segmenter_input
from PIL import Image

from training import augment
from training.config import ClassifierConfig, SegmenterConfig, load_config
from training.data import (
    MIN_WINDOW_LESION_PIXELS,
    ClassificationDataset,
    DataError,
    SegmentationDataset,
    SliceRecord,
    load_list_file,
    load_slice_labels,
    split_by_patient,
    zoom_window,
)


def write_list(folder: Path, n: int = 4, size: int = 64, mask_value: int = 255) -> Path:
    """n synthetic slices (noisy background, a bright disc lesion) with masks and a list file."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    lines = []
    for i in range(n):
        disc = (yy - size // 2 - i) ** 2 + (xx - size // 3) ** 2 < (size // 6) ** 2
        image = np.clip(60 + rng.normal(0, 10, (size, size)) + 120 * disc, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"img{i}.png")
        Image.fromarray((disc * mask_value).astype(np.uint8)).save(folder / f"mask{i}.png")
        lines.append(f"img{i}.png mask{i}.png")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


def test_list_file_reads_masks_0_255_as_binary(tmp_path: Path) -> None:
    records = load_list_file(write_list(tmp_path, n=3))
    assert len(records) == 3
    assert set(np.unique(records[0].mask)) == {0, 1}
    assert records[0].label == 1 and records[0].patient == "img0"


def test_list_file_errors_name_the_problem(tmp_path: Path) -> None:
    lst = write_list(tmp_path, n=2)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="lists no images"):
        load_list_file(tmp_path / "empty.txt")
    (tmp_path / "missing.txt").write_text("img0.png nomask.png\n")
    with pytest.raises(DataError, match="nomask.png does not exist"):
        load_list_file(tmp_path / "missing.txt")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "small.png")
    (tmp_path / "size.txt").write_text("img0.png small.png\n")
    with pytest.raises(DataError, match="32×32 but its image is 64×64"):
        load_list_file(tmp_path / "size.txt")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "bad.txt").write_text("bad.png mask0.png\n")
    with pytest.raises(DataError, match="unreadable"):
        load_list_file(tmp_path / "bad.txt")
    (tmp_path / "cols.txt").write_text("img0.png\n")
    with pytest.raises(DataError, match="expected 'image mask"):
        load_list_file(tmp_path / "cols.txt")
    assert lst.exists()


def test_slice_label_csv_errors(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("patient,file\nP1,a.dcm\n")
    with pytest.raises(DataError, match="lacks column"):
        load_slice_labels(tmp_path / "labels.csv", SegmenterConfig().data)
    (tmp_path / "labels2.csv").write_text("patient,file,infected_slice_label\nP1,a.dcm,1\n")
    with pytest.raises(DataError, match="missing"):
        load_slice_labels(tmp_path / "labels2.csv", SegmenterConfig().data)


def test_split_by_patient_is_disjoint_and_seeded(tmp_path: Path) -> None:
    records = load_list_file(write_list(tmp_path, n=6))
    for r in records:
        r.patient = f"p{int(r.patient[3:]) // 2}"  # two slices per patient
    train, val = split_by_patient(records, val_count=1, seed=3)
    assert {r.patient for r in train}.isdisjoint({r.patient for r in val})
    assert len(val) == 2
    assert [r.source for r in split_by_patient(records, val_count=1, seed=3)[1]] == [r.source for r in val]
    train, val = split_by_patient(records, val_patients=["p2"])
    assert {r.patient for r in val} == {"p2"}
    with pytest.raises(DataError, match="not in the data"):
        split_by_patient(records, val_patients=["nobody"])


def test_normalisation_equals_engine_preprocessing() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (1, 96, 96), dtype=np.uint8)
    ours = augment.segmenter_normalize(torch.from_numpy(image).float()[None])
    assert torch.allclose(ours, segmenter_input(image, size=96), atol=1e-5)
    ours = augment.classifier_normalize(torch.from_numpy(image[:, :224, :224]).float()[None])
    assert ours.shape == (1, 3, 96, 96)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    assert torch.allclose(ours, (torch.from_numpy(image).float()[None] / 255 - mean) / std, atol=1e-6)


def test_unaugmented_classification_sample_matches_engine_input(tmp_path: Path) -> None:
    records = load_list_file(write_list(tmp_path, n=1, size=320))
    x, label, mask, has_mask = ClassificationDataset(records, augment_mode=None)[0]
    engine = classifier_input(records[0].image[None])[0]
    assert x.shape == engine.shape == (3, 224, 224)
    assert (x - engine).abs().max() < 2.5 / 255 / 0.224  # resize rounding differs by ≤ 2 grey levels
    assert label == 1 and bool(has_mask) and 0 < mask.mean() < 1
    standardized, *_ = ClassificationDataset(records, augment_mode=None, per_image_norm=True)[0]
    engine = classifier_input(records[0].image[None], standardize=True)[0]
    assert (standardized - engine).abs().max() < 0.05
    assert standardized.mean(dim=(1, 2)).abs().max() < 1e-5


def test_unaugmented_segmentation_sample_matches_engine_input(tmp_path: Path) -> None:
    records = load_list_file(write_list(tmp_path, n=1, size=64))
    x, mask = SegmentationDataset(records, 64, None)[0]
    assert torch.allclose(x, segmenter_input(records[0].image[None], size=64)[0], atol=1e-5)
    assert torch.equal(mask[0], torch.from_numpy(records[0].mask).float())


def test_augmentation_is_seeded_and_keeps_mask_aligned(tmp_path: Path) -> None:
    records = load_list_file(write_list(tmp_path, n=2, size=64))
    dataset = SegmentationDataset(records, 64, "strong", seed=5)
    a, b = dataset[1], dataset[1]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1][0], a[0])
    paper = SegmentationDataset(records, 64, "paper", seed=2)
    x, mask = paper[0]
    grey = x[0] * 0.225 + 0.406  # lesion pixels are the bright ones, before and after the warp
    assert grey[mask[0] > 0].mean() > grey[mask[0] == 0].mean() + 0.2


def test_crop_training_windows(tmp_path: Path) -> None:
    records = load_list_file(write_list(tmp_path, n=1, size=64))
    x, mask = SegmentationDataset(records, 64, "strong", crop=32)[0]
    assert x.shape == (3, 32, 32) and mask.shape == (1, 32, 32)


def test_perturbations_keep_shapes_and_masks(tmp_path: Path) -> None:
    record = load_list_file(write_list(tmp_path, n=1, size=64))[0]
    for name, perturb in augment.PERTURBATIONS.items():
        image, mask = perturb(record.image, record.mask)
        assert image.dtype == np.uint8 and image.shape == record.image.shape, name
        assert mask.shape == record.mask.shape and 0 < mask.sum() <= record.mask.sum(), name


def test_config_yaml_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("lr: 0.01\nbetas: [0.8, 0.9]\ndata:\n  val_count: 3\n")
    config = load_config(SegmenterConfig, tmp_path / "c.yaml", ["iterations=7", "data.split_seed=4"])
    assert (config.lr, config.betas, config.iterations) == (0.01, (0.8, 0.9), 7)
    assert (config.data.val_count, config.data.split_seed) == (3, 4)
    assert ClassifierConfig().lr == 0.1 and ClassifierConfig().epochs == 100  # the paper's defaults
    assert SegmenterConfig().lr == 2.5e-5 and SegmenterConfig().iterations == 21000
    with pytest.raises(ValueError, match="unknown setting 'lrr'"):
        load_config(SegmenterConfig, None, ["lrr=1"])


def _chest_slice(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A bright body disc around a dark lung with one bright lesion blob in its left half."""
    yy, xx = np.mgrid[:size, :size]
    centre = size / 2
    image = np.where((yy - centre) ** 2 + (xx - centre) ** 2 < (0.45 * size) ** 2, 180, 0).astype(np.uint8)
    lung = (np.abs(yy - centre) < 0.25 * size) & (np.abs(xx - centre) < 0.3 * size)
    image[lung] = 30
    lesion = (yy - centre) ** 2 + (xx - 0.3 * size) ** 2 < (0.06 * size) ** 2
    image[lesion] = 120
    return image, lesion.astype(np.uint8)


def test_lesion_free_windows_avoid_lesions_and_lesion_windows_hold_one() -> None:
    image, lesion = _chest_slice()
    rng = np.random.default_rng(0)
    for lesion_free in (True, False):
        thetas = [zoom_window(image, lesion.astype(bool), rng, lesion_free=lesion_free) for _ in range(20)]
        found = [theta for theta in thetas if theta is not None]
        assert len(found) >= 15  # the lesion leaves little room here; real lesions cover 1–5 %
        for theta in found:
            _, window = augment.warp(
                torch.zeros(1, 96, 96), torch.from_numpy(lesion).float()[None], theta, (48, 48)
            )
            assert (window.sum() == 0) == lesion_free


def test_lesion_free_crops_make_negatives_labelled_by_what_they_show() -> None:
    image, lesion = _chest_slice()
    records = [SliceRecord(image, lesion, 1, "p", "chest")] * 40
    dataset = ClassificationDataset(
        records, size=96, augment_mode="robust", whole_slice=True, lesion_free_crops=0.5, seed=3
    )
    samples = [dataset[i] for i in range(len(dataset))]
    negatives = [s for s in samples if s[1] == 0]
    assert 5 <= len(negatives) <= 35  # about half are windows, half of those lesion-free
    assert all(float(s[2].sum()) == 0 and bool(s[3]) for s in negatives)
    assert all(int((s[2] > 0.5).sum()) >= MIN_WINDOW_LESION_PIXELS for s in samples if s[1] == 1)
    with pytest.raises(DataError, match="whole_slice"):
        ClassificationDataset(records, size=96, lesion_free_crops=0.3)
