"""The web viewer end to end in a real headless Chromium: load, diagnose, heatmap, edit, update, export.

`jcs-viewer` runs as a child process on a free loopback port with the tiny deterministic weights on a
DICOM series of the chest phantom; Playwright clicks through the radiologist's flow and every figure
the page shows is checked against the engine run directly in this process. Screenshots go to the
artifacts folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("trame_slicer")
playwright_api = pytest.importorskip("playwright.sync_api")
from dicom_writer import dciodvfy_errors, write_image_series  # noqa: E402
from phantoms import LesionSpec, make_chest_phantom  # noqa: E402
from tiny_weights import write_tiny_weights  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_TIMEOUT_S = 90
DIAGNOSIS_TIMEOUT_MS = 150_000
UI_TIMEOUT_MS = 30_000
ADDRESS = re.compile(r"JCS Diagnosis viewer: (http://127\.0\.0\.1:\d+/)")


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small chest phantom with two lesions written as a DICOM CT series, plus tiny weights."""
    root = tmp_path_factory.mktemp("viewer")
    phantom = make_chest_phantom(
        shape=(32, 96, 96),
        lesions=[
            LesionSpec(side="right", zone="middle", radius_mm=7.0),
            LesionSpec(side="left", zone="upper"),
        ],
        seed=3,
    )
    dicom_dir = root / "dicom"
    write_image_series(phantom.image, dicom_dir)
    weights_dir = root / "weights"
    names = write_tiny_weights(weights_dir)
    return {"dicom_dir": dicom_dir, "weights_dir": weights_dir, "names": names, "phantom": phantom}


@pytest.fixture(scope="module")
def engine_result(case: dict):
    """The engine's own result on the same series with the same options as the viewer (the segmenter
    decision rule, the bundled weights' default; `jcs diagnose`'s removal of predicted lesions far
    from the lungs)."""
    from jcs.inference import DiagnosisEngine
    from jcs.io import read_ct
    from jcs.lung import drop_far_lesions, segment_lungs
    from jcs.options import LESION_MARGIN_MM

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JCS_WEIGHTS_DIR", str(case["weights_dir"]))
        engine = DiagnosisEngine.from_registry(
            case["names"]["classifier"],
            case["names"]["segmenter"],
            device="cpu",
            segment_policy="always",
            decision="segmenter",
        )
        ct = read_ct(case["dicom_dir"])
        result = engine.diagnose(ct)
    spacing = ct.axial_image().GetSpacing()[::-1]
    drop_far_lesions(result.lesion_mask, segment_lungs(ct.axial_array(), spacing), spacing, LESION_MARGIN_MM)
    return result


@pytest.fixture(scope="module")
def viewer_url(case: dict, artifacts_dir: Path) -> Iterator[str]:
    """Start `jcs-viewer` on the phantom series; yield its address; stop it."""
    env = dict(os.environ, JCS_WEIGHTS_DIR=str(case["weights_dir"]))
    env.pop("DISPLAY", None)
    command = [
        sys.executable,
        "-m",
        "JCSDiagnosisViewer.app",
        str(case["dicom_dir"]),
        "--port",
        "0",
        "--classifier",
        case["names"]["classifier"],
        "--segmenter",
        case["names"]["segmenter"],
        "--device",
        "cpu",
        "--segment",
        "always",
        "--decision",
        "segmenter",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def read() -> None:
        for line in process.stdout:
            log.append(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    url = None
    try:
        while url is None:
            try:
                line = lines.get(timeout=STARTUP_TIMEOUT_S)
            except queue.Empty:
                pytest.fail("jcs-viewer printed no address:\n" + "".join(log[-40:]))
            match = ADDRESS.search(line)
            url = match.group(1) if match else None
            if process.poll() is not None and url is None and lines.empty():
                pytest.fail("jcs-viewer exited:\n" + "".join(log[-40:]))
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        (artifacts_dir / "viewer").mkdir(exist_ok=True)
        (artifacts_dir / "viewer" / "server.log").write_text("".join(log))


def _axial_image(page):
    return page.locator("div:has(> #jcs-view-Red) img.image-display-area")


def _pixels(locator) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"), dtype=np.int16)


def _changed(first: np.ndarray, second: np.ndarray) -> float:
    """Fraction of pixels whose colour changed by more than 30 grey levels in some channel."""
    return float((np.abs(first - second).max(axis=2) > 30).mean())


def _settled_frame(page, locator, reference: np.ndarray | None = None, timeout_s: float = 30.0) -> np.ndarray:
    """Poll the view until two consecutive frames agree (and differ from `reference`, if given)."""
    deadline = time.monotonic() + timeout_s
    last = _pixels(locator)
    while time.monotonic() < deadline:
        page.wait_for_timeout(250)
        current = _pixels(locator)
        if np.array_equal(current, last) and (reference is None or _changed(current, reference) > 0.01):
            return current
        last = current
    return last


def _frame_like(page, locator, target: np.ndarray, timeout_s: float = 30.0) -> np.ndarray:
    """Poll the view until it shows `target` again (the last frame when it never does)."""
    deadline = time.monotonic() + timeout_s
    frame = _pixels(locator)
    while _changed(frame, target) >= 0.01 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        frame = _pixels(locator)
    return frame


def _summary(page) -> dict[str, tuple[str, str]]:
    """The readable summary as the page shows it: {label: (value, unit)}."""
    rows = page.locator("#jcs-table-summary .jcs-summary-row")
    values = {}
    for index in range(rows.count()):
        cells = [text.strip() for text in rows.nth(index).locator("td").all_text_contents()]
        values[cells[0]] = (cells[1], cells[2])
    return values


def _summary_download(page, target: Path) -> dict[str, str]:
    """The downloaded summary CSV: {field: exact value}."""
    with _download(page, "#jcs-download-summary", target).open(newline="") as handle:
        return {row["quantity"]: row["value"] for row in csv.DictReader(handle)}


def _lesion_ml(summary: dict[str, str]) -> float:
    return float(summary["opacification_volume_ml"]) + float(summary["opacification_volume_ml_outside_lungs"])


def _threed_image(page):
    return page.locator("div:has(> #jcs-view-threed) img.image-display-area")


def _download(page, selector: str, target: Path) -> Path:
    with page.expect_download(timeout=UI_TIMEOUT_MS) as info:
        page.click(selector)
    info.value.save_as(target)
    return target


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian chromium is not installed")
def test_viewer_full_flow(case, engine_result, viewer_url, artifacts_dir, tmp_path):
    expect = playwright_api.expect
    shots = artifacts_dir / "viewer"
    shots.mkdir(exist_ok=True)
    voxel_ml = float(np.prod(case["phantom"].image.GetSpacing())) / 1000.0
    slice_count = len(engine_result.slice_probabilities)

    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 950}, accept_downloads=True)
        page.set_default_timeout(UI_TIMEOUT_MS)
        outside = []  # every request the page makes must stay on the viewer's loopback address
        failed = []  # every response the page gets must succeed (no 405 on page load)
        page.on("response", lambda response: failed.append(response) if response.status >= 400 else None)
        page.on(
            "request",
            lambda request: (
                None
                if request.url.startswith((viewer_url, "blob:", "data:"))
                else outside.append(request.url)
            ),
        )
        page.goto(viewer_url)

        # Loaded: the CT is in the views and Diagnose is enabled.
        axial = _axial_image(page)
        expect(page.locator("#jcs-diagnose")).to_be_enabled()
        expect(axial).to_have_attribute("src", re.compile("^blob:"))
        expect(page.locator("#jcs-case")).to_contain_text("dicom")
        # Before Diagnose the page names the rule the weights will use, with T as the engine sets it.
        assert engine_result.decision == "segmenter"
        rule = page.locator("#jcs-rule")
        expect(rule).to_contain_text("These weights decide by the segmenter rule")
        expect(rule).to_contain_text("covers more than 2 % of the slice's lung")
        expect(rule).to_contain_text(f"(T = {engine_result.threshold})")
        expect(rule).not_to_contain_text("above 0.5")
        expect(page.locator("#jcs-chart-title")).to_contain_text("opacified share of the lung")
        expect(page.locator("#jcs-chart-title")).to_contain_text("segmenter rule")
        expect(page.locator("#jcs-shared-case")).to_contain_text("every browser")
        page.screenshot(path=shots / "01-loaded.png")

        # While the engine runs the page stays live and Cancel stops it: the window preset clicked during the
        # run is applied (the view re-renders), and the run is still going when Cancel arrives after it.
        lung_window = _settled_frame(page, axial)
        page.click("#jcs-diagnose")
        expect(page.locator("#jcs-cancel")).to_be_enabled()
        page.click("#jcs-window-mediastinum")
        page.click("#jcs-cancel")
        expect(page.locator("#jcs-error")).to_contain_text("cancelled")
        expect(page.locator("#jcs-decision")).to_have_count(0)
        assert _changed(lung_window, _settled_frame(page, axial, lung_window)) > 0.01
        page.screenshot(path=shots / "02-cancelled-mediastinum.png")
        page.click("#jcs-window-lung")

        # Diagnose: the decision and the tables match the engine.
        page.click("#jcs-diagnose")
        expect(page.locator("#jcs-error")).to_have_count(0)
        expect(page.locator("#jcs-decision, #jcs-error")).to_be_visible(timeout=DIAGNOSIS_TIMEOUT_MS)
        assert not page.locator("#jcs-error").is_visible(), page.locator("#jcs-error").inner_text()
        decision = "COVID-19 positive" if engine_result.positive else "COVID-19 negative"
        expect(page.locator("#jcs-decision")).to_have_text(decision)
        expect(page.locator("#jcs-positive-slices")).to_have_text(
            f"{engine_result.positive_slice_count} of {slice_count} slices show opacification over 2 % of "
            f"the lung; positive when more than {engine_result.threshold} do."
        )
        expect(page.locator("#jcs-decision-basis")).to_have_text(
            f"The classifier alone scores {engine_result.classifier_positive_count} slices over p = 0.5; "
            "with these weights it explains but does not decide."
        )
        expect(rule).to_contain_text("These weights decide by the segmenter rule")  # still said after
        # the chart plots what the rule counted: red bars are the positive slices
        expect(page.locator("#jcs-chart-title")).to_contain_text("opacified share of the lung")
        expect(page.locator("#jcs-chart-legend")).to_have_text("red: counted · dashed: 2 % of the lung")
        expect(page.locator("#jcs-chart rect")).to_have_count(slice_count)
        red_bars = page.locator('#jcs-chart rect[fill="#e8504a"]')
        expect(red_bars).to_have_count(engine_result.positive_slice_count)
        expect(page.locator("#jcs-table-summary .jcs-summary-row").first).to_be_visible()
        # Readable summary: sections, labels with units, rounded; the download keeps the exact values.
        sections = page.locator("#jcs-table-summary summary").all_text_contents()
        assert sections[:3] == ["Reading", "Lungs", "Opacification"] and sections[-1] == "Technical"
        shown = _summary(page)
        before = _summary_download(page, tmp_path / "summary-before.csv")
        engine_voxels = int(np.count_nonzero(engine_result.lesion_mask))
        assert _lesion_ml(before) == pytest.approx(engine_voxels * voxel_ml, rel=1e-6, abs=1e-9)
        exact_ml = float(before["opacification_volume_ml"])
        assert shown["Opacification in the lungs"] == (f"{exact_ml:.1f}", "mL")
        assert shown["Lung volume"] == (f"{float(before['lung_volume_ml']):.0f}", "mL")
        assert shown["Share of the lungs opacified"][1] == "%"
        assert shown["Slices counted by the rule"] == (str(engine_result.positive_slice_count), "")
        assert "opacification_volume_ml" not in shown and len(before["lung_volume_ml"]) > 8  # full precision
        labelmap = sitk.ReadImage(_download(page, "#jcs-download-labelmap", tmp_path / "before.nrrd"))
        assert int(sitk.GetArrayFromImage(labelmap).sum()) == engine_voxels
        assert labelmap.GetSize() == case["phantom"].image.GetSize()

        # Chart click opens the slice with the most heat; the heatmap toggle changes the slice pixels.
        hottest = int(np.argmax(engine_result.heatmap.sum(axis=(1, 2))))
        chart = page.locator("#jcs-chart")
        box = chart.bounding_box()
        chart.click(position={"x": (hottest + 0.5) / slice_count * box["width"], "y": box["height"] / 2})
        marker_x = (hottest + 0.5) * 400 / slice_count  # the chart's viewBox is 400 wide
        expect(page.locator(f"#jcs-chart line[stroke='#f3d33a'][x1='{marker_x:.2f}']")).to_have_count(1)
        with_heatmap = _settled_frame(page, axial)
        page.screenshot(path=shots / "03-diagnosed-heatmap.png")
        legend = page.locator("#jcs-heatmap-legend")
        expect(legend).to_contain_text("brightness is the slice's COVID-19 probability")
        page.click("#jcs-heatmap-toggle")
        without_heatmap = _settled_frame(page, axial, with_heatmap)
        assert _changed(with_heatmap, without_heatmap) > 0.01, (
            "switching the heatmap off left the view unchanged"
        )
        page.screenshot(path=shots / "04-heatmap-off.png")
        # Back on at full opacity: the overlay is stronger than at the default opacity.
        page.click("#jcs-heatmap-toggle")
        thumb = page.locator(".v-slider:has(#jcs-heatmap-opacity) .v-slider-thumb")
        thumb.focus()
        page.keyboard.press("End")
        expect(page.locator("input#jcs-heatmap-opacity")).to_have_value("1")
        opaque = _settled_frame(page, axial, with_heatmap)
        assert _changed(with_heatmap, opaque) > 0.01, "the opacity slider left the view unchanged"

        # The 3-D view shows the lesion surfaces and follows its toggles at once.
        threed = _threed_image(page)
        with_lesions = _settled_frame(page, threed)
        page.click("#jcs-3d-lungs")  # lungs off: the lesions alone
        lesions_only = _settled_frame(page, threed, with_lesions)
        page.click("#jcs-3d-lesions")
        empty = _settled_frame(page, threed, lesions_only)
        assert _changed(lesions_only, empty) > 0.002, (
            "switching the lesion surfaces off left the 3-D view unchanged"
        )
        page.click("#jcs-3d-lesions")
        page.click("#jcs-3d-lungs")
        # with the slice planes on, switching the heatmap off redraws them in 3-D at once (no stale view)
        page.click("#jcs-3d-planes")
        with_planes = _settled_frame(page, threed, with_lesions)
        page.click("#jcs-heatmap-toggle")
        planes_no_heat = _settled_frame(page, threed, with_planes)
        assert _changed(with_planes, planes_no_heat) > 0.002, "the 3-D slice planes kept the heatmap"
        page.click("#jcs-heatmap-toggle")
        page.click("#jcs-3d-planes")
        assert _changed(_frame_like(page, threed, with_lesions), with_lesions) < 0.01
        page.screenshot(path=shots / "03b-3d-lesions.png")

        # A click on a slice-table row opens that slice too.
        page.click("#jcs-tab-slices")
        slice_titles = page.locator("#jcs-table-slices thead th").all_inner_texts()
        assert slice_titles[:4] == [
            "Slice",
            "Opacified share of the lung (%)",
            "Counted by rule",
            "Classifier probability",
        ]
        counted = page.locator("#jcs-table-slices tbody tr td:nth-child(3)").all_inner_texts()
        assert counted.count("yes") == engine_result.positive_slice_count
        page.locator("#jcs-table-slices tbody tr").nth(3).click()
        expect(
            page.locator(f"#jcs-chart line[stroke='#f3d33a'][x1='{3.5 * 400 / slice_count:.2f}']")
        ).to_have_count(1)
        # ... and a click on a lesion row centres the views on that lesion (its slice range holds the marker).
        page.click("#jcs-tab-lesions")
        titles = page.locator("#jcs-table-lesions thead th").all_inner_texts()
        assert titles[:4] == ["Lesion", "Volume (mL)", "Lung", "Zone"]
        expect(page.locator("#jcs-lesion-caption")).to_contain_text("of at least 0.1 mL, largest first")
        volumes = [
            float(v) for v in page.locator("#jcs-table-lesions tbody tr td:nth-child(2)").all_inner_texts()
        ]
        assert volumes == sorted(volumes, reverse=True) and min(volumes) >= 0.1
        first, last = titles.index("First slice"), titles.index("Last slice")
        lesion = page.locator("#jcs-table-lesions tbody tr").nth(1)
        cells = lesion.locator("td").all_inner_texts()
        lesion.locator("td").first.click()  # the wide lesion table scrolls sideways
        marker = page.locator("#jcs-chart line[stroke='#f3d33a']")
        expect(marker).not_to_have_attribute("x1", f"{3.5 * 400 / slice_count:.2f}")
        expect(page.locator("#jcs-error")).to_have_count(0)
        marker_slice = float(marker.get_attribute("x1")) / (400 / slice_count) - 0.5
        assert int(cells[first]) <= round(marker_slice) <= int(cells[last])
        page.click("#jcs-tab-summary")

        # Edit: paint a stroke in the axial view with the segment editor, then update the results.
        page.click("#jcs-tool-editor")
        paint = page.locator(".v-navigation-drawer .v-card-item button:has(i.mdi-brush)")
        paint.click()
        expect(paint).to_have_class(re.compile("v-btn--active"))
        # Slicer's default: a 2-D brush, its size in mm, the sphere option labelled and off.
        expect(page.locator("#jcs-brush-size")).to_have_text("Brush diameter: 10 mm")
        expect(page.locator("input#jcs-brush-sphere")).not_to_be_checked()
        expect(
            page.get_by_label("Sphere brush (3-D: also paints the slices above and below)")
        ).to_be_visible()
        view = axial.bounding_box()
        # A vertical stroke down the mediastinum and spine: soft tissue, outside any automatic lesion.
        x = view["x"] + 0.50 * view["width"]
        page.mouse.move(x, view["y"] + 0.40 * view["height"])
        page.mouse.down()
        page.mouse.move(x, view["y"] + 0.56 * view["height"], steps=12)
        page.mouse.up()
        # The stroke is committed once the editor offers to undo it.
        expect(page.locator("button:has(i.mdi-undo)")).to_be_enabled()
        page.screenshot(path=shots / "05-segment-editor-painted.png")
        page.click("#jcs-update-editor")
        expect(page.locator("#jcs-edit-note")).to_contain_text("recomputed")
        page.click("#jcs-tool-diagnosis")
        expect(page.locator("#jcs-lesion-ml")).to_contain_text("edited segmentation")
        after = _summary_download(page, tmp_path / "summary-after.csv")
        edited = sitk.GetArrayFromImage(
            sitk.ReadImage(_download(page, "#jcs-download-labelmap", tmp_path / "after.nrrd"))
        )
        painted = int(edited.sum()) - engine_voxels
        assert painted > 0, "the paint stroke added no voxels"
        # one default stroke on one axial slice changes that slice only
        automatic = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "before.nrrd")))
        changed_slices = np.unique(np.nonzero(edited != automatic)[0])
        assert len(changed_slices) == 1, f"one stroke changed slices {changed_slices.tolist()}"
        assert _lesion_ml(after) - _lesion_ml(before) == pytest.approx(painted * voxel_ml, rel=5e-3, abs=5e-3)
        # The segmenter rule re-read on the edit: a stroke outside the lungs adds no opacified lung, so
        # the same slices count; the AI's card is kept.
        count, threshold = engine_result.positive_slice_count, engine_result.threshold
        verdict = "COVID-19 positive" if count > threshold else "COVID-19 negative"
        expect(page.locator("#jcs-current-reading")).to_have_text(
            f"Edited segmentation: {count} slices over 2 % of the lung (threshold {threshold}), "
            f"{verdict} by the same rule. The reading above is the AI's and is kept."
        )
        assert int(after["current_positive_slice_count"]) == count
        expect(page.locator("#jcs-decision")).to_have_text(decision)
        expect(red_bars).to_have_count(count)
        page.screenshot(path=shots / "06-edited-updated.png")

        # Export: DICOM-SEG (+ SR) of the edited segmentation, validated by dciodvfy.
        seg = _download(page, "#jcs-download-seg", tmp_path / "lesions_seg.dcm")
        sr = _download(page, "#jcs-download-sr", tmp_path / "report_sr.dcm")
        for name in ("summary", "lesions", "slices", "json"):
            assert _download(page, f"#jcs-download-{name}", tmp_path / name).stat().st_size > 0
        # the engine's notes (what it dropped, cautions) are on the card, as in the downloaded JSON
        # the engine's notes (what it dropped, cautions) are in the card's folded details, worded for a
        # clinician; the downloaded JSON keeps them as the engine wrote them
        from jcs.wording import clinical_note

        notes = json.loads((tmp_path / "json").read_text())["notes"]
        assert notes, "the phantom run should leave at least one note (predicted lesions far from the lungs)"
        expect(page.locator(".jcs-note").first).not_to_be_visible()
        page.locator("#jcs-details summary").click()
        assert page.locator(".jcs-note").all_inner_texts() == [clinical_note(note) for note in notes]
        assert "dropped" not in " ".join(page.locator(".jcs-note").all_inner_texts())
        browser.close()
    assert not outside, f"the page reached outside the viewer: {outside[:5]}"
    assert not failed, [f"{r.status} {r.request.method} {r.url}" for r in failed]

    import pydicom

    seg_ds = pydicom.dcmread(seg)
    assert seg_ds.Modality == "SEG"
    assert pydicom.dcmread(sr).Modality == "SR"
    frames = seg_ds.pixel_array.reshape(-1, *seg_ds.pixel_array.shape[-2:])
    assert int((frames > 0).sum()) == int(edited.sum())
    assert dciodvfy_errors(seg) in ([], None)
