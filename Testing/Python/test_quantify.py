"""jcs.quantify: every table cell against phantoms with known lesions, lungs, zones and geometry."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from jcs.errors import CorruptFileError, InputError
from jcs.io import CTVolume
from jcs.lung import LEFT_LUNG, RIGHT_LUNG, lung_zones
from jcs.quantify import (
    LESION_FIELDS,
    SLICE_FIELDS,
    lobe_score,
    quantify,
    run_quantify,
    write_tables,
    zone_score,
)
from phantoms import LesionSpec, make_chest_phantom, zone_of_slice

PERMUTED = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
ZONE_ORDER = ("upper", "middle", "lower")

# three lesions with analytic answers: right upper ground glass (central), right lower consolidation
# (peripheral: centre 4 mm inside the lateral surface, radius 3 mm), left middle ground glass (central)
LESIONS = [
    LesionSpec(side="right", zone="upper", radius_mm=5.0, kind="ggo"),
    LesionSpec(side="right", zone="lower", radius_mm=3.0, kind="consolidation", position="peripheral",
               depth_mm=4.0),
    LesionSpec(side="left", zone="middle", radius_mm=(7.5, 6.0, 4.5), kind="ggo"),
]


@pytest.fixture(scope="module")
def case():
    p = make_chest_phantom(lesions=LESIONS, seed=3)
    rng = np.random.default_rng(0)
    heatmap = (rng.random(p.lungs.shape) * 0.5).astype(np.float32)
    heatmap[tuple(int(round(c)) for c in p.lesions[2].center_voxel)] = 0.97
    probs = np.linspace(0.0, 1.0, p.lungs.shape[0])
    q = quantify(p.lesion_mask, p.lungs, p.axial_image, hu=p.hu, slice_probabilities=probs, heatmap=heatmap)
    return p, q, heatmap, probs


def truth_zone_counts(p, mask: np.ndarray) -> dict[str, int]:
    """Voxels of `mask` per zone, with zones computed from the phantom's own lung extents."""
    counts = {}
    for side, label in (("right", RIGHT_LUNG), ("left", LEFT_LUNG)):
        first, last = p.lung_extent[side]
        for zone in ZONE_ORDER:
            zs = [z for z in range(first, last + 1) if zone_of_slice(z, first, last) == zone]
            counts[f"{side}_{zone}"] = int(np.count_nonzero(mask[zs] & (p.lungs[zs] == label)))
    return counts


def test_truth_design(case) -> None:
    p, _, _, _ = case
    expected = [("right", "upper"), ("right", "lower"), ("left", "middle")]
    assert [(t.side, t.zone) for t in p.lesions] == expected
    for t in p.lesions:
        assert t.inside_image
        assert t.voxel_volume_ml == pytest.approx(t.analytic_volume_ml, rel=0.2)


def test_summary_lung_and_opacification_cells(case) -> None:
    p, q, _, _ = case
    s = q.summary
    v = p.voxel_ml
    right, left = np.count_nonzero(p.lungs == RIGHT_LUNG), np.count_nonzero(p.lungs == LEFT_LUNG)
    les = [t.voxel_volume_ml for t in p.lesions]
    assert s["slice_count"] == p.lungs.shape[0]
    assert s["voxel_volume_ml"] == pytest.approx(v)
    assert s["lung_volume_ml"] == pytest.approx((right + left) * v)
    assert s["lung_volume_ml_right"] == pytest.approx(right * v)
    assert s["lung_volume_ml_left"] == pytest.approx(left * v)
    assert s["opacification_volume_ml"] == pytest.approx(sum(les))
    assert s["opacification_volume_ml_right"] == pytest.approx(les[0] + les[1])
    assert s["opacification_volume_ml_left"] == pytest.approx(les[2])
    assert s["opacification_volume_ml_outside_lungs"] == 0.0
    assert s["opacification_percent"] == pytest.approx(100 * sum(les) / ((right + left) * v))
    assert s["opacification_percent_right"] == pytest.approx(100 * (les[0] + les[1]) / (right * v))
    assert s["opacification_percent_left"] == pytest.approx(100 * les[2] / (left * v))
    assert s["infection_ratio_fraction"] == pytest.approx(sum(les) / ((right + left) * v))
    assert s["bilateral"] is True
    assert s["lesion_count"] == 3
    assert s["lesion_connectivity"] == 26
    assert s["coordinate_system"] == "LPS"


def test_summary_zone_cells_and_6zone_score(case) -> None:
    p, q, _, _ = case
    s = q.summary
    lung_counts = truth_zone_counts(p, np.ones_like(p.lesion_mask, dtype=bool))
    les_counts = truth_zone_counts(p, p.lesion_mask > 0)
    expected_nonzero = {"right_upper": 1, "right_lower": 2, "left_middle": 3}
    for key in lung_counts:
        assert s[f"lung_volume_ml_{key}"] == pytest.approx(lung_counts[key] * p.voxel_ml), key
        assert s[f"opacification_volume_ml_{key}"] == pytest.approx(les_counts[key] * p.voxel_ml), key
        pct = 100 * les_counts[key] / lung_counts[key]
        assert s[f"opacification_percent_{key}"] == pytest.approx(pct), key
        if key in expected_nonzero:
            lesion = p.lesions[expected_nonzero[key] - 1]
            assert les_counts[key] * p.voxel_ml == pytest.approx(lesion.voxel_volume_ml)
            assert 0 < pct < 25 and s[f"severity_score_{key}"] == 1, key
        else:
            assert pct == 0 and s[f"severity_score_{key}"] == 0, key
    assert s["severity_score_6zone"] == 3
    # no lobe labelmap: lobe fields unavailable, not zero
    assert s["severity_score_5lobe"] is None
    assert s["opacification_percent_right_middle_lobe"] is None


def test_summary_peripheral_and_hu_cells(case) -> None:
    p, q, _, _ = case
    s = q.summary
    counts = [np.count_nonzero(p.lesion_labels == t.label) for t in p.lesions]
    assert s["peripheral_distance_mm"] == 10.0
    # only the consolidation (max depth 4 + 3 mm) lies within 10 mm of the surface
    assert s["peripheral_lesion_fraction"] == pytest.approx(counts[1] / sum(counts))
    assert s["ground_glass_fraction"] == pytest.approx((counts[0] + counts[2]) / sum(counts))
    assert s["consolidation_fraction"] == pytest.approx(counts[1] / sum(counts))
    hu = p.hu[p.lesion_mask > 0]
    assert s["lesion_mean_hu"] == pytest.approx(hu.mean(), abs=1e-3)
    assert s["lesion_median_hu"] == pytest.approx(np.median(hu))
    expected_mean = sum(c * t.hu for c, t in zip(counts, p.lesions, strict=True)) / sum(counts)
    assert s["lesion_mean_hu"] == pytest.approx(expected_mean, abs=3.0)   # noise sigma 10 HU
    assert s["ground_glass_range_hu"] == "[-750, -300)"
    assert s["consolidation_range_hu"] == "[-300, 100]"


def test_lesion_rows(case) -> None:
    p, q, heatmap, _ = case
    assert len(q.lesions) == 3
    sz, sy, sx = p.spacing_zyx
    ref = p.axial_image
    rows = sorted(q.lesions, key=lambda r: r["first_slice"])
    truths = sorted(p.lesions, key=lambda t: t.center_voxel[0])
    by_truth = {t.label: r for t, r in zip(truths, rows, strict=True)}
    expectations = {1: ("right", "right upper", "central", 1.0, 0.0),
                    2: ("right", "right lower", "peripheral", 0.0, 1.0),
                    3: ("left", "left middle", "central", 1.0, 0.0)}
    for t in p.lesions:
        row = by_truth[t.label]
        assert list(row) == list(LESION_FIELDS)
        mask = p.lesion_labels == t.label
        side, zone, location, ggo, cons = expectations[t.label]
        assert row["volume_ml"] == pytest.approx(t.voxel_volume_ml)
        assert row["volume_ml"] == pytest.approx(t.analytic_volume_ml, rel=0.2)
        assert row["voxel_count"] == np.count_nonzero(mask)
        rz, ry, rx = t.radii_mm
        areas = mask.sum(axis=(1, 2))
        assert row["largest_axial_area_px"] == areas.max()
        assert row["largest_axial_area_mm2"] == pytest.approx(areas.max() * sx * sy)
        assert row["largest_axial_area_mm2"] == pytest.approx(math.pi * ry * rx, rel=0.25)
        assert abs(row["bbox_size_x_mm"] - 2 * rx) <= 2 * sx
        assert abs(row["bbox_size_y_mm"] - 2 * ry) <= 2 * sy
        assert abs(row["bbox_size_z_mm"] - 2 * rz) <= 2 * sz
        cz, cy, cx = t.center_voxel
        expected = ref.TransformContinuousIndexToPhysicalPoint((cx, cy, cz))
        got = (row["centroid_lps_x_mm"], row["centroid_lps_y_mm"], row["centroid_lps_z_mm"])
        for g, e, s in zip(got, expected, (sx, sy, sz), strict=True):
            assert abs(g - e) <= 0.5 * s
        assert row["lung_side"] == side and row["zone"] == zone and row["lobe"] is None
        assert row["location"] == location
        assert row["peripheral_fraction"] == pytest.approx(1.0 if location == "peripheral" else 0.0)
        assert row["mean_hu"] == pytest.approx(t.hu, abs=4.0)
        assert row["median_hu"] == pytest.approx(t.hu, abs=4.0)
        assert row["ground_glass_fraction"] == ggo and row["consolidation_fraction"] == cons
        zs = np.flatnonzero(areas)
        assert (row["first_slice"], row["last_slice"]) == (zs[0], zs[-1])
        assert row["peak_gradcam"] == pytest.approx(float(heatmap[mask].max()))
    assert by_truth[3]["peak_gradcam"] == pytest.approx(0.97)
    assert by_truth[1]["peak_gradcam"] < 0.5


def test_slice_rows(case) -> None:
    p, q, _, probs = case
    sz, sy, sx = p.spacing_zyx
    oz = p.axial_image.GetOrigin()[2]
    assert len(q.slices) == p.lungs.shape[0]
    for z, row in enumerate(q.slices):
        assert tuple(row) == SLICE_FIELDS
        assert row["slice_index"] == z
        assert row["position_z_mm"] == pytest.approx(oz + z * sz)
        assert row["classifier_probability"] == pytest.approx(probs[z])
        les = np.count_nonzero(p.lesion_mask[z])
        lung = np.count_nonzero(p.lungs[z])
        assert row["opacification_area_px"] == les and row["lung_area_px"] == lung
        assert row["opacification_area_mm2"] == pytest.approx(les * sx * sy)
        assert row["lung_area_mm2"] == pytest.approx(lung * sx * sy)
        inside = np.count_nonzero(p.lesion_mask[z] & (p.lungs[z] > 0))
        assert row["opacified_lung_fraction"] == pytest.approx(inside / lung if lung else 0.0)


def test_severity_score_bounds() -> None:
    assert [zone_score(v) for v in (0, 0.01, 24.9, 25, 25.1, 50, 50.1, 75, 75.1, 100)] == \
        [0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    assert [lobe_score(v) for v in (0, 4.9, 5, 25, 26, 50, 51, 75, 76, 100)] == [0, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert zone_score(None) is None and lobe_score(None) is None


def test_five_lobe_score_with_lobe_labelmap() -> None:
    p = make_chest_phantom(lesions=[])
    zones = lung_zones(p.lungs)
    lobes = np.zeros_like(p.lungs)
    for zone, lobe in {1: 1, 2: 2, 3: 3, 4: 4, 5: 4, 6: 5}.items():
        lobes[zones == zone] = lobe
    lesion = np.zeros_like(p.lungs)
    # fill exact fractions of lobes by whole slices: right lower lobe (3) all, left lower (5) none,
    # right middle (2): one of its slices; left upper (4): nothing; right upper (1): 30 % of one slice
    lesion[lobes == 3] = 1
    z_mid = np.flatnonzero((lobes == 2).any(axis=(1, 2)))[0]
    lesion[z_mid][lobes[z_mid] == 2] = 1
    q = quantify(lesion, p.lungs, p.axial_image, lobes=lobes)
    s = q.summary
    for lobe, key in ((1, "right_upper_lobe"), (2, "right_middle_lobe"), (3, "right_lower_lobe"),
                      (4, "left_upper_lobe"), (5, "left_lower_lobe")):
        n = np.count_nonzero(lobes == lobe)
        pct = 100 * np.count_nonzero(lesion[lobes == lobe]) / n
        assert s[f"lung_volume_ml_{key}"] == pytest.approx(n * p.voxel_ml)
        assert s[f"opacification_percent_{key}"] == pytest.approx(pct)
        assert s[f"opacification_volume_ml_{key}"] == pytest.approx(
            np.count_nonzero(lesion[lobes == lobe]) * p.voxel_ml)
        assert s[f"severity_score_{key}"] == lobe_score(pct)
    assert s["severity_score_right_lower_lobe"] == 5 and s["severity_score_left_upper_lobe"] == 0
    assert 0 < s["opacification_percent_right_middle_lobe"] < 25
    assert s["severity_score_5lobe"] == sum(s[f"severity_score_{k}"] for k in (
        "right_upper_lobe", "right_middle_lobe", "right_lower_lobe", "left_upper_lobe", "left_lower_lobe"))
    assert q.lesions[0]["lobe"] == "right lower"
    assert s["bilateral"] is False


def _reference(shape: tuple[int, int, int], spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    ref = sitk.Image(shape[2], shape[1], shape[0], sitk.sitkInt16)
    ref.SetSpacing(spacing)
    return ref


def test_touching_and_split_lesions() -> None:
    shape = (6, 20, 20)
    lungs = np.zeros(shape, dtype=np.uint8)
    lungs[:, :, :10], lungs[:, :, 10:] = RIGHT_LUNG, LEFT_LUNG
    lesion = np.zeros(shape, dtype=np.uint8)
    lesion[1:3, 2:5, 2:5] = 1          # 18 voxels
    lesion[3, 5, 5] = 1                # touches the block only diagonally (26-connectivity joins it)
    lesion[1:3, 2:5, 7:9] = 1          # 12 voxels, one empty column apart from the first: separate
    lesion[4, 10:12, 9:11] = 1         # straddles both lungs: 2 right + 2 left voxels
    q = quantify(lesion, lungs, _reference(shape))
    rows = sorted(q.lesions, key=lambda r: (r["first_slice"], r["centroid_lps_x_mm"]))
    assert q.summary["lesion_count"] == 3
    assert [r["voxel_count"] for r in rows] == [19, 12, 4]
    assert rows[0]["last_slice"] == 3
    assert q.summary["opacification_volume_ml_right"] == pytest.approx((19 + 12 + 2) / 1000)
    assert q.summary["opacification_volume_ml_left"] == pytest.approx(2 / 1000)
    assert q.summary["bilateral"] is True
    q_min = quantify(lesion, lungs, _reference(shape), min_lesion_voxels=5)
    assert [r["voxel_count"] for r in q_min.lesions] == [19, 12]
    assert q_min.summary["lesion_count"] == 2
    assert q_min.summary["opacification_volume_ml"] == pytest.approx(35 / 1000)  # volumes keep all voxels


def test_lesion_at_image_border() -> None:
    spec = LesionSpec(side="right", radius_mm=6.0, kind="ggo", center=(0.0, 43.0, 30.0))
    p = make_chest_phantom(lesions=[spec], lung_z_range=(-0.2, 0.8))
    t = p.lesions[0]
    assert not t.inside_image and t.voxel_volume_ml < 0.7 * t.analytic_volume_ml
    q = quantify(p.lesion_mask, p.lungs, p.axial_image, hu=p.hu)
    (row,) = q.lesions
    assert row["first_slice"] == 0
    assert row["volume_ml"] == pytest.approx(t.voxel_volume_ml)
    assert row["lung_side"] == "right" and row["zone"] == "right lower"


def test_empty_mask_marks_undefined_fields(tmp_path: Path) -> None:
    p = make_chest_phantom(lesions=[])
    q = quantify(p.lesion_mask, p.lungs, p.axial_image, hu=p.hu)
    s = q.summary
    assert q.lesions == [] and s["lesion_count"] == 0
    assert s["opacification_volume_ml"] == 0.0 and s["opacification_percent_left"] == 0.0
    assert s["severity_score_6zone"] == 0 and s["bilateral"] is False
    for key in ("lesion_mean_hu", "lesion_median_hu", "ground_glass_fraction", "peripheral_lesion_fraction"):
        assert s[key] is None, key
    data = write_tables(q, tmp_path)
    assert data["lesions"] == []
    with open(tmp_path / "lesions.csv", newline="") as f:
        assert list(csv.reader(f)) == [list(LESION_FIELDS)]


def test_8bit_slice_without_spacing_or_hu() -> None:
    lungs = np.zeros((64, 64), dtype=np.uint8)
    lungs[10:50, 5:30], lungs[10:50, 34:60] = RIGHT_LUNG, LEFT_LUNG   # 1000 + 1040 px
    lesion = np.zeros_like(lungs)
    lesion[20:30, 10:20] = 1                                          # 100 px, right
    ref = sitk.Image(64, 64, sitk.sitkUInt8)
    q = quantify(lesion, lungs, ref, spacing_known=False)
    s, (row,), (sl,) = q.summary, q.lesions, q.slices
    for key in ("lung_volume_ml", "opacification_volume_ml_right", "lesion_mean_hu", "ground_glass_fraction",
                "severity_score_6zone", "opacification_percent_right_upper", "peripheral_lesion_fraction",
                "voxel_volume_ml"):
        assert s[key] is None, key
    assert s["opacification_percent_right"] == pytest.approx(10.0)
    assert s["opacification_percent_left"] == 0.0
    assert s["opacification_voxel_count"] == 100 and s["lung_voxel_count"] == 2040
    for key in ("volume_ml", "largest_axial_area_mm2", "bbox_size_x_mm", "centroid_lps_x_mm", "mean_hu",
                "zone"):
        assert row[key] is None, key
    assert row["largest_axial_area_px"] == 100 and row["lung_side"] == "right"
    assert sl["opacification_area_px"] == 100 and sl["lung_area_px"] == 2040
    assert sl["opacified_lung_fraction"] == pytest.approx(100 / 2040)
    assert sl["opacification_area_mm2"] is None and sl["position_z_mm"] is None


def test_bad_inputs() -> None:
    ref = _reference((2, 8, 8))
    ok = np.zeros((2, 8, 8), dtype=np.uint8)
    with pytest.raises(InputError, match="same"):
        quantify(ok, np.zeros((2, 8, 9), dtype=np.uint8), ref)
    with pytest.raises(InputError, match="reference grid"):
        quantify(np.zeros((3, 8, 8)), np.zeros((3, 8, 8), dtype=np.uint8), ref)
    with pytest.raises(InputError, match="1 right, 2 left"):
        quantify(ok, ok + 3, ref)
    with pytest.raises(InputError, match="slice probabilities"):
        quantify(ok, ok, ref, slice_probabilities=np.zeros(3))
    with pytest.raises(InputError, match="hu"):
        quantify(ok, ok, ref, hu=np.zeros((2, 4, 4)))


def test_run_quantify_non_identity_geometry(tmp_path: Path) -> None:
    """`jcs quantify` on files: permuted/flipped anisotropic CT, mask edited in the CT's own geometry."""
    lesions = [LesionSpec(side="left", zone="upper", radius_mm=6.0, kind="consolidation"),
               LesionSpec(side="right", zone="middle", radius_mm=6.0, kind="ggo")]
    p = make_chest_phantom(shape=(30, 112, 96), spacing=(4.0, 1.2, 1.6), lesions=lesions, direction=PERMUTED,
                           origin=(-40.0, 12.0, 300.0), seed=1)
    ct_path, mask_path = tmp_path / "ct.nrrd", tmp_path / "mask.nii.gz"
    sitk.WriteImage(p.image, str(ct_path))
    ct = CTVolume(image=p.image, is_hu=True, path=ct_path)
    sitk.WriteImage(ct.from_axial(p.lesion_mask), str(mask_path))
    out = tmp_path / "out"
    result = run_quantify(ct_path, mask_path, out)
    s = result["summary"]
    assert s["lesion_count"] == 2
    assert s["opacification_volume_ml_left"] == pytest.approx(p.lesions[0].voxel_volume_ml, rel=0.02)
    assert s["opacification_volume_ml_right"] == pytest.approx(p.lesions[1].voxel_volume_ml, rel=0.02)
    assert s["lung_volume_ml_right"] == pytest.approx(np.count_nonzero(p.lungs == 1) * p.voxel_ml, rel=0.03)
    assert s["consolidation_fraction"] == pytest.approx(
        np.count_nonzero(p.lesion_labels == 1) / np.count_nonzero(p.lesion_mask), abs=0.01)
    rows = {r["lung_side"]: r for r in result["lesions"]}
    assert rows["left"]["zone"] == "left upper" and rows["right"]["zone"] == "right middle"
    # centroid in LPS agrees with the physical centre computed through the stored (permuted) image
    cz, cy, cx = p.lesions[0].center_voxel
    expected = p.axial_image.TransformContinuousIndexToPhysicalPoint((cx, cy, cz))
    got = [rows["left"][f"centroid_lps_{a}_mm"] for a in "xyz"]
    assert np.allclose(got, expected, atol=0.8 * max(p.spacing_zyx))
    assert expected[0] > p.axial_image.TransformContinuousIndexToPhysicalPoint(
        tuple(reversed(p.lesions[1].center_voxel)))[0]      # left lesion at larger L coordinate
    # files: results.json matches the returned dict; CSVs carry the same fields
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["summary"] == s and on_disk["lesions"] == result["lesions"]
    with open(out / "summary.csv", newline="") as f:
        summary_rows = {row[0]: row[1] for row in list(csv.reader(f))[1:]}  # quantity,value,unit
    assert list(summary_rows) == list(s)
    left_csv = float(summary_rows["opacification_volume_ml_left"])
    assert left_csv == pytest.approx(s["opacification_volume_ml_left"], rel=1e-5)
    with open(out / "lesions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and list(table[0]) == list(LESION_FIELDS)
    with open(out / "slices.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 30


def test_run_quantify_with_lobe_labelmap(tmp_path: Path) -> None:
    p = make_chest_phantom(lesions=[LesionSpec(side="right", zone="lower", radius_mm=6.0)])
    zones = lung_zones(p.lungs)
    ts = np.zeros_like(p.lungs)
    for zone, label in {1: 12, 2: 13, 3: 14, 4: 10, 5: 10, 6: 11}.items():   # TotalSegmentator ids
        ts[zones == zone] = label
    paths = [tmp_path / n for n in ("ct.nrrd", "mask.nrrd", "lobes.nii.gz")]
    for arr_or_img, path in ((p.image, paths[0]), (p.lesion_mask, paths[1]), (ts, paths[2])):
        img = arr_or_img
        if isinstance(arr_or_img, np.ndarray):
            img = sitk.GetImageFromArray(arr_or_img)
            img.CopyInformation(p.image)
        sitk.WriteImage(img, str(path))
    result = run_quantify(*paths[:2], tmp_path / "out", lungs_path=paths[2])
    s = result["summary"]
    assert result["case"]["lung_source"] == "labelmap"
    assert s["severity_score_right_lower_lobe"] >= 1 and s["severity_score_5lobe"] == s[
        "severity_score_right_lower_lobe"]
    assert result["lesions"][0]["lobe"] == "right lower"
    assert s["lung_volume_ml_right"] == pytest.approx(np.count_nonzero(p.lungs == 1) * p.voxel_ml)


def test_run_quantify_real_8bit_slice(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "covid19-ct100"
    result = run_quantify(folder / "images" / "ct100_0001.png", folder / "masks" / "ct100_0001.png", tmp_path)
    s = result["summary"]
    assert s["hu_available"] is False and s["spacing_known"] is False
    assert s["lesion_mean_hu"] is None and s["opacification_volume_ml"] is None
    assert s["opacification_voxel_count"] > 0 and 0 < s["opacification_percent"] < 100
    assert s["lesion_count"] == len(result["lesions"]) > 0
    with open(tmp_path / "summary.csv", newline="") as f:
        summary_rows = {row[0]: row[1] for row in list(csv.reader(f))[1:]}  # quantity,value,unit
    assert summary_rows["lesion_mean_hu"] == "" and summary_rows["lung_volume_ml"] == ""


def test_peripheral_blocks_match_the_full_distance_transform() -> None:
    from jcs.quantify import _peripheral
    from scipy import ndimage as ndi

    lesions = [LesionSpec(side="right", zone="upper", radius_mm=9.0, position="peripheral"),
               LesionSpec(side="left", zone="lower", radius_mm=12.0),
               LesionSpec(side="left", zone="middle", radius_mm=5.0, position="peripheral")]
    p = make_chest_phantom(lesions=lesions, touching_lungs=True, lung_z_range=(-0.1, 1.1))
    lesion = p.lesion_mask > 0
    full = lesion & (ndi.distance_transform_edt(p.lungs > 0, sampling=p.spacing_zyx) <= 10.0)
    assert 0 < full.sum() < lesion.sum()
    for chunk in (1, 5, 100):
        assert np.array_equal(_peripheral(lesion, p.lungs > 0, p.spacing_zyx, 10.0, chunk=chunk), full)


def test_touching_phantom_lesions_merge() -> None:
    """Two ground-glass spheres overlapping in the right lung form one lesion of their union's volume."""
    a = LesionSpec(side="right", zone="middle", radius_mm=6.0)
    p0 = make_chest_phantom(lesions=[a])
    cz, cy, cx = p0.lesions[0].center_voxel
    b = LesionSpec(radius_mm=6.0, center=(cz, cy + 6.0, cx))     # 9 mm apart: the spheres overlap
    c = LesionSpec(radius_mm=4.0, center=(cz, cy - 14.0, cx))    # 21 mm away: separate
    p = make_chest_phantom(lesions=[LesionSpec(radius_mm=6.0, center=(cz, cy, cx)), b, c])
    q = quantify(p.lesion_mask, p.lungs, p.axial_image, hu=p.hu)
    assert q.summary["lesion_count"] == 2
    volumes = sorted(r["volume_ml"] for r in q.lesions)
    union = np.count_nonzero(p.lesion_labels == 1) + np.count_nonzero(p.lesion_labels == 2)
    assert volumes[1] == pytest.approx(union * p.voxel_ml)
    assert volumes[0] == pytest.approx(p.lesions[2].voxel_volume_ml)
    assert volumes[1] < p.lesions[0].analytic_volume_ml + p.lesions[1].analytic_volume_ml


def test_run_quantify_bad_mask(tmp_path: Path) -> None:
    p = make_chest_phantom(shape=(16, 64, 64), lesions=[])
    ct_path = tmp_path / "ct.nrrd"
    sitk.WriteImage(p.image, str(ct_path))
    with pytest.raises(CorruptFileError, match="cannot read lesion mask"):
        run_quantify(ct_path, tmp_path / "missing.nii.gz", tmp_path / "out")
    far = sitk.GetImageFromArray(np.ones((4, 8, 8), dtype=np.uint8))
    far.SetOrigin((5000.0, 5000.0, 5000.0))
    sitk.WriteImage(far, str(tmp_path / "far.nrrd"))
    with pytest.raises(InputError, match="does not overlap"):
        run_quantify(ct_path, tmp_path / "far.nrrd", tmp_path / "out")
