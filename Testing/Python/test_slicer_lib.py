"""JCSDiagnosisLib pieces on slicer-core: geometry, terminology, colours, tables, loader, process.

Real MRML nodes from slicer-core with trame-slicer's application logic (segmentation converters
registered), no mocks. The whole radiologist flow with the engine is in test_slicer_flow.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install '.[slicer,viewer]')")
SlicerApp = pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed").SlicerApp

import slicer  # noqa: E402
import vtk  # noqa: E402
from jcs import terminology  # noqa: E402
from jcs.pipeline import CaseResult, SliceRow  # noqa: E402
from jcs.wording import classifier_aside, edited_reading  # noqa: E402
from JCSDiagnosisLib import display, tables, volumes  # noqa: E402
from JCSDiagnosisLib.engine import DiagnosisRun, inputProblem  # noqa: E402
from JCSDiagnosisLib.logic import JCSDiagnosisSceneLogic  # noqa: E402
from JCSDiagnosisLib.nodes import DiagnosisResults, isDiagnosisResult, maskSha256  # noqa: E402
from JCSDiagnosisLib.process import EngineError, EngineProcess, parseProgress  # noqa: E402
from JCSDiagnosisLib.reading import lesionRowsShown, plannedRule, readingLines  # noqa: E402
from JCSDiagnosisLib.tables import sliceRecords  # noqa: E402
from JCSDiagnosisLib.update import BackgroundQuantification, currentReading  # noqa: E402

pytestmark = pytest.mark.slicer
REFERENCE_TERMINOLOGY = Path(__file__).resolve().parents[3] / "shared" / "reference" / "terminology.md"


@pytest.fixture(scope="module")
def app():
    return SlicerApp()


@pytest.fixture()
def scene_logic(app):
    app.scene.Clear(0)
    return JCSDiagnosisSceneLogic(app.app_logic)


def _ct_node(scene, shape=(12, 40, 48), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1), name="ct"):
    hu = np.full(shape, -1000, np.int16)
    hu[:, 5:35, 4:44] = 30
    hu[2:10, 10:30, 8:20] = -850
    hu[2:10, 10:30, 28:40] = -850
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.8, 0.7, 2.5))
    image.SetOrigin((-20.0, 15.0, -40.0))
    image.SetDirection(direction)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    volumes.setVolumeArray(node, hu, volumes.ijkToRasFromImage(image))
    return node, image


def test_lib_imports_without_the_engine_dependencies():
    """The module's GUI imports the Lib before 'Diagnose' installs the engine's packages (a fresh Slicer
    has no PyTorch, scipy, scikit-image, highdicom or safetensors): nothing of these at import time."""
    blocked = ("torch", "scipy", "skimage", "highdicom", "safetensors")
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ImportError(f'{name} is not installed')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import JCSDiagnosisLib.logic, JCSDiagnosisLib.reading\n"
        "from JCSDiagnosisLib.engine import inputProblem\n"
        "print(inputProblem(None))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("Select a CT volume.")


def test_volume_geometry_round_trip(scene_logic):
    node, image = _ct_node(scene_logic.scene)
    back = volumes.imageFromVolume(node)
    assert back.GetSize() == image.GetSize()
    assert np.allclose(back.GetOrigin(), image.GetOrigin())
    assert np.allclose(back.GetSpacing(), image.GetSpacing())
    assert np.allclose(back.GetDirection(), image.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    # RAS = diag(-1,-1,1) LPS: the first voxel of an LPS origin (-20, 15, -40) is at RAS (20, -15, -40)
    assert np.allclose(volumes.ijkToRasMatrix(node)[:3, 3], (20.0, -15.0, -40.0))


def test_segment_array_round_trip_on_rotated_grid(scene_logic):
    node, _ = _ct_node(scene_logic.scene)
    segmentation = scene_logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node)
    segmentation.GetSegmentation().AddEmptySegment("a", "a", [1, 0, 0])
    mask = np.zeros((12, 40, 48), np.uint8)
    mask[3:6, 12:20, 30:33] = 1
    mask[11, 39, 47] = 1  # corner voxel: extents must not be cropped or shifted
    volumes.setSegmentArray(segmentation, "a", mask, node)
    assert np.array_equal(volumes.segmentArray(segmentation, "a", node), mask)


def test_input_validation_reasons(scene_logic):
    scene = scene_logic.scene
    assert inputProblem(None) == "Select a CT volume."
    node, _ = _ct_node(scene)
    assert inputProblem(node) is None
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "label")
    volumes.setVolumeArray(label, np.zeros((4, 20, 20), np.uint8), np.eye(4))
    assert "not a scalar (CT) volume" in inputProblem(label)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    assert "no voxel data" in inputProblem(empty)
    constant = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "constant")
    volumes.setVolumeArray(constant, np.full((4, 20, 20), 5, np.int16), np.eye(4))
    assert "constant" in inputProblem(constant)
    photo = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "photo")
    volumes.setVolumeArray(photo, np.arange(4 * 20 * 20, dtype=np.uint16).reshape(4, 20, 20) % 256, np.eye(4))
    assert "Hounsfield" in inputProblem(photo)
    tiny = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "tiny")
    volumes.setVolumeArray(tiny, np.linspace(-1000, 100, 4 * 8 * 8).reshape(4, 8, 8), np.eye(4))
    assert "too small" in inputProblem(tiny)


def test_terminology_file_loads_and_matches_reference_codes(app):
    loaded = app.terminologies_logic.LoadTerminologyFromFile(str(terminology.TERMINOLOGY_FILE))
    assert loaded == "Segmentation category and type - JCS Diagnosis"
    lesion = terminology.lesion_spec()
    assert (lesion.category.scheme, lesion.category.value) == ("SCT", "49755003")
    assert (lesion.type.scheme, lesion.type.value) == ("DCM", "112033")
    assert lesion.type.meaning == "Abnormal opacity"
    assert lesion.region.value == "39607008"
    right, left = terminology.lung_specs()
    assert (right.label, right.type_modifier.value) == (1, "24028007")
    assert (left.label, left.type_modifier.value) == (2, "7771000")
    if REFERENCE_TERMINOLOGY.is_file():
        text = REFERENCE_TERMINOLOGY.read_text()
        assert "| Abnormal opacity | DCM | 112033 |" in text and "| Lung | SCT | 39607008 |" in text
    entry = slicer.vtkSlicerTerminologyEntry()
    assert app.terminologies_logic.DeserializeTerminologyEntry(lesion.terminology_entry(), entry)
    assert entry.GetTypeObject().GetCodeValue() == "112033"
    assert entry.GetCategoryObject().GetCodeValue() == "49755003"
    assert entry.GetRegionObject().GetCodeValue() == "39607008"


def test_heatmap_colour_table_is_perceptual_and_transparent_when_cold(scene_logic):
    colors = display.heatmapColors()
    luminance = colors[:, :3] @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > 0), "inferno luminance must rise monotonically"
    assert colors[0, 3] == 0.0 and colors[-1, 3] == 1.0
    node = display.heatmapColorNode(scene_logic.scene)
    assert display.heatmapColorNode(scene_logic.scene) is node  # created once per scene
    assert node.GetNumberOfColors() == 256
    rgba = [0.0] * 4
    node.GetColor(255, rgba)
    assert np.allclose(rgba, colors[255], atol=1e-6)


def test_fill_table_units_and_plot(scene_logic):
    scene = scene_logic.scene
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", "lesions")
    records = [
        {"label": 1, "volume_ml": 1.25, "side": "right", "mean_hu": -420.5},
        {"label": 2, "volume_ml": 0.5, "side": "left", "mean_hu": -300.0},
    ]
    tables.fillTable(node, records)
    assert node.GetNumberOfRows() == 2
    assert node.GetColumnUnitLabel("volume_ml") == "mL"
    assert node.GetColumnUnitLabel("mean_hu") == "HU"
    assert node.GetColumnUnitLabel("label") == ""
    assert tables.readTable(node) == records
    slices = scene.AddNewNodeByClass("vtkMRMLTableNode", "slices")
    records = sliceRecords(
        [
            SliceRow(index=0, probability=0.2, positive=False),
            SliceRow(index=1, probability=0.9, positive=True),
        ]
    )
    tables.fillTable(slices, records)
    assert np.allclose(tables.columnValues(slices, tables.PROBABILITY_COLUMN), [0.2, 0.9])
    chart = tables.makeProbabilityPlot(scene, slices, "case")
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetTableNodeID() == slices.GetID()
    assert (series.GetXColumnName(), series.GetYColumnName()) == ("slice_index", "classifier_probability")


def _fake_engine_outputs(out: Path, image: sitk.Image, lesion: np.ndarray, lungs: np.ndarray | None) -> dict:
    """Files in the layout of `jcs diagnose --out` (engine CLI contract), to test the loader alone."""
    out.mkdir(parents=True)
    heat = np.linspace(0, 1, lesion.size, dtype=np.float32).reshape(lesion.shape)
    for name, array in (("heatmap", heat), ("lesions", lesion.astype(np.uint8))) + (
        (("lungs", lungs.astype(np.uint8)),) if lungs is not None else ()
    ):
        written = sitk.GetImageFromArray(array)
        written.CopyInformation(image)
        sitk.WriteImage(written, str(out / f"{name}.nrrd"))
    results = _case_result(
        {"positive": True, "positive_slice_count": 3, "threshold": 2},
        summary={"lesion_volume_ml": 0.5, "lesion_count": 1},
        lesions=[{"lesion_id": 1, "volume_ml": 0.5, "voxel_count": 40, "first_slice": 4, "last_slice": 5}],
    ).to_json()
    (out / "results.json").write_text(json.dumps(results))
    return results


def _case_result(
    case: dict, slice_count: int = 12, notes: tuple[str, ...] = (), summary: dict | None = None, lesions=()
) -> CaseResult:
    """A reading in the results.json layout (`jcs.pipeline.CaseResult`) with these case fields."""
    decision = {
        "decision": "classifier",
        "decision_rule": "positive when positive_slice_count > threshold",
        "classifier_positive_slice_count": case.get("positive_slice_count", 0),
        "suggested_threshold": 2,
        "segmented": True,
        "segment_policy": "always",
        **case,
    }
    return CaseResult.from_json(
        {
            "engine_version": "0.1.0",
            "input": {
                "path": "ct.nrrd",
                "is_hu": True,
                "size": [48, 40, slice_count],
                "spacing_mm": [0.8, 0.7, 2.5],
                "origin_mm": [-20.0, 15.0, -40.0],
                "direction": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                "series_instance_uid": None,
                "skipped_series": [],
                "axial_slices": slice_count,
            },
            "case": decision,
            "slices": [
                {"index": z, "probability": z / slice_count, "positive": z > slice_count // 2}
                for z in range(slice_count)
            ],
            "weights": {"classifier": {"name": "c", "sha256": "ab" * 32}},
            "device": "cpu",
            "precision": "fp32",
            "notes": list(notes),
            "summary": summary or {},
            "lesions": list(lesions),
        }
    )


class _FinishedProcess:
    def output(self) -> str:
        return ""


def test_load_results_builds_linked_nodes(scene_logic, tmp_path):
    scene = scene_logic.scene
    node, image = _ct_node(scene)
    lesion = np.zeros((12, 40, 48), np.uint8)
    lesion[4:6, 15:20, 10:14] = 1
    lungs = np.zeros_like(lesion)
    lungs[2:10, 10:30, 8:20] = 1
    lungs[2:10, 10:30, 28:40] = 2
    results = _fake_engine_outputs(tmp_path / "out", image, lesion, lungs)
    run = DiagnosisRun(node, _FinishedProcess(), tmp_path, "ct")
    nodes = scene_logic.loadResults(run)

    assert np.allclose(volumes.ijkToRasMatrix(nodes.heatmapNode), volumes.ijkToRasMatrix(node))
    heat_display = nodes.heatmapNode.GetDisplayNode()
    assert heat_display.GetColorNode().GetAttribute(display.HEATMAP_COLOR_ATTRIBUTE) == "1"
    assert not heat_display.GetAutoWindowLevel()
    assert (heat_display.GetWindowLevelMin(), heat_display.GetWindowLevelMax()) == (0.0, 1.0)

    segmentation = nodes.segmentationNode
    reference_role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    assert segmentation.GetNodeReference(reference_role) is node
    assert segmentation.GetSegmentation().GetSourceRepresentationName() == "Binary labelmap"
    segment = segmentation.GetSegmentation().GetSegment("lesion")
    assert segment.GetName() == "COVID-19 lesions"
    assert "DCM^112033^Abnormal opacity" in segment.GetTerminology()
    assert np.allclose(segment.GetColor(), terminology.lesion_spec().color)
    assert np.array_equal(scene_logic.lesionMask(segmentation), lesion)
    assert not segmentation.GetDisplayNode().GetSegmentVisibility("right_lung")
    assert segmentation.GetDisplayNode().GetSegmentVisibility("lesion")
    assert np.array_equal(scene_logic.lungLabels(segmentation), lungs)
    assert segmentation.GetAttribute("JCSDiagnosis.automaticLesionSha256") == maskSha256(lesion)
    assert not scene_logic.isEdited(segmentation)

    slices = tables.readTable(nodes.sliceTableNode)
    assert [row["slice_index"] for row in slices] == list(range(12))
    expected = [s["probability"] for s in results["slices"]]
    assert np.allclose([row["classifier_probability"] for row in slices], expected)
    summary = {row["quantity"]: row["value"] for row in tables.readTable(nodes.summaryTableNode)}
    assert summary["lesion_volume_ml"] == "0.5" and summary["positive"] == "yes"
    assert nodes.plotChartNode.GetNthPlotSeriesNode(0).GetTableNodeID() == nodes.sliceTableNode.GetID()
    assert isDiagnosisResult(segmentation) and not isDiagnosisResult(None)
    assert scene_logic.engineReading(segmentation).to_json() == results  # kept for updates and reloads
    assert not isDiagnosisResult(scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "hand-made"))
    again = scene_logic.resultNodes(segmentation)
    assert again.heatmapNode is nodes.heatmapNode and again.lesionTableNode is nodes.lesionTableNode
    for composite in display.sliceCompositeNodes(scene):
        assert composite.GetForegroundVolumeID() == nodes.heatmapNode.GetID()


def test_loader_rejects_outputs_on_another_grid(scene_logic, tmp_path):
    node, image = _ct_node(scene_logic.scene)
    other = sitk.Image(image)
    other.SetOrigin((0.0, 0.0, 0.0))
    _fake_engine_outputs(tmp_path / "out", other, np.zeros((12, 40, 48), np.uint8), None)
    with pytest.raises(EngineError, match="geometry"):
        scene_logic.loadResults(DiagnosisRun(node, _FinishedProcess(), tmp_path, "ct"))


def test_axial_slice_centre_follows_inferior_to_superior(scene_logic):
    node, image = _ct_node(scene_logic.scene, direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    first = scene_logic.axialSliceCenter(node, 0)
    last = scene_logic.axialSliceCenter(node, 11)
    assert first[2] < last[2]  # axial index 0 is the most inferior slice
    assert np.isclose(last[2] - first[2], 11 * 2.5)
    with pytest.raises(IndexError):
        scene_logic.axialSliceCenter(node, 12)


def test_progress_lines_are_parsed():
    assert parseProgress('{"event": "progress", "stage": "classify", "fraction": 0.42}') == ("classify", 0.42)
    assert parseProgress('{"event": "progress", "stage": "segment", "fraction": 1.0}\r') == ("segment", 1.0)
    assert parseProgress("classifier: tiny-classifier (sha256 ba6f72f4b86c4b79, ...)") is None
    assert parseProgress('{"event": "note", "stage": "classify", "fraction": 0.5}') is None
    assert parseProgress('{"event": "progress", "stage": "classify", "fraction": "half"}') is None
    assert parseProgress('{"event": "progress", "stage": "classify"') is None  # cut short
    assert parseProgress("classify:  42%|####2     | 42/100") is None  # no more scraping of bar text


def test_cli_progress_bar_shows_no_rate_and_json_lines_parse(capsys):
    from jcs.cli import _Progress
    from jcs.options import ProgressStyle
    from jcs.pipeline import stage_progress

    bar = _Progress(ProgressStyle.BAR)
    stage_progress(bar)("classify", 0.5)  # half of the classify stage: 30 % of the run
    bar.close()
    lines = [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if line.strip()]
    assert lines and not any("/s" in line for line in lines), lines
    # what the module reads: `--progress json`, one JSON object per line on stdout, no bar on stderr
    json_lines = _Progress(ProgressStyle.JSON)
    stage_progress(json_lines)("classify", 0.5)
    json_lines.close()
    captured = capsys.readouterr()
    assert captured.err == ""
    assert ("classify", 0.3) in [parseProgress(line) for line in captured.out.splitlines()]


def test_cancel_kills_the_engine_process_tree(tmp_path):
    # A child that starts a grandchild, reports progress like the CLI and sleeps: cancel ends both.
    script = tmp_path / "engine.py"
    pid_file = tmp_path / "grandchild.pid"
    script.write_text(
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        'print(\'{"event": "progress", "stage": "classify", "fraction": 0.1}\', flush=True)\n'
        "time.sleep(60)\n"
    )
    process = EngineProcess([], python=sys.executable)
    process.command = [sys.executable, str(script)]
    process.start()
    for _ in range(200):
        if pid_file.exists() and process.fraction > 0:
            break
        time.sleep(0.05)
    assert (process.stage, process.fraction) == ("classify", pytest.approx(0.1))
    process.cancel()
    assert process.poll() is not None
    grandchild = int(pid_file.read_text())
    for _ in range(100):
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the grandchild process survived cancel")
    with pytest.raises(EngineError, match="cancelled"):
        process.check(process.poll())


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for init to reap it counts as ended)."""
    status = Path(f"/proc/{pid}/status")
    try:
        state = next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    except (FileNotFoundError, StopIteration):
        return False
    return "Z" not in state.split()[1]


def test_decision_basis_names_the_segmenter_rule() -> None:
    assert classifier_aside({"decision": "classifier", "positive_slice_count": 3}) == ""
    assert classifier_aside({}) == ""
    line = classifier_aside(
        {"decision": "segmenter", "min_lung_fraction": 0.02, "classifier_positive_slice_count": 7}
    )
    assert line == (
        "The classifier alone scores 7 slices over p = 0.5; with these weights it explains but does "
        "not decide."
    )


def test_reading_text_says_what_matters_and_words_notes_for_a_clinician() -> None:
    note = "179.8 mL of predicted opacification lay more than 10 mm from the lungs and was dropped"
    case = {
        "decision": "segmenter",
        "min_lung_fraction": 0.02,
        "threshold": 12,
        "positive": False,
        "positive_slice_count": 2,
        "classifier_positive_slice_count": 40,
    }
    lines = readingLines(DiagnosisResults(_case_result(case, slice_count=154, notes=(note,))))
    assert lines[0] == (
        "COVID-19 negative. 2 of 154 slices show opacification over 2 % of the lung; positive when more "
        "than 12 do."
    )
    assert lines[1].startswith("The classifier alone scores 40 slices")
    assert "dropped" not in lines[2] and "not lung lesions" in lines[2]
    # after a scene reload the engine info kept on the segmentation carries the same reading
    reading = _case_result(case, slice_count=154, notes=(note,))
    kept = readingLines(DiagnosisResults(CaseResult.from_json(reading.to_json())))
    assert kept == lines


def test_planned_rule_reads_the_bundled_card_before_diagnose(scene_logic) -> None:
    """What the module says before Diagnose is the engine's own choice from the card in the tree."""
    from jcs.decision import scaled_threshold
    from jcs.weights import default_weights, find_weights
    from jcs.wording import RuleWording

    node, image = _ct_node(scene_logic.scene)
    name = default_weights("classifier")
    if name is None:
        pytest.skip("no bundled classifier")
    card = find_weights(name).data
    rule = plannedRule(node)
    expected = RuleWording.from_card(card, has_segmenter=default_weights("segmenter") is not None)
    assert (rule.rule, rule.min_lung_fraction) == (expected.rule, expected.min_lung_fraction)
    assert rule.threshold == (expected.threshold or scaled_threshold(12, 2.5))
    assert (
        plannedRule(node, decision="classifier", threshold=9)
        .explanation()
        .startswith("These weights decide by the classifier rule (the paper's)")
    )
    assert "(T = 9)" in plannedRule(node, decision="classifier", threshold=9).explanation()


def test_results_show_lesion_surfaces_and_readable_lesion_rows(scene_logic, tmp_path) -> None:
    node, image = _ct_node(scene_logic.scene)
    lesion = np.zeros((12, 40, 48), np.uint8)
    lesion[4:7, 15:20, 10:14] = 1
    lungs = np.zeros_like(lesion)
    lungs[2:10, 10:30, 8:20] = 1
    lungs[2:10, 10:30, 28:40] = 2
    _fake_engine_outputs(tmp_path / "out", image, lesion, lungs)
    nodes = scene_logic.loadResults(DiagnosisRun(node, _FinishedProcess(), tmp_path, "ct"))
    segmentation = nodes.segmentationNode
    display.showSegments3D(segmentation, lungs=True)
    shown = segmentation.GetDisplayNode()
    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")
    surface = vtk.vtkPolyData()
    segmentation.GetClosedSurfaceRepresentation("lesion", surface)
    assert surface.GetNumberOfPoints() > 0
    assert shown.GetSegmentVisibility3D("lesion") and shown.GetSegmentVisibility3D("left_lung")
    assert not shown.GetSegmentVisibility2DFill("left_lung") and shown.GetSegmentOpacity3D("left_lung") < 0.5
    display.showSegments3D(segmentation, lesions=False)
    assert not shown.GetSegmentVisibility3D("lesion") and not shown.GetSegmentVisibility("left_lung")

    tables.fillTable(
        nodes.lesionTableNode,
        tables.lesionRecords(
            [
                {"voxel_count": 15, "lesion_id": 1, "volume_ml": 0.017},
                {"voxel_count": 4904, "lesion_id": 2, "volume_ml": 5.49},
            ]
        ),
    )
    names = [nodes.lesionTableNode.GetTable().GetColumnName(c) for c in range(3)]
    assert names == ["lesion_id", "volume_ml", "voxel_count"]  # the reader's columns first
    assert nodes.lesionTableNode.GetColumnTitle("volume_ml") == "Volume"
    assert nodes.lesionTableNode.GetColumnUnitLabel("volume_ml") == "mL"
    assert lesionRowsShown(nodes.lesionTableNode, 0.1) == [1]
    assert lesionRowsShown(nodes.lesionTableNode, 0.0) == [0, 1]


def test_slice_table_puts_the_rule_evidence_first() -> None:
    rows = [
        SliceRow.from_json(
            {"index": 0, "probability": 0.55, "positive": False, "opacified_lung_fraction": 0.001}
        )
    ]
    ruled = sliceRecords(rows, evidence="opacified_lung_fraction")
    assert list(ruled[0])[:3] == ["slice_index", "opacified_lung_fraction", "classifier_probability"]
    assert list(sliceRecords(rows)[0])[:2] == ["slice_index", "classifier_probability"]


def test_current_reading_reapplies_the_segmenter_rule() -> None:
    rows = [{"opacified_lung_fraction": f} for f in (0.0, 0.05, 0.021, 0.02, 0.3)]
    engine = {"decision": "segmenter", "min_lung_fraction": 0.02, "threshold": 2, "positive": False}
    reading = currentReading(_case_result(engine), rows)
    # 0.02 itself is not over the share
    assert (reading.positive_slice_count, reading.threshold, reading.positive) == (3, 2, True)
    assert currentReading(_case_result({**engine, "min_lung_fraction": 0.1}), rows).positive_slice_count == 1
    # an edit leaves the classifier rule's evidence alone
    assert currentReading(_case_result({**engine, "decision": "classifier"}), rows) is None
    unedited = readingLines(DiagnosisResults(_case_result(engine), edited=False, reading=reading))
    assert not any("Edited segmentation" in line for line in unedited)
    edited = readingLines(DiagnosisResults(_case_result(engine), edited=True, reading=reading))
    assert edited_reading(reading) in edited
    assert edited_reading(reading) == (
        "Edited segmentation: 3 slices over 2 % of the lung (threshold 2), COVID-19 positive by the same "
        "rule. The reading above is the AI's and is kept."
    )


def test_engine_notes_from_results_or_the_kept_engine_info() -> None:
    note = "12.0 mL of predicted opacification lay more than 10 mm from the lungs and was dropped"
    assert _case_result({}, notes=(note,)).notes == [note]
    kept = CaseResult.from_json(_case_result({}, notes=(note,)).to_json())  # kept on the segmentation
    assert kept.notes == [note]
    assert _case_result({}).notes == []


def test_background_quantification_hands_back_result_or_error() -> None:
    import threading

    release = threading.Event()

    class SlowJob:
        def run(self) -> str:
            release.wait(10)
            return "tables"

    class BrokenJob:
        def run(self) -> str:
            raise ValueError("lesion mask has the wrong shape")

    task = BackgroundQuantification(SlowJob())
    assert not task.done  # the caller's thread is free while the job runs
    with pytest.raises(TimeoutError):
        task.result(timeout=0.05)
    release.set()
    assert task.result(timeout=10) == "tables" and task.done
    broken = BackgroundQuantification(BrokenJob())
    with pytest.raises(ValueError, match="wrong shape"):
        broken.result(timeout=10)
