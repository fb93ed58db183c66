"""Whole-slice Grad-CAM (output stride 16, no centre crop), the robust augmentation, source
oversampling and the explanation measures (pointing game, heat share, heat outside the lungs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from jcs.gradcam import cam_to_slices, grad_cam
from jcs.inference import ClassifierSpec, DiagnosisEngine
from jcs.models import build_classifier
from jcs.preprocess import classifier_crop_box, classifier_input
from PIL import Image

from training import augment
from training.config import DataConfig
from training.data import ClassificationDataset, DataError, load_records
from training.explanations import SliceExplanation, explain_slice, heat_outside_lungs, summarize


def tiny(output_stride: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier(depth=50, width_mult=0.125, batchnorm="batch", output_stride=output_stride).eval()


def test_output_stride_16_keeps_the_weights_and_doubles_the_cam_grid() -> None:
    official, dilated = tiny(32), tiny(16)
    assert {k: v.shape for k, v in official.state_dict().items()} == {
        k: v.shape for k, v in dilated.state_dict().items()
    }
    dilated.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    _, cam32 = grad_cam(official, x)
    _, cam16 = grad_cam(dilated, x)
    assert cam32.shape == (2, 8, 8) and cam16.shape == (2, 16, 16)
    assert dilated.architecture["output_stride"] == 16 and "output_stride" not in official.architecture
    with pytest.raises(ValueError, match="output_stride"):
        build_classifier(depth=50, width_mult=0.125, output_stride=8)


def test_whole_slice_input_and_heatmap_cover_the_slice() -> None:
    slices = np.random.default_rng(0).integers(0, 256, (2, 512, 512), dtype=np.uint8)
    assert classifier_input(slices).shape == (2, 3, 224, 224)  # the official crop stays the default
    assert classifier_input(slices, whole_slice=256).shape == (2, 3, 256, 256)
    assert classifier_crop_box(512, 512, whole_slice=True) == (0.0, 0.0, 512.0, 512.0)
    cam = torch.ones(1, 16, 16)
    assert cam_to_slices(cam, 512, 512)[0, :32].max() == 0  # outside the 224 crop: no heat
    assert cam_to_slices(cam, 512, 512, whole_slice=True).min() == 1.0


def test_engine_follows_the_card_for_whole_slice_input() -> None:
    card = {
        "input": {"size": 256, "whole_slice": True, "per_image_standardize": True},
        "gradcam": {"score": "log-odds"},
    }
    spec = ClassifierSpec.from_card_data(card)
    assert spec == ClassifierSpec(standardize=True, whole_slice=256, gradcam_score="log-odds")
    assert ClassifierSpec.from_card_data({}) == ClassifierSpec()
    engine = DiagnosisEngine(tiny(16), device="cpu", precision="fp32", classifier_spec=spec)
    slices = np.random.default_rng(1).integers(0, 256, (3, 96, 96), dtype=np.uint8)
    probabilities, heat = engine.classify_slices(slices)
    assert probabilities.shape == (3,) and heat.shape == (3, 96, 96)
    covered = heat.max(axis=0) > 0  # heat may reach every border of the slice, not only a centre crop
    assert covered[:4].any() or covered[-4:].any() or covered[:, :4].any() or covered[:, -4:].any()


def test_robust_augmentation_turns_image_and_mask_together() -> None:
    rng = np.random.default_rng(0)
    quarter_turns = set()
    for _ in range(40):
        theta = augment.random_affine(rng, "robust")
        linear = theta[:, :2]
        quarter_turns.add(bool(abs(linear[0, 0]) < abs(linear[0, 1])))  # axes swapped: a 90° turn
    assert quarter_turns == {True, False}
    image = torch.zeros(1, 32, 32)
    image[0, 2:10, 20:30] = 255.0
    mask = (image > 0).float()
    for k in range(8):
        theta = torch.cat([augment._dihedral(k), torch.zeros(2, 1)], dim=1)
        warped, warped_mask = augment.warp(image, mask, theta, (32, 32))
        assert torch.equal(warped > 127, warped_mask > 0.5)
        assert warped_mask.sum() == mask.sum()
    with pytest.raises(ValueError, match="augmentation mode"):
        augment.random_affine(rng, "wild")


def _write_list(folder: Path, name: str, n: int) -> Path:
    folder.mkdir()
    lines = []
    for i in range(n):
        image = np.full((32, 32), 60, np.uint8)
        image[8:16, 8:16] = 200
        Image.fromarray(image).save(folder / f"im{i}.png")
        Image.fromarray((image > 100).astype(np.uint8) * 255).save(folder / f"m{i}.png")
        lines.append(f"im{i}.png m{i}.png {name}{i}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


def test_repeats_oversample_a_source_for_training_only(tmp_path: Path) -> None:
    small, large = _write_list(tmp_path / "a", "a", 2), _write_list(tmp_path / "b", "b", 5)
    config = DataConfig(lists=[str(small), str(large)], repeats={str(small): 3})
    records = load_records(config)
    assert len(records) == 7 and sorted(r.repeats for r in records) == [1] * 5 + [3] * 2
    dataset = ClassificationDataset(records, size=32, augment_mode="robust", whole_slice=True)
    assert len(dataset) == 11
    x, label, mask, has_mask = dataset[0]
    assert x.shape == (3, 32, 32) and label == 1 and bool(has_mask) and mask.sum() > 0
    with pytest.raises(DataError, match="repeats names sources"):
        load_records(DataConfig(lists=[str(small)], repeats={"elsewhere.txt": 2}))


def test_pointing_game_and_heat_share() -> None:
    lesion = np.zeros((256, 256), bool)
    lesion[100:120, 100:120] = True
    on = np.zeros((256, 256), np.float32)
    on[110, 110] = 1.0
    on[10, 10] = 0.5  # a third of the heat elsewhere
    near = np.zeros((256, 256), np.float32)
    near[123, 110] = 1.0  # 4 pixels off the lesion: within the 5-pixel tolerance at 256²
    far = np.zeros((256, 256), np.float32)
    far[200, 200] = 1.0
    hit = explain_slice(on, lesion)
    assert hit.hit and hit.heat_on_lesion == pytest.approx(2 / 3)
    assert hit.lesion_area == pytest.approx(400 / 256**2)
    assert explain_slice(near, lesion).hit and explain_slice(near, lesion).heat_on_lesion == 0
    assert not explain_slice(far, lesion).hit
    empty = explain_slice(np.zeros_like(on), lesion)
    assert empty.empty and not empty.hit
    summary = summarize([hit, explain_slice(far, lesion), empty])
    assert summary["pointing_game"] == pytest.approx(1 / 3) and summary["slices_without_heat"] == 1
    assert summarize([SliceExplanation(True, 0.2, 0.1, False)])["heat_share_on_lesions"] == pytest.approx(0.2)


def test_heat_outside_the_lungs_of_a_lesion_free_scan() -> None:
    lungs = np.zeros((3, 8, 8), bool)
    lungs[:, 2:6, 2:6] = True
    heat = np.zeros((3, 8, 8), np.float32)
    heat[0, 3, 3] = 1.0  # in the lungs
    heat[1, 0, 0] = 1.0  # outside
    report = heat_outside_lungs(heat, lungs)  # slice 2 has no heat
    assert report == {
        "slices": 3,
        "slices_with_heat": 2,
        "slices_peak_outside_lungs": 1,
        "heat_share_outside_lungs": pytest.approx(0.5),
    }
