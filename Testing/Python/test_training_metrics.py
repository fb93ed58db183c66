"""Evaluation: Dice, IoU, Eφ (worked example), ROC/AUC, patient table, threshold, cross-source check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dicom_writer import write_image_series
from phantoms import LesionSpec, make_chest_phantom

from training import metrics
from training.augment import SEG_MEAN, SEG_STD
from training.config import SegmenterConfig
from training.evaluate import (
    cross_source_report,
    format_cross_source,
    format_patient_table,
    predict_lesions,
    recommend_threshold,
    thick_slabs,
)


def test_dice_and_iou() -> None:
    pred = np.array([[1, 1, 0, 0]])
    truth = np.array([[1, 0, 1, 0]])
    assert metrics.dice(pred, truth) == pytest.approx(0.5)
    assert metrics.iou(pred, truth) == pytest.approx(1 / 3)
    empty = np.zeros((2, 2))
    assert metrics.dice(empty, empty) == 1.0 and metrics.iou(empty, empty) == 1.0


def test_e_measure_worked_example() -> None:
    # P = [1,1,0,0], G = [1,0,0,0]: φ_P = ±0.5, φ_G = [.75,-.25,-.25,-.25];
    # ξ = [12/13, -0.8, 0.8, 0.8]; (1+ξ)²/4 = [0.92456, 0.01, 0.81, 0.81]; sum / (4 - 1)
    pred = np.array([[1, 1], [0, 0]])
    truth = np.array([[1, 0], [0, 0]])
    expected = ((1 + 12 / 13) ** 2 / 4 + 0.01 + 0.81 + 0.81) / 3
    assert metrics.e_measure(pred, truth) == pytest.approx(expected, rel=1e-9)


def test_e_measure_special_cases() -> None:
    truth = np.zeros((2, 2))
    assert metrics.e_measure(np.array([[1, 0], [0, 0]]), truth) == pytest.approx(3 / 3)
    assert metrics.e_measure(np.ones((2, 2)), np.ones((2, 2))) == pytest.approx(4 / 3)
    perfect = np.zeros((10, 10))
    perfect[2:5, 3:7] = 1
    assert metrics.e_measure(perfect, perfect) == pytest.approx(100 / 99)


def test_auc_and_roc() -> None:
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert metrics.auc(scores, labels) == pytest.approx(0.75)
    fpr, tpr, thresholds = metrics.roc_curve(scores, labels)
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1 and np.isinf(thresholds[0])
    assert metrics.auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)  # ties count one half
    with pytest.raises(ValueError):
        metrics.auc([0.1, 0.2], [1, 1])


def test_patient_table_iv_and_threshold() -> None:
    counts = metrics.positive_slice_counts(
        {"covid": [0.9] * 40 + [0.1] * 10, "normal": [0.6] * 18 + [0.2] * 100}
    )
    assert counts == {"covid": 40, "normal": 18}
    rows = metrics.patient_table(counts, {"covid": 1, "normal": 0})
    assert [r["T"] for r in rows] == [15, 20, 25, 30]
    assert [r["specificity"] for r in rows] == [0.0, 1.0, 1.0, 1.0]
    assert all(r["sensitivity"] == 1.0 for r in rows)
    assert recommend_threshold(counts, {"covid": 1, "normal": 0}) == 29
    assert recommend_threshold({"a": 5, "b": 5}, {"a": 1, "b": 0}) is None
    assert "| 20 | 1.000 | 1.000 | 1 / 1 |" in format_patient_table(rows)


class GroundGlassBand(torch.nn.Module):
    """Stand-in segmenter: 'lesion' where the lung-window grey value is in the ground-glass band."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x[:, :1] * SEG_STD[0] + SEG_MEAN[0]  # undo jcs.preprocess.segmenter_input
        return ((grey > 0.5) & (grey < 0.7)).float().repeat(1, 5, 1, 1)


def test_cross_source_report_on_labelled_dicom_series(tmp_path: Path) -> None:
    """Slice scores = predicted lesion share of the lung; AUC against the slice labels of a CSV."""
    lesions = [LesionSpec(side="right", zone="middle", radius_mm=9.0), LesionSpec(side="left", zone="lower")]
    phantom = make_chest_phantom(shape=(20, 80, 80), spacing=(2.5, 2.0, 2.0), lesions=lesions, seed=3)
    files = write_image_series(phantom.image, tmp_path / "P1")
    labels = phantom.lesion_mask.any(axis=(1, 2)).astype(int)
    assert 0 < labels.sum() < len(labels)
    rows = ["patient,file,infected_slice_label"]
    rows += [f"P1,{f.relative_to(tmp_path).as_posix()},{y}" for f, y in zip(files, labels, strict=True)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    config = SegmenterConfig(size=80, precision="fp32")
    report = cross_source_report(GroundGlassBand(), config, tmp_path / "labels.csv", tmp_path / "out", "band")
    assert report["slice_auc"] > 0.95
    patient = report["patients"]["P1"]
    assert (patient["slices"], patient["labelled_infected"]) == (20, int(labels.sum()))
    assert abs(patient["slices_with_lesion"] - labels.sum()) <= 2
    truth_percent = 100 * (phantom.lesion_mask & (phantom.lungs > 0)).sum() / (phantom.lungs > 0).sum()
    assert patient["opacification_percent_of_lung"] == pytest.approx(truth_percent, rel=0.25)
    table = format_cross_source(report)
    assert "| P1 | 20 |" in table
    written = (tmp_path / "out" / "band_cross_source_slices.csv").read_text().splitlines()
    assert len(written) == 21 and written[0] == "patient,slice,label,lesion_lung_fraction"
    fractions = [float(line.split(",")[3]) for line in written[1:]]
    assert patient["segmenter_rule_threshold"] == 10  # 25 mm of involvement at 2.5 mm slices
    assert patient["segmenter_rule_slices"] == sum(f > 0.02 for f in fractions) > 0
    assert patient["segmenter_rule_positive"] == (patient["segmenter_rule_slices"] > 10)
    assert report["segmenter_rule_sensitivity"] == float(patient["segmenter_rule_positive"])
    assert "segmenter_rule_specificity" not in report  # no lesion-free patient
    assert "segmenter rule, patients: sensitivity" in table

    # the same series as 5 mm slabs (pairs of slices averaged): 10 slices, T = 25 mm / 5 mm
    thick = cross_source_report(
        GroundGlassBand(), config, tmp_path / "labels.csv", tmp_path / "out", "band_slab2", slab=2
    )
    slabs = thick["patients"]["P1"]
    pair_labels = labels.reshape(10, 2).max(axis=1)
    assert (slabs["slices"], slabs["labelled_infected"]) == (10, int(pair_labels.sum()))
    assert slabs["segmenter_rule_threshold"] == 5
    assert (tmp_path / "out" / "band_slab2_cross_source.json").is_file()


def test_thick_slabs_average_consecutive_slices() -> None:
    import SimpleITK as sitk
    from jcs.io import CTVolume

    hu = np.arange(5, dtype=np.int16)[:, None, None] * np.full((5, 3, 4), 100, dtype=np.int16) - 1000
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.7, 0.7, 2.0))
    image.SetOrigin((10.0, 20.0, 30.0))
    ct = CTVolume(image=image, is_hu=True, path=Path("five.nrrd"))
    slabs, labels = thick_slabs(ct, [0, 0, 1, 0, 1], 2)  # the fifth slice fills no slab: left out
    assert labels == [0, 1]
    # means of -1000 and -900, of -800 and -700
    np.testing.assert_array_equal(slabs.axial_array()[:, 0, 0], [-950, -750])
    assert slabs.axial_image().GetSpacing() == pytest.approx((0.7, 0.7, 4.0))
    assert slabs.axial_image().GetOrigin() == pytest.approx((10.0, 20.0, 31.0))  # centred on its slab
    with pytest.raises(ValueError, match="fewer than two slabs"):
        thick_slabs(ct, [0] * 5, 3)


def test_predict_lesions_averages_the_mirrored_pass_when_configured() -> None:
    class LeftToRightRamp(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linspace(0, 1, x.shape[-1]).expand(x.shape[0], 5, *x.shape[-2:])

    image = np.full((32, 32), 100, np.uint8)
    plain = predict_lesions(LeftToRightRamp(), [image], SegmenterConfig(size=32), torch.device("cpu"), "fp32")
    mirrored = predict_lesions(
        LeftToRightRamp(), [image], SegmenterConfig(size=32, test_time_flip=True), torch.device("cpu"), "fp32"
    )
    np.testing.assert_allclose(plain[0][0], np.linspace(0, 1, 32), atol=1e-6)
    np.testing.assert_allclose(mirrored[0], 0.5, atol=1e-6)
