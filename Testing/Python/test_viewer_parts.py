"""Fast checks of the viewer's parts that need no browser: CLI, CT volume node, tables, chart."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("trame_slicer")
from phantoms import make_chest_phantom  # noqa: E402


@pytest.fixture(scope="module")
def scene():
    from trame_slicer.core import SlicerApp

    return SlicerApp().scene


def test_cli_defaults_to_loopback_and_rejects_conflicts(capsys):
    from JCSDiagnosisViewer.app import engine_options, parse_args

    args = parse_args([])
    assert (args.host, args.port, args.input, args.sample) == ("127.0.0.1", 8080, None, False)
    assert engine_options(parse_args(["--threshold", "10", "--segment", "always"])) == {
        "device": "auto",
        "segment_policy": "always",
        "decision": "auto",
        "threshold": 10,
    }
    assert engine_options(parse_args(["--decision", "classifier"]))["decision"] == "classifier"
    assert (args.min_lesion_ml, parse_args(["--min-lesion-ml", "0.5"]).min_lesion_ml) == (0.1, 0.5)
    for bad in (
        ["ct.nrrd", "--sample"],
        ["--port", "70000"],
        ["--segment", "sometimes"],
        ["--device", "tpu"],
        ["--decision", "vote"],
        ["--min-lesion-ml", "-1"],
    ):
        with pytest.raises(SystemExit):
            parse_args(bad)
    assert "not both" in capsys.readouterr().err


def test_cli_reports_a_missing_input_clearly(tmp_path, capsys):
    from JCSDiagnosisViewer.app import main

    assert main([str(tmp_path / "absent.nrrd"), "--port", "0"]) == 2
    message = capsys.readouterr().err
    assert message.startswith("jcs-viewer: ") and "absent.nrrd" in message


def test_cli_resolves_a_dicom_folder_and_a_file(tmp_path):
    from dicom_writer import write_image_series
    from JCSDiagnosisViewer.app import parse_args, resolve_input

    phantom = make_chest_phantom(shape=(16, 48, 48))
    write_image_series(phantom.image, tmp_path / "series")
    sitk.WriteImage(phantom.image, str(tmp_path / "chest.nii.gz"))
    from_dicom = resolve_input(parse_args([str(tmp_path / "series")]))
    from_file = resolve_input(parse_args([str(tmp_path / "chest.nii.gz")]))
    assert (from_dicom.name, from_dicom.dicom_dir) == ("series", tmp_path / "series")
    assert (from_file.name, from_file.dicom_dir) == ("chest", None)


def test_volume_node_keeps_voxels_and_geometry(scene):
    from jcs.io import CTVolume
    from JCSDiagnosisLib.volumes import imageFromVolume
    from JCSDiagnosisViewer.scene import WINDOW_PRESETS, add_volume_node, set_window

    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    phantom = make_chest_phantom(shape=(12, 48, 40), direction=direction, origin=(10.0, -20.0, 30.0))
    ct = CTVolume(image=phantom.image, is_hu=True, path=None, dicom_files=None)
    node = add_volume_node(scene, ct, "chest")
    back = imageFromVolume(node)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(phantom.image))
    np.testing.assert_allclose(back.GetDirection(), direction, atol=1e-9)
    np.testing.assert_allclose(back.GetOrigin(), (10.0, -20.0, 30.0))
    np.testing.assert_allclose(back.GetSpacing(), phantom.image.GetSpacing())
    set_window(node, "Mediastinum")
    display = node.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == WINDOW_PRESETS["Mediastinum"]
    assert not display.GetAutoWindowLevel()


def test_summary_table_node_is_readable_and_keeps_exact_values(scene):
    from JCSDiagnosisLib.tables import fillTable, readTable, summaryRecords

    node = scene.AddNewNodeByClass("vtkMRMLTableNode", "summary")
    summary = {
        "slice_count": 48,
        "opacification_volume_ml": 77.78416112518312,
        "bilateral": True,
        "positive": True,
        "severity_score_5lobe": None,
    }
    fillTable(node, summaryRecords(summary))
    rows = readTable(node)
    assert [row["section"] for row in rows] == [
        "Reading",
        "Opacification",
        "Opacification",
        "Severity scores",
        "Technical",
    ]
    volume = next(row for row in rows if row["quantity"] == "opacification_volume_ml")
    assert (volume["label"], volume["shown"], volume["unit"]) == ("Opacification in the lungs", "77.8", "mL")
    assert volume["value"] == "77.78416112518312"  # exact, for scripts, the SR and the downloads
    assert {row["quantity"]: row["value"] for row in rows} == {  # every exact value, typed values as text
        "slice_count": "48",
        "opacification_volume_ml": "77.78416112518312",
        "bilateral": "yes",
        "positive": "yes",
        "severity_score_5lobe": "",
    }
    titles = [node.GetColumnTitle(node.GetTable().GetColumnName(c)) for c in range(6)]
    assert titles == ["Section", "Measure", "Value", "Unit", "Field", "Exact value"]


def test_probability_chart_marks_positive_slices_and_the_current_one():
    from JCSDiagnosisViewer.scene import slice_chart_svg

    svg = slice_chart_svg([0.1, 0.9, 0.6, 0.2], current=2, width=400)
    bars = re.findall(r'<rect x="([\d.]+)"[^>]*fill="(#[0-9a-f]+)"', svg)
    assert [float(x) for x, _ in bars] == [0.0, 100.0, 200.0, 300.0]
    assert [colour for _, colour in bars] == ["#5b8fd9", "#e8504a", "#e8504a", "#5b8fd9"]
    assert 'x1="250.00"' in svg and "slice 1: p=0.900" in svg
    assert "<rect" not in slice_chart_svg([])


def test_chart_plots_the_evidence_of_the_decision_rule():
    from JCSDiagnosisViewer.scene import slice_chart

    probabilities = [0.9, 0.8, 0.1]
    slices = [{"opacified_lung_fraction": f} for f in (0.01, 0.05, 0.5)]
    paper = slice_chart({"decision": "classifier"}, slices, probabilities)
    assert paper.values.tolist() == probabilities and paper.legend == "red: counted · dashed: p = 0.5"
    ruled = slice_chart({"decision": "segmenter", "min_lung_fraction": 0.02}, slices, probabilities)
    assert ruled.values.tolist() == [0.01, 0.05, 0.5] and (ruled.cutoff, ruled.top) == (0.02, 0.1)
    assert (
        "opacified share of the lung" in ruled.title
        and ruled.legend == "red: counted · dashed: 2 % of the lung"
    )
    svg = ruled.svg(current=0)
    colours = re.findall(r'fill="(#[0-9a-f]+)"><title>', svg)
    assert colours == ["#5b8fd9", "#e8504a", "#e8504a"]  # red: counted by the rule
    heights = [float(h) for h in re.findall(r' height="([\d.]+)" fill=', svg)]
    assert heights[2] == pytest.approx(116.0) and heights[1] == pytest.approx(58.0)  # 0.5 clipped at 5x
    assert "slice 1: share=0.050" in svg
    # older results without the per-slice share fall back to the probabilities
    older = slice_chart({"decision": "segmenter"}, [{}, {}, {}], probabilities)
    assert older.legend == "red: counted · dashed: p = 0.5" and "COVID-19 probability" in older.title


def test_viewer_loads_a_case_and_says_why_diagnose_is_blocked(monkeypatch):
    from jcs.io import CTVolume
    from JCSDiagnosisViewer import viewer as viewer_module
    from JCSDiagnosisViewer.logic import case as case_logic
    from trame.app import get_server

    monkeypatch.setattr(case_logic, "default_weights", lambda kind: None)
    phantom = make_chest_phantom(shape=(16, 48, 48))
    ct = CTVolume(image=phantom.image, is_hu=True, path=None, dicom_files=None)
    app = viewer_module.JCSViewer(get_server("viewer-parts-no-weights"))
    app.load(viewer_module.ViewerInput(ct=ct, name="chest", details="chest phantom"))
    case = app.case.data
    assert (case.name, case.loaded, case.is_dicom) == ("chest", True, False)
    assert "48 x 48 x 16 voxels" in case.footer
    assert case.blocker.startswith("No classifier weights were named")
    positions = app.navigation.slice_positions
    assert len(positions) == 16 and np.all(np.diff(positions) > 0)

    named = viewer_module.JCSViewer(get_server("viewer-parts-named"), options={"classifier": "tiny"})
    named.load(viewer_module.ViewerInput(ct=ct, name="chest"))
    assert named.case.data.blocker == ""
    flat = CTVolume(image=sitk.Image(48, 48, 4, sitk.sitkInt16), is_hu=True, path=None, dicom_files=None)
    named.load(viewer_module.ViewerInput(ct=flat, name="flat"))
    assert "constant" in named.case.data.blocker


def test_viewer_offers_dicom_seg_only_for_a_series_it_can_reference(monkeypatch, tmp_path):
    import pydicom
    from dicom_writer import write_image_series
    from JCSDiagnosisViewer import viewer as viewer_module
    from JCSDiagnosisViewer.app import parse_args, resolve_input
    from JCSDiagnosisViewer.logic import case as case_logic
    from trame.app import get_server

    monkeypatch.setattr(case_logic, "default_weights", lambda kind: None)
    phantom = make_chest_phantom(shape=(6, 48, 48))
    write_image_series(phantom.image, tmp_path / "series")
    blanked = write_image_series(phantom.image, tmp_path / "blanked")
    for path in blanked:  # an anonymiser that emptied UIDs, date and series number (COVID-CT-MD normal002)
        dataset = pydicom.dcmread(path)
        dataset.SOPInstanceUID = dataset.StudyDate = ""
        dataset.SeriesNumber = None
        dataset.save_as(path)
    sitk.WriteImage(phantom.image, str(tmp_path / "chest.nrrd"))
    app = viewer_module.JCSViewer(get_server("viewer-parts-dicom-note"))
    notes = {}
    for name in ("series", "blanked", "chest.nrrd"):
        app.load(resolve_input(parse_args([str(tmp_path / name)])))
        notes[name] = (app.case.data.is_dicom, app.case.data.dicom_note)
    assert notes["series"] == (True, "")
    details = resolve_input(parse_args([str(tmp_path / "blanked")])).details
    assert details == "Patient JCS-PHANTOM, series Synthetic chest CT, 6 DICOM images"  # no empty fields
    assert notes["blanked"][0] is False
    assert notes["blanked"][1].startswith("No DICOM-SEG or SR for this series: 6 of 6 source instances")
    assert notes["chest.nrrd"] == (False, viewer_module.NO_DICOM_NOTE)


def test_update_results_quantifies_in_a_worker_thread(monkeypatch, tiny_weights_dir):
    """The page stays served while the edited segmentation is quantified: the event loop keeps
    running during the quantification, which runs in another thread, and the tables follow."""
    from jcs.io import CTVolume
    from jcs.terminology import lesion_spec
    from JCSDiagnosisLib import update as update_module
    from JCSDiagnosisLib import volumes
    from JCSDiagnosisLib.tables import readTable
    from JCSDiagnosisViewer import viewer as viewer_module
    from trame.app import get_server

    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(tiny_weights_dir))
    phantom = make_chest_phantom(shape=(12, 64, 64), seed=5)
    ct = CTVolume(image=phantom.image, is_hu=True, path=None, dicom_files=None)
    options = {"classifier": "tiny-classifier", "segmenter": "tiny-segmenter", "segment_policy": "always"}
    app = viewer_module.JCSViewer(get_server("viewer-parts-update"), options=options)
    app.load(viewer_module.ViewerInput(ct=ct, name="chest"))
    quantify_threads: list[int] = []
    original_run = update_module.QuantificationJob.run

    def slow_run(job):
        quantify_threads.append(threading.get_ident())
        time.sleep(0.5)
        return original_run(job)

    monkeypatch.setattr(update_module.QuantificationJob, "run", slow_run)

    # the tiny classifier's card has no decision block: the paper's rule, said before Diagnose
    assert app.reading.data.rule_text.startswith("These weights decide by the classifier rule (the paper's)")
    assert "COVID-19 probability" in app.navigation.data.title

    async def scenario() -> int:
        await app.diagnosis.run_diagnosis()
        assert app.result is not None, app.diagnosis.data.error
        # surfaces in 3-D: lesions (and translucent lungs), the slice planes off
        segmentation_display = app.result.segmentationNode.GetDisplayNode()
        assert app.result.segmentationNode.GetSegmentation().ContainsRepresentation("Closed surface")
        assert segmentation_display.GetSegmentVisibility3D(lesion_spec().segment_id)
        assert segmentation_display.GetSegmentVisibility3D("right_lung")
        assert not segmentation_display.GetSegmentVisibility2DFill("right_lung")
        assert not any(view.is_visible_in_3d() for view in app.slicer_app.view_manager.get_slice_views())
        app.display.data.lesions_3d = False
        app.display.show_3d()
        assert not segmentation_display.GetSegmentVisibility3D(lesion_spec().segment_id)
        app.display.data.lesions_3d = True
        app.display.show_3d()
        assert [h["key"] for h in app.tables.data.slices_headers][:3] == [
            "slice_index",
            "classifier_probability",
            "counted",
        ]
        segmentation = app.result.segmentationNode
        logic = app.session.scene_logic
        edit = np.zeros_like(logic.lesionMask(segmentation))
        edit[5:7] = logic.lungLabels(segmentation)[5:7] > 0  # the "edit": two slices of lung
        painted.append(int(edit.sum()))
        volumes.setSegmentArray(
            segmentation, lesion_spec().segment_id, edit, logic.sourceVolume(segmentation)
        )
        ticks = 0
        app.diagnosis.update_results()
        first = app.diagnosis.task
        app.diagnosis.update_results()  # a second click while busy starts nothing
        assert app.diagnosis.task is first
        while not app.diagnosis.task.done():
            await asyncio.sleep(0.01)
            ticks += 1
            busy.append(bool(app.diagnosis.data.busy))
        await app.diagnosis.task
        return ticks

    painted: list[int] = []
    busy: list[bool] = []
    ticks = asyncio.run(scenario())
    assert ticks >= 20 and busy[0]  # the loop ran on through the half-second quantification
    assert quantify_threads and quantify_threads[-1] != threading.get_ident()
    assert not app.diagnosis.data.busy and app.diagnosis.data.error == ""
    assert app.diagnosis.data.edit_note == "Results recomputed from the edited segmentation."
    assert app.reading.data.segmentation == "edited"
    voxel_ml = np.prod(phantom.image.GetSpacing()) / 1000
    assert painted[0] > 100
    # the card rounds (one decimal, two below 1 mL); the summary table keeps the full value
    summary = {row["quantity"]: row["value"] for row in readTable(app.result.summaryTableNode)}
    assert float(summary["opacification_volume_ml"]) == pytest.approx(painted[0] * voxel_ml, rel=1e-3)
    assert float(app.reading.data.lesion_ml) == pytest.approx(painted[0] * voxel_ml, abs=0.05)


@pytest.mark.slow  # two engine runs on the 48-slice sample (about a minute on two CPU cores)
def test_downloaded_tables_are_the_clis_files_on_the_sample(monkeypatch, tmp_path, tiny_weights_dir):
    """The viewer's summary, lesion and slice CSVs are `jcs diagnose`'s files, byte for byte (one
    writer: `jcs.pipeline.CaseResult.write_tables`), on the bundled sample with the same options."""
    from jcs.cli import main as jcs_main
    from jcs.sample import sample_path
    from JCSDiagnosisViewer import viewer as viewer_module
    from JCSDiagnosisViewer.app import engine_options, parse_args, resolve_input
    from trame.app import get_server

    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(tiny_weights_dir))
    names = [
        "--classifier",
        "tiny-classifier",
        "--segmenter",
        "tiny-segmenter",
        "--device",
        "cpu",
        "--segment",
        "always",
    ]
    cli_out = tmp_path / "cli"
    assert (
        jcs_main(["diagnose", str(sample_path()), "--out", str(cli_out), "--progress", "none", *names]) == 0
    )
    args = parse_args(["--sample", *names])
    app = viewer_module.JCSViewer(get_server("viewer-parts-tables"), options=engine_options(args))
    app.load(resolve_input(args))
    asyncio.run(app.diagnosis.run_diagnosis())
    assert app.result is not None, app.diagnosis.data.error
    for key, name in (("summary", "summary.csv"), ("lesions", "lesions.csv"), ("slices", "slices.csv")):
        assert app.downloads.file_bytes(key) == (cli_out / name).read_bytes(), name
        assert len((cli_out / name).read_text().splitlines()) > 1, f"{name} holds no rows"  # not vacuous


def test_decision_card_rounds_readings():
    from JCSDiagnosisViewer.logic.results import rounded as _reading

    assert [_reading(v) for v in ("77.9643", "2.27594", "0.0417", "0", "", "n/a")] == [
        "78.0",
        "2.3",
        "0.04",
        "0.00",
        "",
        "n/a",
    ]
