"""`jcs` command line end to end with the tiny weights: phantom, real CT100 slice, real DICOM series."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from jcs import weights
from jcs.cli import main
from jcs.weights import find_weights
from phantoms import make_chest_phantom, margin_case

TABLES = ("results.json", "results.csv", "summary.csv", "lesions.csv", "slices.csv")
CORONAL_DIRECTION = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)


def _same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def _diagnose(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["diagnose", *args, "--quiet", "--precision", "fp32"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_outputs(out: Path, reference: sitk.Image, n_slices: int) -> dict:
    for name in TABLES:
        assert (out / name).is_file(), name
    heatmap = sitk.ReadImage(str(out / "heatmap.nrrd"))
    lesions = sitk.ReadImage(str(out / "lesions.nrrd"))
    _same_geometry(heatmap, reference)
    _same_geometry(lesions, reference)
    lungs = sitk.ReadImage(str(out / "lungs.nrrd"))
    _same_geometry(lungs, reference)
    assert set(np.unique(sitk.GetArrayViewFromImage(lungs))) <= {0, 1, 2}
    assert heatmap.GetPixelID() == sitk.sitkFloat32 and lesions.GetPixelID() == sitk.sitkUInt8
    values = sitk.GetArrayViewFromImage(heatmap)
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert set(np.unique(sitk.GetArrayViewFromImage(lesions))) <= {0, 1}
    results = json.loads((out / "results.json").read_text())
    case = results["case"]
    assert {"positive", "positive_slice_count", "threshold"} <= set(case)
    assert len(results["slices"]) == n_slices
    probabilities = [s["probability"] for s in results["slices"]]
    assert [s["index"] for s in results["slices"]] == list(range(n_slices))
    assert case["classifier_positive_slice_count"] == sum(p > 0.5 for p in probabilities)
    if case["decision"] == "classifier":
        assert [s["positive"] for s in results["slices"]] == [p > 0.5 for p in probabilities]
    else:
        fractions = [s["opacified_lung_fraction"] for s in results["slices"]]
        assert [s["positive"] for s in results["slices"]] == [f > 0.02 for f in fractions]
    assert case["positive_slice_count"] == sum(s["positive"] for s in results["slices"])
    assert case["positive"] == (case["positive_slice_count"] > case["threshold"])
    for kind in ("classifier", "segmenter"):
        card = find_weights(results["weights"][kind]["name"])
        assert results["weights"][kind]["sha256"] == card.sha256
    assert results["engine_version"] and results["timings_s"]["total"] > 0
    assert "summary" in results and "lesions" in results
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == n_slices
    np.testing.assert_allclose([float(r["probability"]) for r in rows], probabilities, rtol=1e-6)
    # the lesion labelmap, mapped back to the axial grid, holds exactly the per-slice areas reported
    axial = sitk.GetArrayFromImage(sitk.DICOMOrient(lesions, "LPS")) if lesions.GetDimension() == 3 else (
        sitk.GetArrayFromImage(lesions)[None]
    )
    areas = [s["opacification_area_px"] for s in results["slices"]]
    assert axial.reshape(n_slices, -1).sum(axis=1).tolist() == areas
    return results


def _diagnose_phantom(
    tmp_path: Path,
    weights: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    **geometry: object,
) -> tuple[str, dict, Path]:
    """`jcs diagnose` on a 10-slice phantom written as NRRD with the tiny weights; (stdout, results, out)."""
    phantom = make_chest_phantom(shape=(10, 96, 96), seed=2, **geometry)
    source = tmp_path / "phantom.nrrd"
    sitk.WriteImage(phantom.image, str(source))
    out = tmp_path / "out"
    code, stdout, stderr = _diagnose(
        [str(source), "--out", str(out), *options,
         "--classifier", weights["classifier"], "--segmenter", weights["segmenter"]],
        capsys,
    )
    assert code == 0, stderr
    return stdout, _check_outputs(out, phantom.image, 10), out


def test_diagnose_phantom_in_coronal_storage(
    tiny_weights: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--segment", "always", "--threshold", "2"]
    stdout, results, out = _diagnose_phantom(
        tmp_path, tiny_weights, capsys, options, direction=CORONAL_DIRECTION
    )
    assert "classifier: tiny-classifier (sha256" in stdout and "segmenter: tiny-segmenter" in stdout
    assert results["case"]["threshold"] == 2 and results["case"]["segmented"]
    assert sitk.GetArrayViewFromImage(sitk.ReadImage(str(out / "lesions.nrrd"))).any()
    assert results["input"]["direction"] == pytest.approx(list(CORONAL_DIRECTION))


def test_diagnose_by_the_segmenter_rule(
    tiny_weights: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stdout, results, out = _diagnose_phantom(tmp_path, tiny_weights, capsys, ["--decision", "segmenter"])
    case = results["case"]
    assert case["decision"] == "segmenter" and case["segmented"]
    assert case["threshold"] == case["suggested_threshold"] == 10  # 25 mm of 2.5 mm slices
    assert "opacification covers more than 2 % of its lung area" in case["decision_rule"]
    assert "by the segmenter rule:" in stdout and "note: for 10 slices" not in stdout
    lungs = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lungs.nrrd"))) > 0
    lesions = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lesions.nrrd"))) > 0
    expected = (lesions & lungs).sum(axis=(1, 2)) / np.maximum(lungs.sum(axis=(1, 2)), 1)
    np.testing.assert_allclose([s["opacified_lung_fraction"] for s in results["slices"]], expected)


def test_diagnose_cohort_one_folder_per_case_and_a_table(
    tiny_weights: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several inputs: each case in its own folder, cases.csv one row each; a corrupt file is recorded
    as an error and the others still run (exit code 2 because one failed)."""
    sources = []
    for seed, folder in enumerate(("a", "b")):  # two files named ct.nrrd: folders ct and ct-2
        phantom = make_chest_phantom(shape=(10, 96, 96), seed=seed)
        (tmp_path / folder).mkdir()
        sources.append(tmp_path / folder / "ct.nrrd")
        sitk.WriteImage(phantom.image, str(sources[-1]))
    corrupt = tmp_path / "broken.nrrd"
    corrupt.write_bytes(b"NRRD0004\nnot an image")
    out = tmp_path / "cohort"
    code, stdout, stderr = _diagnose(
        [*map(str, sources), str(corrupt), "--out", str(out), "--segment", "always", "--threshold", "2",
         "--classifier", tiny_weights["classifier"], "--segmenter", tiny_weights["segmenter"]],
        capsys,
    )
    assert code == 2 and "broken" in stderr
    with open(out / "cases.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case"], r["status"]) for r in rows] == [("ct", "ok"), ("ct-2", "ok"), ("broken", "error")]
    assert rows[2]["error"] and not (out / "broken" / "results.json").exists()
    for row, source in zip(rows[:2], sources, strict=True):
        results = _check_outputs(out / row["case"], sitk.ReadImage(str(source)), 10)
        case = results["case"]
        assert row["input"] == str(source) and row["positive"] == str(case["positive"])
        assert (int(row["positive_slice_count"]), int(row["threshold"])) == (case["positive_slice_count"], 2)
        assert int(row["axial_slices"]) == 10 and float(row["seconds"]) > 0
        assert float(row["opacification_volume_ml"]) == pytest.approx(
            results["summary"]["opacification_volume_ml"]
        )
        assert int(row["lesion_count"]) == results["summary"]["lesion_count"]
    assert "[3/3] broken" in stdout and "cohort: 3 cases" in stdout and "1 failed" in stdout

    # With the cohort's labels (by case name or by input path): each row's label, and the decisions
    # scored against them; the failed case does not count, a case without a label is said.
    labels = tmp_path / "labels.csv"
    labels.write_text(f"case,label\nct,positive\n{sources[1]},0\nbroken,1\n")
    scored = tmp_path / "scored"
    code, stdout, _ = _diagnose(
        [*map(str, sources), str(corrupt), "--out", str(scored), "--labels", str(labels),
         "--classifier", tiny_weights["classifier"], "--segmenter", tiny_weights["segmenter"]],
        capsys,
    )
    assert code == 2
    with open(scored / "cases.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == ["True", "False", "True"]
    found = int(rows[0]["positive"] == "True")
    cleared = int(rows[1]["positive"] == "False")
    expected = f"sensitivity {found}/1 ({found:.2f}), specificity {cleared}/1 ({cleared:.2f})"
    assert f"against the labels: {expected}" in stdout
    labels.write_text("case,label\nct,maybe\n")
    code, _, stderr = _diagnose([*map(str, sources), "--out", str(scored), "--labels", str(labels)], capsys)
    assert code == 2 and "'maybe' of case 'ct' is not 1/0/positive/negative" in stderr
    code, _, stderr = _diagnose([str(sources[0]), "--out", str(scored), "--labels", str(labels)], capsys)
    assert code == 2 and "--labels is for cohorts" in stderr

    # Interrupted on the second case (Ctrl-C): the table keeps the cases that finished.
    from jcs import cli

    real_case = cli._diagnose_case
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(args[2])  # the case's output folder
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_case(*args, **kwargs)

    monkeypatch.setattr(cli, "_diagnose_case", interrupt_second)
    stopped = tmp_path / "stopped"
    code, _, stderr = _diagnose(
        [*map(str, sources), "--out", str(stopped), "--classifier", tiny_weights["classifier"],
         "--segmenter", tiny_weights["segmenter"]],
        capsys,
    )
    assert code == 130 and "interrupted" in stderr
    with open(stopped / "cases.csv", newline="") as handle:
        assert [(r["case"], r["status"]) for r in csv.DictReader(handle)] == [("ct", "ok")]


def test_diagnose_real_ct100_png(
    shared_data: Path, tiny_weights: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = shared_data / "covid19-ct100" / "images" / "ct100_0000.png"
    out = tmp_path / "png"
    code, stdout, stderr = _diagnose(
        [str(png), "--out", str(out), "--segment", "always",
         "--classifier", tiny_weights["classifier"], "--segmenter", tiny_weights["segmenter"]],
        capsys,
    )
    assert code == 0, stderr
    reference = sitk.ReadImage(str(png))
    results = _check_outputs(out, reference, 1)
    assert results["case"]["threshold"] == 0 and results["input"]["is_hu"] is False


def test_diagnose_real_dicom_series(
    shared_data: Path, tiny_weights: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Twelve contiguous slices of the real P001 series (copied as they are), read as a DICOM folder."""
    with open(shared_data / "covid-ct-md" / "slice_labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["patient"] == "P001"]
    rows.sort(key=lambda r: int(r["slice_index_sup_to_inf"]))
    series = tmp_path / "P001"
    series.mkdir()
    for row in rows[60:72]:
        shutil.copy(shared_data / "covid-ct-md" / row["file"], series)
    out = tmp_path / "dicom"
    code, stdout, stderr = _diagnose(
        [str(series), "--out", str(out), "--segment", "always",
         "--classifier", tiny_weights["classifier"], "--segmenter", tiny_weights["segmenter"]],
        capsys,
    )
    assert code == 0, stderr
    reader = sitk.ImageSeriesReader()
    reference = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(series)))
    results = _check_outputs(out, reference, 12)
    files = {r["file"].split("/")[-1] for r in rows[60:72]}
    assert {s["file"] for s in results["slices"]} == files
    # axial index 0 is the most inferior slice: SliceLocation increases with the index
    by_file = {r["file"].split("/")[-1]: float(r["SliceLocation"]) for r in rows}
    locations = [by_file[s["file"]] for s in results["slices"]]
    assert locations == sorted(locations)


def test_diagnose_sample_classification_only(
    tiny_weights: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sample"
    code, stdout, stderr = _diagnose(
        ["--sample", "--out", str(out), "--threshold", "1000",
         "--classifier", tiny_weights["classifier"], "--segmenter", tiny_weights["segmenter"]],
        capsys,
    )
    assert code == 0, stderr
    assert "COVID-CT-MD" in stdout
    results = json.loads((out / "results.json").read_text())
    assert len(results["slices"]) == 48 and not results["case"]["segmented"]
    assert results["case"]["suggested_threshold"] == 12  # 2 mm slices: 25 mm / 2 mm


def test_no_weights_gives_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(weights, "BUNDLED_DIR", tmp_path / "none")
    phantom = make_chest_phantom(shape=(10, 64, 64), seed=4)
    source = tmp_path / "p.nrrd"
    sitk.WriteImage(phantom.image, str(source))
    code, stdout, stderr = _diagnose([str(source), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert stderr.count("\n") == 1 and "jcs weights import-official" in stderr
    assert main(["weights", "list"]) == 0
    assert "no weights installed" in capsys.readouterr().out


def test_user_errors_exit_2_without_traceback(
    tiny_weights: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, stderr = _diagnose([str(tmp_path / "absent.nii.gz"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "absent.nii.gz" in stderr and stderr.count("\n") == 1
    code, _, stderr = _diagnose(["--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "INPUT paths (one or more) or --sample" in stderr
    phantom = make_chest_phantom(shape=(10, 64, 64), seed=4)
    source = tmp_path / "p.nrrd"
    sitk.WriteImage(phantom.image, str(source))
    code, _, stderr = _diagnose([str(source), "--out", str(tmp_path / "o"), "--classifier", "nope"], capsys)
    assert code == 2 and "no weights named 'nope'" in stderr
    code, _, stderr = _diagnose(
        [str(source), "--out", str(tmp_path / "o"), "--classifier", tiny_weights["segmenter"]], capsys
    )
    assert code == 2 and "not a classifier" in stderr
    not_official = tmp_path / "x.pth"
    torch.save({"w": torch.zeros(2)}, not_official)
    assert main(["weights", "import-official", str(not_official), "--name", "x"]) == 2
    assert "none of the official JCS formats" in capsys.readouterr().err


def test_weights_list(tiny_weights: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-classifier" in out and "classifier" in out and "tiny-segmenter" in out
    assert find_weights("tiny-classifier").sha256[:16] in out


def test_quantify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phantom = make_chest_phantom(shape=(12, 96, 96), seed=3)
    ct_path, mask_path = tmp_path / "ct.nrrd", tmp_path / "mask.nrrd"
    sitk.WriteImage(phantom.image, str(ct_path))
    mask = sitk.GetImageFromArray(phantom.lesion_mask.astype(np.uint8))
    mask.CopyInformation(phantom.axial_image)
    sitk.WriteImage(mask, str(mask_path))
    out = tmp_path / "q"
    assert main(["quantify", str(ct_path), str(mask_path), "--out", str(out)]) == 0
    for name in ("results.json", "summary.csv", "lesions.csv", "slices.csv"):
        assert (out / name).is_file()
    results = json.loads((out / "results.json").read_text())
    assert len(results["lesions"]) >= 1
    assert "lesions:" in capsys.readouterr().out
    assert main(["quantify", str(ct_path), str(tmp_path / "absent.nrrd"), "--out", str(out)]) == 2
    assert "absent.nrrd" in capsys.readouterr().err


def test_console_script_error_is_one_line(tmp_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "jcs.cli", "diagnose", str(tmp_path / "absent"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2
    assert process.stderr.startswith("jcs diagnose: error:") and "Traceback" not in process.stderr


def test_predicted_lesions_far_from_the_lungs_are_dropped() -> None:
    """A blob in the lung is kept, one in the abdominal wall is dropped with a note; margin < 0 keeps all."""
    from jcs.inference import DiagnosisResult
    from jcs.lung import find_lungs
    from jcs.pipeline import quantify_case

    ct, lesion, (z, y, x) = margin_case()

    def run(margin: float) -> tuple[np.ndarray, dict, list[str]]:
        result = DiagnosisResult(
            np.zeros(16), 0, 25, False, np.zeros(lesion.shape, np.float32), None, lesion.copy(), True, {}, {},
            "cpu", "fp32",
        )  # fmt: skip
        kept = quantify_case(ct, result, find_lungs(ct), margin)
        return kept.lesion_mask, kept.quantification.summary, kept.notes

    kept_mask, kept, kept_notes = run(-1.0)
    dropped_mask, dropped, dropped_notes = run(10.0)
    assert kept_mask.sum() == 18 and not kept_notes
    assert kept["opacification_volume_ml_outside_lungs"] > 0
    assert dropped_mask.sum() == 9 and dropped_mask[z, y, x] == 1
    assert dropped["opacification_volume_ml_outside_lungs"] == 0
    assert dropped["opacification_volume_ml"] == kept["opacification_volume_ml"]
    assert len(dropped_notes) == 1 and "more than 10 mm from the lungs" in dropped_notes[0]
