"""The radiologist's flow on slicer-core: diagnose, look, edit, update, export, save and reload.

A phantom chest CT (known lungs and lesions) is loaded into a real MRML scene from a DICOM series
and from NRRD, diagnosed by the engine CLI in a background process with tiny deterministic weights;
the segment is edited through the segmentation API, tables are checked cell by cell against the
phantom truth, DICOM-SEG + SR are validated with dciodvfy and read back voxel-exact, and the scene
survives a save/reload.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install '.[slicer,viewer]')")
SlicerApp = pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed").SlicerApp

import highdicom as hd  # noqa: E402
import pydicom  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from dicom_writer import dciodvfy_errors, write_image_series  # noqa: E402
from jcs.io import CTVolume  # noqa: E402
from JCSDiagnosisLib import display, tables, volumes  # noqa: E402
from JCSDiagnosisLib.logic import JCSDiagnosisSceneLogic  # noqa: E402
from JCSDiagnosisLib.process import EngineError  # noqa: E402
from phantoms import make_chest_phantom  # noqa: E402

pytestmark = pytest.mark.slicer


@pytest.fixture(scope="module")
def weights(tiny_weights_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JCS_WEIGHTS_DIR", str(tiny_weights_dir))
        yield {"classifier": "tiny-classifier", "segmenter": "tiny-segmenter"}


# The engine's cost grows with the slice count (every slice is classified and segmented at a fixed
# size), so the phantoms are thin: 16 slices for the DICOM case, 8 for the NRRD case.
@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(shape=(16, 96, 96), spacing=(5.0, 1.5, 1.5))


@pytest.fixture(scope="module")
def app():
    app = SlicerApp()
    app.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # what a slice view observes
    red = app.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetLayoutName("Red")
    red.SetOrientation("Axial")
    return app


@pytest.fixture(scope="module")
def logic(app):
    return JCSDiagnosisSceneLogic(app.app_logic)


@pytest.fixture(scope="module")
def dicom_files(phantom, tmp_path_factory):
    return write_image_series(phantom.image, tmp_path_factory.mktemp("ct-dicom"))


def _original_grid(phantom, axial: np.ndarray) -> np.ndarray:
    """An axial-grid array of the phantom on the (K, J, I) grid of its original image."""
    ct = CTVolume(image=phantom.image, is_hu=True, path=Path("phantom"))
    return sitk.GetArrayFromImage(ct.from_axial(np.ascontiguousarray(axial)))


def _load_dicom(app, files) -> slicer.vtkMRMLScalarVolumeNode:
    """Load a DICOM series with Slicer's archetype reader, as Slicer's DICOM scalar volume plugin does."""
    names = vtk.vtkStringArray()
    for path in files:
        names.InsertNextValue(str(path))
    node = app.volumes_logic.AddArchetypeVolume(str(files[0]), "phantom CT (DICOM)", 0, names)
    assert node is not None
    return node


@pytest.fixture(scope="module")
def dicom_run(app, logic, weights, dicom_files):
    """One engine run on the DICOM phantom (the costly part), its output kept for this module."""
    volume = _load_dicom(app, dicom_files)
    progress = []
    run = logic.startDiagnosis(
        volume,
        device="cpu",
        segment_policy="always",
        onProgress=lambda s, f: progress.append((s, f)),
        **weights,
    )
    try:
        run.process.wait(timeout=300)
        yield run, progress
    finally:
        shutil.rmtree(run.workDir, ignore_errors=True)


@pytest.fixture
def dicom_case(logic, dicom_run):
    """Fresh result nodes of that run for each test: tests edit them, and none sees another's edits."""
    run, progress = dicom_run
    return run.volumeNode, logic.loadResults(run), progress


def test_diagnosis_creates_linked_nodes_on_the_input_grid(app, logic, dicom_case, phantom):
    volume, nodes, progress = dicom_case
    assert progress and progress[-1][1] == pytest.approx(1.0)
    assert np.array_equal(volumes.arrayFromVolume(volume), sitk.GetArrayFromImage(phantom.image))

    assert np.allclose(volumes.ijkToRasMatrix(nodes.heatmapNode), volumes.ijkToRasMatrix(volume))
    assert nodes.heatmapNode.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    heat = volumes.arrayFromVolume(nodes.heatmapNode)
    assert heat.dtype == np.float32 and 0.0 <= heat.min() and heat.max() <= 1.0 and heat.max() > 0
    heat_display = nodes.heatmapNode.GetDisplayNode()
    assert heat_display.GetColorNode().GetName() == display.HEATMAP_COLOR_NAME
    assert (heat_display.GetWindowLevelMin(), heat_display.GetWindowLevelMax()) == (0.0, 1.0)
    composite = display.sliceCompositeNodes(app.scene)[0]
    assert composite.GetBackgroundVolumeID() == volume.GetID()
    assert composite.GetForegroundVolumeID() == nodes.heatmapNode.GetID()
    logic.setHeatmapOpacity(0.7)
    assert composite.GetForegroundOpacity() == pytest.approx(0.7)

    segmentation = nodes.segmentationNode
    assert logic.sourceVolume(segmentation) is volume
    assert segmentation.GetSegmentation().GetSourceRepresentationName() == "Binary labelmap"
    lesion = segmentation.GetSegmentation().GetSegment("lesion")
    assert lesion.GetName() == "COVID-19 lesions" and "DCM^112033^Abnormal opacity" in lesion.GetTerminology()
    mask = logic.lesionMask(segmentation)
    assert mask.shape == volumes.arrayFromVolume(volume).shape and set(np.unique(mask)) <= {0, 1}
    assert not logic.isEdited(segmentation)

    # lungs: optional hidden segments, close to the phantom truth
    for segment_id in ("right_lung", "left_lung"):
        assert not segmentation.GetDisplayNode().GetSegmentVisibility(segment_id)
    lungs = logic.lungLabels(segmentation)
    truth = _original_grid(phantom, phantom.lungs)
    for label in (1, 2):
        dice = (
            2
            * np.sum((lungs == label) & (truth == label))
            / (np.sum(lungs == label) + np.sum(truth == label))
        )
        assert dice > 0.9, f"lung {label} Dice {dice:.3f}"

    slices = tables.readTable(nodes.sliceTableNode)
    assert [row[tables.SLICE_COLUMN] for row in slices] == list(range(phantom.lungs.shape[0]))
    probabilities = np.array([row[tables.PROBABILITY_COLUMN] for row in slices])
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert probabilities == pytest.approx([row.probability for row in nodes.results.case.slices], abs=1e-5)
    series = nodes.plotChartNode.GetNthPlotSeriesNode(0)
    assert series.GetTableNodeID() == nodes.sliceTableNode.GetID()
    assert series.GetYColumnName() == tables.PROBABILITY_COLUMN
    assert nodes.plotChartNode.GetNumberOfPlotSeriesNodes() == 1  # classifier rule: probabilities alone
    summary = {row["quantity"]: row for row in tables.readTable(nodes.summaryTableNode)}
    assert summary["positive_slice_count"]["value"] == str(int(np.sum(probabilities > 0.5)))
    assert summary["opacification_volume_ml"]["unit"] == "mL"


def _paint(logic, segmentation, mask):
    volumes.setSegmentArray(segmentation, "lesion", mask, logic.sourceVolume(segmentation))


def test_edit_then_update_recomputes_every_table(app, logic, dicom_case, phantom):
    volume, nodes, _ = dicom_case
    segmentation = nodes.segmentationNode
    voxel_ml = phantom.voxel_ml

    # erase everything the engine found, paint one block inside the right lung
    axial_block = np.zeros_like(phantom.lesion_mask)
    z, y, x = np.nonzero(phantom.lungs == 1)
    cz, cy, cx = int(np.median(z)), int(np.median(y)), int(np.median(x))
    axial_block[cz - 1 : cz + 2, cy - 2 : cy + 2, cx - 2 : cx + 3] = 1
    assert np.all(phantom.lungs[axial_block > 0] == 1)
    _paint(logic, segmentation, _original_grid(phantom, axial_block))
    assert logic.isEdited(segmentation)
    logic.updateResults(segmentation)
    summary = {row["quantity"]: row["value"] for row in tables.readTable(nodes.summaryTableNode)}
    assert float(summary["opacification_volume_ml"]) == pytest.approx(60 * voxel_ml, rel=1e-3)
    assert summary["lesion_count"] == "1" and summary["segmentation"] == "edited"
    assert float(summary["opacification_volume_ml_right"]) == pytest.approx(60 * voxel_ml, rel=1e-3)
    assert float(summary["opacification_volume_ml_left"]) == 0.0
    (row,) = tables.readTable(nodes.lesionTableNode)
    assert (row["voxel_count"], row["lung_side"]) == (60, "right")
    slices = tables.readTable(nodes.sliceTableNode)
    areas = [r["opacification_area_px"] for r in slices]
    assert areas == [20 if cz - 1 <= k <= cz + 1 else 0 for k in range(len(slices))]

    # now paint exactly the phantom's lesions (erasing the block): tables must match the truth.
    # This time the way the Slicer widget updates: quantification in a worker thread, tables after.
    _paint(logic, segmentation, _original_grid(phantom, phantom.lesion_mask))
    task = logic.startUpdateResults(segmentation)
    logic.finishUpdateResults(task)  # waits for the worker
    assert task.done
    rows = tables.readTable(nodes.lesionTableNode)
    truth = sorted(lesion.voxel_volume_ml for lesion in phantom.lesions)
    assert sorted(r["volume_ml"] for r in rows) == pytest.approx(truth, rel=1e-4)
    assert sorted(r["lung_side"] for r in rows) == sorted(lesion.side for lesion in phantom.lesions)
    summary = {row["quantity"]: row["value"] for row in tables.readTable(nodes.summaryTableNode)}
    assert float(summary["opacification_volume_ml"]) == pytest.approx(
        phantom.lesion_mask.sum() * voxel_ml, rel=1e-3
    )
    # % of lung uses the lung segments (jcs.lung on the CT), which are close to the phantom's lungs
    lung_ml = float(summary["lung_volume_ml"])
    assert lung_ml == pytest.approx(np.count_nonzero(phantom.lungs) * voxel_ml, rel=0.1)
    expected_percent = 100.0 * float(summary["opacification_volume_ml"]) / lung_ml
    assert float(summary["opacification_percent"]) == pytest.approx(expected_percent, rel=1e-3)
    # the engine's per-slice probabilities survive the update (results.json rows: index, probability)
    engine_probabilities = [row.probability for row in nodes.results.case.slices]
    assert tables.columnValues(nodes.sliceTableNode, tables.PROBABILITY_COLUMN) == pytest.approx(
        engine_probabilities, abs=1e-5
    )

    # clicking a lesion row centres the views on it
    # clicking a lesion row centres the views on its centroid (LPS in the table, RAS in the scene)
    red = app.scene.GetFirstNodeByClass("vtkMRMLSliceNode")
    row = tables.readTable(nodes.lesionTableNode)[0]
    ras = logic.jumpToLesion(segmentation, 0)
    assert ras == pytest.approx(
        (-row["centroid_lps_x_mm"], -row["centroid_lps_y_mm"], row["centroid_lps_z_mm"])
    )
    assert red.GetSliceOffset() == pytest.approx(ras[2], abs=1e-3)
    # clicking a slice row or plot point shows that axial slice
    logic.jumpToSlice(volume, 3)
    assert red.GetSliceOffset() == pytest.approx(logic.axialSliceCenter(volume, 3)[2], abs=1e-3)
    assert logic.axialSliceCenter(volume, 3)[2] == pytest.approx(
        tables.readTable(nodes.sliceTableNode)[3]["position_z_mm"], abs=1e-3
    )


def test_export_seg_and_sr_validates_and_reads_back(logic, dicom_case, dicom_files, phantom, tmp_path):
    volume, nodes, _ = dicom_case
    segmentation = nodes.segmentationNode
    _paint(logic, segmentation, _original_grid(phantom, phantom.lesion_mask))
    exported = logic.exportDicomSeg(segmentation, tmp_path)  # sources: the files the volume was read from

    assert dciodvfy_errors(exported.seg_path) in ([], None)
    assert dciodvfy_errors(exported.sr_path) in ([], None)
    seg = hd.seg.segread(exported.seg_path)
    description = seg.SegmentSequence[0]
    assert description.SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == "112033"
    assert description.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert description.SegmentAlgorithmName == "JCS Diagnosis"

    sources = [pydicom.dcmread(path, stop_before_pixels=True) for path in dicom_files]
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    assert {
        r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    } <= set(uids)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])[..., 0]
    # dicom_writer writes the axial grid in slice order (file k = axial slice k)
    assert np.array_equal(pixels.astype(np.uint8), phantom.lesion_mask.astype(np.uint8))

    sr = hd.sr.srread(exported.sr_path)
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    referenced = group.referenced_segment
    assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
    assert list(referenced.referenced_segment_numbers) == [1]
    assert referenced.source_series_for_segmentation.value == sources[0].SeriesInstanceUID
    summary = {row["quantity"]: row["value"] for row in tables.readTable(nodes.summaryTableNode)}
    measurements = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
    voxel_ml = float(np.prod(phantom.image.GetSpacing())) / 1000
    assert measurements["Volume"] == (pytest.approx(phantom.lesion_mask.sum() * voxel_ml), "ml")
    assert measurements["Lesion volume within the lungs"] == (
        pytest.approx(float(summary["opacification_volume_ml"]), rel=1e-5),
        "ml",
    )
    percent = measurements["Lesion volume as percentage of lung volume"]
    assert percent == (pytest.approx(float(summary["opacification_percent"]), rel=1e-5), "%")
    assert measurements["Number of lesions"][0] == len(phantom.lesions)
    assert measurements["Number of COVID-19 positive slices"][0] == float(summary["positive_slice_count"])
    threshold = measurements["COVID-19 positive slice threshold (positive case above it)"]
    assert threshold == (float(summary["threshold"]), "{slices}")
    (reading,) = group.get_qualitative_evaluations()
    assert reading.name.meaning == "Automated COVID-19 case reading"
    expected = ("10828004", "Positive") if summary["positive"] == "yes" else ("260385009", "Negative")
    assert (reading.value.value, reading.value.meaning, reading.value.scheme_designator) == (*expected, "SCT")


def test_nrrd_input_export_needs_sources_and_rerun_keeps_edits(app, logic, weights, tmp_path):
    # a thin phantom in a flipped/permuted (non-axial-LPS) geometry, loaded from NRRD
    thin = make_chest_phantom(
        shape=(8, 96, 96), spacing=(5.0, 1.5, 1.5), direction=(-1, 0, 0, 0, 0, -1, 0, -1, 0)
    )
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(thin.image, str(path))
    volume = app.volumes_logic.AddArchetypeVolume(str(path), "phantom CT (NRRD)")
    assert np.array_equal(volumes.arrayFromVolume(volume), sitk.GetArrayFromImage(thin.image))
    # classification only (no positive case below 1000 positive slices): the segmenter is skipped
    options = {
        "device": "cpu",
        "segment_policy": "positive-only",
        "threshold": 1000,
        "timeout": 300,
        **weights,
    }
    nodes = logic.diagnose(volume, **options)
    assert nodes.results.case.case.segmented is False and not logic.lesionMask(nodes.segmentationNode).any()
    assert np.allclose(volumes.ijkToRasMatrix(nodes.heatmapNode), volumes.ijkToRasMatrix(volume))
    assert nodes.sliceTableNode.GetNumberOfRows() == 8  # axial slices, whatever the stored orientation
    with pytest.raises(ValueError, match="not loaded from DICOM"):
        logic.exportDicomSeg(nodes.segmentationNode, tmp_path / "out")

    # the radiologist edits, then runs Diagnose again: new nodes, the edit is untouched
    edited = np.zeros_like(logic.lesionMask(nodes.segmentationNode))
    edited[tuple(slice(n // 3, n // 3 + 2) for n in edited.shape)] = 1
    _paint(logic, nodes.segmentationNode, edited)
    again = logic.diagnose(volume, **options)
    assert again.segmentationNode.GetID() != nodes.segmentationNode.GetID()
    assert again.heatmapNode.GetID() != nodes.heatmapNode.GetID()
    assert again.summaryTableNode.GetID() != nodes.summaryTableNode.GetID()
    assert np.array_equal(logic.lesionMask(nodes.segmentationNode), edited)
    assert logic.isEdited(nodes.segmentationNode) and not logic.isEdited(again.segmentationNode)
    # deterministic engine: the same input gives the same slice probabilities
    assert tables.columnValues(again.sliceTableNode, tables.PROBABILITY_COLUMN) == pytest.approx(
        tables.columnValues(nodes.sliceTableNode, tables.PROBABILITY_COLUMN)
    )


def test_export_from_a_source_folder(logic, dicom_case, dicom_files, tmp_path):
    volume, nodes, _ = dicom_case
    exported = logic.exportDicomSeg(nodes.segmentationNode, tmp_path, sourceDicomDir=dicom_files[0].parent)
    assert len(exported.source_sop_instance_uids) == len(dicom_files)
    with pytest.raises(FileNotFoundError):
        logic.exportDicomSeg(nodes.segmentationNode, tmp_path, sourceDicomDir=tmp_path / "missing")


def test_export_finds_sources_through_the_dicom_database(app, logic, dicom_case, dicom_files, tmp_path):
    # what Slicer's DICOM plugin records: the instance UIDs on the volume's subject hierarchy item
    volume, nodes, _ = dicom_case
    by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): str(p) for p in dicom_files}
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(app.scene)
    item = sh.GetItemByDataNode(volume) or sh.CreateItem(sh.GetSceneItemID(), volume)
    sh.SetItemAttribute(item, "DICOM.instanceUIDs", " ".join(by_uid))
    asked = []
    logic.dicomFileForInstance = lambda uid: asked.append(uid) or by_uid[uid]
    try:
        exported = logic.exportDicomSeg(nodes.segmentationNode, tmp_path)
    finally:
        logic.dicomFileForInstance = None
        sh.RemoveItemAttribute(item, "DICOM.instanceUIDs")
    assert sorted(asked) == sorted(by_uid)
    assert sorted(exported.source_sop_instance_uids) == sorted(by_uid)


def test_scene_save_and_reload_keeps_everything(app, logic, dicom_case, tmp_path):
    volume, nodes, _ = dicom_case
    mask = logic.lesionMask(nodes.segmentationNode)
    heat = volumes.arrayFromVolume(nodes.heatmapNode)
    lesion_rows = tables.readTable(nodes.lesionTableNode)
    assert app.app_logic.SaveSceneToSlicerDataBundleDirectory(str(tmp_path), None)

    reloaded = SlicerApp()
    reloaded.scene.SetURL(str(next(tmp_path.glob("*.mrml"))))
    assert reloaded.scene.Import()
    logic2 = JCSDiagnosisSceneLogic(reloaded.app_logic)
    segmentation = reloaded.scene.GetNodeByID(nodes.segmentationNode.GetID())
    assert segmentation is not None
    nodes2 = logic2.resultNodes(segmentation)
    assert np.array_equal(logic2.lesionMask(segmentation), mask)
    assert logic2.isEdited(segmentation) == logic.isEdited(nodes.segmentationNode)
    assert np.allclose(volumes.arrayFromVolume(nodes2.heatmapNode), heat)
    assert nodes2.heatmapNode.GetDisplayNode().GetColorNode().GetName() == display.HEATMAP_COLOR_NAME
    assert np.allclose(volumes.ijkToRasMatrix(nodes2.volumeNode), volumes.ijkToRasMatrix(volume))
    assert "DCM^112033" in segmentation.GetSegmentation().GetSegment("lesion").GetTerminology()
    rows2 = tables.readTable(nodes2.lesionTableNode)
    assert [r["voxel_count"] for r in rows2] == [r["voxel_count"] for r in lesion_rows]
    assert nodes2.lesionTableNode.GetColumnUnitLabel("volume_ml") == "mL"
    assert nodes2.plotChartNode.GetNthPlotSeriesNode(0).GetTableNodeID() == nodes2.sliceTableNode.GetID()
    logic2.updateResults(segmentation)  # the reloaded result stays editable/updatable


def test_cancel_stops_the_engine_and_adds_nothing(app, logic, weights, dicom_case):
    volume = dicom_case[0]
    before = app.scene.GetNumberOfNodes()
    run = logic.startDiagnosis(volume, device="cpu", **weights)
    run.process.cancel()
    with pytest.raises(EngineError, match="cancelled"):
        run.process.wait(timeout=60)
    assert run.process.poll() is not None
    assert app.scene.GetNumberOfNodes() == before
    shutil.rmtree(run.workDir, ignore_errors=True)


def test_segmenter_rule_is_read_again_on_the_edited_segmentation(
    app, logic, weights, dicom_files, phantom, tmp_path
):
    """Under the segmenter rule an edit changes the evidence: Update results re-applies the rule to the
    edited segmentation (summary and scene), and the AI's reading is kept beside it."""
    from jcs.decision import slice_lung_fraction
    from jcs.wording import edited_reading

    volume = _load_dicom(app, dicom_files)
    nodes = logic.diagnose(
        volume,
        device="cpu",
        segment_policy="always",
        decision="segmenter",
        threshold=2,
        timeout=300,
        **weights,
    )
    segmentation = nodes.segmentationNode
    engine = logic.engineReading(segmentation)
    assert (engine.case.decision, engine.case.min_lung_fraction, engine.case.threshold) == (
        "segmenter",
        0.02,
        2,
    )
    assert engine.case.positive_slice_count == nodes.results.case.case.positive_slice_count
    assert engine.notes == nodes.results.case.notes  # kept with the segmentation for later updates
    ai_positive = nodes.results.case.case.positive
    # the chart also plots the rule's evidence, from the slice table (so it follows each update)
    share = nodes.plotChartNode.GetNthPlotSeriesNode(1)
    assert (share.GetTableNodeID(), share.GetYColumnName()) == (
        nodes.sliceTableNode.GetID(),
        "opacified_lung_fraction",
    )

    # the radiologist's segmentation: exactly the phantom's lesions
    _paint(logic, segmentation, _original_grid(phantom, phantom.lesion_mask))
    updated = logic.updateResults(segmentation)
    fractions = np.array(tables.columnValues(nodes.sliceTableNode, "opacified_lung_fraction"))
    truth = slice_lung_fraction(phantom.lesion_mask, phantom.lungs)  # jcs.lung's lungs are close to these
    assert fractions == pytest.approx(truth, abs=0.01)
    reading = updated.results.reading
    assert reading.positive_slice_count == int((fractions > 0.02).sum())
    assert abs(reading.positive_slice_count - int((truth > 0.02).sum())) <= 1
    assert reading.positive == (reading.positive_slice_count > 2) and reading.positive
    summary = {row["quantity"]: row["value"] for row in tables.readTable(nodes.summaryTableNode)}
    assert summary["current_positive_slice_count"] == str(reading.positive_slice_count)
    assert summary["current_positive"] == "yes"
    assert summary["positive"] == ("yes" if ai_positive else "no")  # the AI's reading is not rewritten
    assert updated.results.edited
    assert f"Edited segmentation: {reading.positive_slice_count} slices over 2 %" in edited_reading(reading)
    assert updated.results.case.notes == engine.notes

    # the SR of the edited segmentation carries both readings, the AI's and the rule's on the edit
    exported = logic.exportDicomSeg(segmentation, tmp_path / "edited")
    assert dciodvfy_errors(exported.sr_path) in ([], None)
    (group,) = hd.sr.srread(exported.sr_path).content.get_volumetric_roi_measurement_groups()
    readings = {e.name.value: e.value.meaning for e in group.get_qualitative_evaluations()}
    assert readings == {"CASEREAD": "Positive" if ai_positive else "Negative", "CASEREADREV": "Positive"}
    counts = {m.name.value: m.value for m in group.get_measurements()}
    assert counts["NPOSSLICEREV"] == reading.positive_slice_count
    assert counts["NPOSSLICE"] == engine.case.positive_slice_count

    # everything erased: no slice counts, negative by the rule; the AI's reading still stands
    _paint(logic, segmentation, np.zeros_like(logic.lesionMask(segmentation)))
    cleared = logic.updateResults(segmentation).results.reading
    assert (cleared.positive_slice_count, cleared.positive) == (0, False)
    summary = {row["quantity"]: row["value"] for row in tables.readTable(nodes.summaryTableNode)}
    assert (summary["current_positive_slice_count"], summary["current_positive"]) == ("0", "no")
    assert summary["positive"] == ("yes" if ai_positive else "no")
