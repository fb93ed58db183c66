"""DICOM-SEG + TID 1500 SR export (jcs.dicomseg) and `jcs diagnose --dicom-seg`: frames aligned with
the source instances, files valid for dciodvfy, values read back with highdicom."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_writer import dciodvfy_errors, write_image_series
from jcs.cli import main
from jcs.dicomseg import check_referenceable, frame_masks, read_source_series
from jcs.errors import CorruptFileError, InputError
from phantoms import make_chest_phantom


def test_seg_frames_follow_source_instances_whatever_the_mask_grid(tmp_path: Path) -> None:
    hu = np.full((6, 20, 24), -800, np.int16)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.9, 0.8, 3.0))
    image.SetOrigin((5.0, -7.0, 12.0))
    files = write_image_series(image, tmp_path / "ct")
    sources = read_source_series(list(reversed(files)), 6)
    assert [float(ds.ImagePositionPatient[2]) for ds in sources] == pytest.approx(
        [12.0 + 3 * k for k in range(6)]
    )
    mask = np.zeros((6, 20, 24), np.uint8)
    mask[1, 2:5, 3:9] = 1
    mask[4, 15, 20] = 1
    # the same voxels on a grid stored flipped in all three axes (as another reader might)
    reference = sitk.GetImageFromArray(mask)
    reference.CopyInformation(image)
    flipped = sitk.Flip(sitk.GetImageFromArray(mask), [True, True, True])
    flipped.SetSpacing(image.GetSpacing())
    flipped.SetOrigin(reference.TransformIndexToPhysicalPoint((23, 19, 5)))
    flipped.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, -1))
    assert np.array_equal(frame_masks(flipped, sources), mask)
    assert np.array_equal(frame_masks(reference, sources), mask)
    shifted = sitk.Image(reference)
    shifted.SetOrigin((5.4, -7.0, 12.0))  # half a voxel off the source grid
    with pytest.raises(InputError, match="not on the grid"):
        frame_masks(shifted, sources)
    with pytest.raises(InputError, match="slices like the volume"):
        read_source_series(files, 7)
    files[2].write_bytes(b"not a DICOM file")
    with pytest.raises(CorruptFileError, match=files[2].name):
        read_source_series(files, 6)


def _diagnose(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["diagnose", *args, "--quiet", "--precision", "fp32"])
    return code, capsys.readouterr().err


def test_cli_writes_valid_seg_and_sr_of_its_reading(
    tiny_weights: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    phantom = make_chest_phantom(shape=(10, 96, 96), seed=2)
    files = write_image_series(phantom.image, tmp_path / "ct")
    for path in files:  # anonymised like COVID-CT-MD: type 2 patient attributes left out
        dataset = pydicom.dcmread(path)
        del dataset.PatientName, dataset.PatientBirthDate
        dataset.save_as(path)
    out = tmp_path / "out"
    code, stderr = _diagnose(
        [str(tmp_path / "ct"), "--out", str(out), "--dicom-seg", "--segment", "always", "--threshold", "2",
         "--lesion-margin-mm", "-1",
         "--classifier", tiny_weights["classifier"], "--segmenter", tiny_weights["segmenter"]],
        capsys,
    )  # fmt: skip
    assert code == 0, stderr
    results = json.loads((out / "results.json").read_text())
    assert results["outputs"]["dicom_seg"] == "lesions.seg.dcm"
    assert results["outputs"]["dicom_sr"] == "lesions.sr.dcm"
    assert dciodvfy_errors(out / "lesions.seg.dcm") in ([], None)
    assert dciodvfy_errors(out / "lesions.sr.dcm") in ([], None)

    # the SEG holds lesions.nrrd, frame by frame on the source instances (file k = axial slice k)
    lesions = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lesions.nrrd")))
    assert lesions.any()
    seg = hd.seg.segread(out / "lesions.seg.dcm")
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])[..., 0]
    assert np.array_equal(pixels.astype(np.uint8), lesions)
    (description,) = seg.SegmentSequence
    assert description.SegmentAlgorithmType == "AUTOMATIC"
    assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == "112033"
    algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
    assert tiny_weights["segmenter"] in str(algorithm.AlgorithmParameters)

    # the SR carries the case reading and the quantification of results.json
    sr = hd.sr.srread(out / "lesions.sr.dcm")
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    case, summary = results["case"], results["summary"]
    measured = {m.name.value: m.value for m in group.get_measurements()}
    voxel_ml = float(np.prod(phantom.image.GetSpacing())) / 1000
    assert measured["118565006"] == pytest.approx(lesions.sum() * voxel_ml)  # SCT Volume: the segment's
    assert measured["LUNGLESVOL"] == pytest.approx(summary["opacification_volume_ml"], rel=1e-5)
    outside = summary["opacification_volume_ml_outside_lungs"]
    assert outside > 0 and measured["118565006"] == pytest.approx(measured["LUNGLESVOL"] + outside, rel=1e-4)
    assert measured["LUNGPCT"] == pytest.approx(summary["opacification_percent"], rel=1e-5)
    assert measured["NLESION"] == summary["lesion_count"]
    assert (measured["NPOSSLICE"], measured["POSSLICETHR"]) == (case["positive_slice_count"], 2)
    assert "NPOSSLICEREV" not in measured  # nobody edited this segmentation
    (reading,) = group.get_qualitative_evaluations()
    assert (reading.name.value, reading.value.meaning) == (
        "CASEREAD", "Positive" if case["positive"] else "Negative"
    )


def test_quantify_writes_seg_and_sr_of_a_mask_the_user_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`jcs quantify CT MASK --dicom-seg`: a mask edited in another tool, as SEG + SR for PACS."""
    phantom = make_chest_phantom(shape=(12, 96, 96), seed=3)
    files = write_image_series(phantom.image, tmp_path / "ct")
    truth = sitk.GetImageFromArray(phantom.lesion_mask.astype(np.uint8))
    truth.CopyInformation(phantom.image)
    sitk.WriteImage(sitk.DICOMOrient(truth, "RAS"), str(tmp_path / "edited.nrrd"))  # stored flipped
    out = tmp_path / "out"
    assert main(["quantify", str(tmp_path / "ct"), str(tmp_path / "edited.nrrd"), "--out", str(out),
                 "--dicom-seg"]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["outputs"] == {"dicom_seg": "lesions.seg.dcm", "dicom_sr": "lesions.sr.dcm"}
    assert dciodvfy_errors(out / "lesions.seg.dcm") in ([], None)
    assert dciodvfy_errors(out / "lesions.sr.dcm") in ([], None)
    seg = hd.seg.segread(out / "lesions.seg.dcm")
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])[..., 0]
    assert np.array_equal(pixels.astype(bool), phantom.lesion_mask.astype(bool))
    (group,) = hd.sr.srread(out / "lesions.sr.dcm").content.get_volumetric_roi_measurement_groups()
    measured = {m.name.value: m.value for m in group.get_measurements()}
    voxel_ml = float(np.prod(phantom.image.GetSpacing())) / 1000
    assert measured["118565006"] == pytest.approx(phantom.lesion_mask.sum() * voxel_ml)
    assert measured["LUNGLESVOL"] == pytest.approx(results["summary"]["opacification_volume_ml"], rel=1e-5)
    assert measured["NLESION"] == results["summary"]["lesion_count"] == len(phantom.lesions)
    assert not {"NPOSSLICE", "POSSLICETHR"} & set(measured)  # no engine reading: a mask alone
    assert group.get_qualitative_evaluations() == []

    sitk.WriteImage(phantom.image, str(tmp_path / "ct.nrrd"))
    refused = tmp_path / "refused"
    capsys.readouterr()
    assert main(["quantify", str(tmp_path / "ct.nrrd"), str(tmp_path / "edited.nrrd"), "--out", str(refused),
                 "--dicom-seg"]) == 2  # fmt: skip
    assert "needs a DICOM series as input" in capsys.readouterr().err and not refused.exists()


def test_cli_dicom_seg_refuses_inputs_it_cannot_reference(
    tiny_weights: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    phantom = make_chest_phantom(shape=(10, 64, 64), seed=4)
    source = tmp_path / "phantom.nrrd"
    sitk.WriteImage(phantom.image, str(source))
    # a series whose anonymiser blanked the SOP Instance UIDs and wrote a UUID as Study UID (as in
    # COVID-CT-MD normal002): readable as CT, but nothing a SEG could point at
    files = write_image_series(phantom.image, tmp_path / "blanked")
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.SOPInstanceUID = ""
        dataset.save_as(path)
    refusals = {
        source: "DICOM-SEG export needs a DICOM series as input; " + str(source),
        tmp_path / "blanked": "10 of 10 source instances have no valid SOP Instance UID",
    }
    for path, message in refusals.items():
        out = tmp_path / f"out-{path.stem}"
        code, stderr = _diagnose(
            [str(path), "--out", str(out), "--dicom-seg",
             "--classifier", tiny_weights["classifier"], "--segmenter", tiny_weights["segmenter"]],
            capsys,
        )  # fmt: skip
        assert code == 2 and stderr.count("\n") == 1 and message in stderr
        assert not out.exists()  # refused before any work


def test_series_with_malformed_uids_are_refused(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.full((3, 8, 8), -800, np.int16))
    files = write_image_series(image, tmp_path)
    datasets = read_source_series(files, 3)
    with pytest.warns(UserWarning, match="Invalid value for VR UI"):  # pydicom's own check
        datasets[0].StudyInstanceUID = "1355759b-7653-424e-b0b5-1d131628d0e4"
        with pytest.raises(InputError, match="StudyInstanceUID '1355759b-.*' is not a valid DICOM UID"):
            check_referenceable(datasets)
    datasets = read_source_series(files, 3)
    datasets[2].SOPInstanceUID = datasets[1].SOPInstanceUID
    with pytest.raises(InputError, match="share one SOP Instance UID"):
        check_referenceable(datasets)
