"""The viewer application: trame-slicer views and segment editor around the JCS Diagnosis scene logic.

All scene work goes through `JCSDiagnosisLib` (the same nodes, tables and exports as desktop Slicer);
this module only connects it to the page. Inference runs in the scene logic's engine process; the
event loop polls its progress, so the page stays responsive and Cancel works.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from jcs.errors import InputError
from jcs.inference import NO_WEIGHTS_MESSAGE
from jcs.io import CTVolume
from jcs.terminology import lesion_spec
from jcs.weights import default_weights
from jcs.wording import (
    DEFAULT_MIN_LESION_ML,
    RuleWording,
    clinical_note,
    header,
    lesion_view,
    reading_line,
    slice_columns,
    slice_rows,
    summary_rows,
)
from JCSDiagnosisLib import display
from JCSDiagnosisLib.logic import (
    DiagnosisNodes,
    DiagnosisRun,
    JCSDiagnosisSceneLogic,
    currentReadingText,
    decisionBasis,
    engineNotes,
    inputProblem,
)
from JCSDiagnosisLib.tables import PROBABILITY_COLUMN, SLICE_COLUMN, columnValues, readTable, summaryDict
from JCSDiagnosisLib.volumes import imageFromVolume
from trame.app import TrameApp
from trame_server import Server
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import LayoutButtonLogic, SegmentEditorLogic
from trame_slicer.core import SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import SegmentationOverwriteMode
from vtkmodules.vtkCommonCore import vtkCommand

from .scene import (
    WINDOW_PRESETS,
    SliceChart,
    add_volume_node,
    as_3d,
    planned_rule,
    set_window,
    slice_chart,
)
from .ui import DOWNLOADS, build_layout, slice_view_overlay, threed_view_overlay

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25
DEFAULT_HEATMAP_OPACITY = 0.4
#: After framing the 3-D view on the data, come this much closer (trame-slicer's fit leaves wide margins).
THREED_ZOOM = 0.15
TABLES = ("lesions", "slices")
NO_DICOM_NOTE = "DICOM-SEG and SR need a DICOM input series."


@dataclass
class ViewerInput:
    """What the viewer shows: the CT as read by `jcs.io.read_ct`, its name, DICOM folder and description."""

    ct: CTVolume
    name: str
    dicom_dir: Path | None = None
    details: str = ""


def _dicom_export_note(viewer_input: ViewerInput) -> str:
    """Why DICOM-SEG and SR cannot be downloaded for this input; "" when they can."""
    from jcs.dicomseg import check_source_series

    if viewer_input.dicom_dir is None:
        return NO_DICOM_NOTE
    try:
        check_source_series(viewer_input.ct)
    except InputError as exc:
        return f"No DICOM-SEG or SR for this series: {exc}"
    return ""


class JCSViewer(TrameApp):
    """One viewer session: a Slicer scene with the CT, its views in the page, and the JCS panel."""

    def __init__(
        self,
        server: Server | str | None = None,
        *,
        options: dict[str, Any] | None = None,
        min_lesion_ml: float = DEFAULT_MIN_LESION_ML,
    ) -> None:
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)
        self.server.controller.on_server_bind.add(_answer_session_request)
        self.options = dict(options or {})
        self.min_lesion_ml = float(min_lesion_ml)
        self.rule: RuleWording | None = None
        self.rule_reason = ""
        self.lesion_rows: list[int] = []
        self.slicer_app = SlicerApp()
        register_rca_factories(
            self.slicer_app.view_manager,
            self.server,
            slice_view_ui_f=slice_view_overlay,
            three_d_view_ui_f=threed_view_overlay,
        )
        self.layout_logic = LayoutButtonLogic(self.server, self.slicer_app)
        self.editor_logic = SegmentEditorLogic(self.server, self.slicer_app)
        self.scene_logic = JCSDiagnosisSceneLogic(self.slicer_app.app_logic)
        self.input: ViewerInput | None = None
        self.volume_node = None
        self.result: DiagnosisNodes | None = None
        self.run: DiagnosisRun | None = None
        self._task: asyncio.Task | None = None
        self.slice_positions = np.zeros(0)
        self.probabilities = np.zeros(0)
        self.chart = SliceChart(np.zeros(0))
        self.current_slice: int | None = None
        self._exports = tempfile.TemporaryDirectory(prefix="jcs-viewer-")
        self._init_state()
        self.ui, editor = build_layout(
            self.server,
            self.layout_logic.layout_manager,
            diagnose=self.diagnose,
            cancel=self.cancel,
            update_results=self.update_results,
            chart_click=self.chart_click,
            row_click=self.row_click,
            download=self.download,
        )
        self.editor_logic.set_ui(editor)
        self.state.change("jcs_window")(self._on_window_changed)
        self.state.change("jcs_heatmap_visible", "jcs_heatmap_opacity")(self._on_heatmap_changed)
        self.state.change("jcs_3d_lesions", "jcs_3d_lungs", "jcs_3d_planes")(self._on_3d_changed)
        for view in self.slicer_app.view_manager.get_slice_views():
            view.render_window().AddObserver(vtkCommand.WindowResizeEvent, lambda *_, v=view: _fit_slice(v))
        self.axial_view = self.slicer_app.view_manager.get_view("Red")
        self.axial_view.modified.connect(self._on_axial_slice_changed)

    def _init_state(self) -> None:
        state = self.state
        state.trame__title = "JCS Diagnosis"
        state.trame__favicon = None
        state.update(
            {
                "active_tool": "jcs",
                "jcs_case_name": "no case loaded",
                "jcs_case_details": "Start jcs-viewer with a CT file, a DICOM folder or --sample.",
                "jcs_footer": "",
                "jcs_volume_loaded": False,
                "jcs_blocker": "",
                "jcs_is_dicom": False,
                "jcs_dicom_note": NO_DICOM_NOTE,
                "jcs_window": "Lung",
                "jcs_busy": False,
                "jcs_running": False,
                "jcs_stage": "",
                "jcs_progress": 0,
                "jcs_error": "",
                "jcs_has_results": False,
                "jcs_decision": "",
                "jcs_positive": False,
                "jcs_positive_slices": 0,
                "jcs_slice_count": 0,
                "jcs_threshold": 0,
                "jcs_decision_basis": "",
                "jcs_rule_text": "",
                "jcs_rule_why": "",
                "jcs_reading_line": "",
                "jcs_summary_sections": [],
                "jcs_lesion_caption": "",
                "jcs_min_lesion_ml": self.min_lesion_ml,
                "jcs_3d_lesions": True,
                "jcs_3d_lungs": True,
                "jcs_3d_planes": False,
                "jcs_current_reading": "",
                "jcs_notes": [],
                "jcs_lesion_ml": "",
                "jcs_lesion_pct": "",
                "jcs_segmentation": "",
                "jcs_weights": "",
                "jcs_edit_note": "",
                "jcs_heatmap_visible": True,
                "jcs_heatmap_opacity": DEFAULT_HEATMAP_OPACITY,
                "jcs_chart_svg": self.chart.svg(),
                "jcs_chart_title": self.chart.title,
                "jcs_chart_legend": self.chart.legend,
                "jcs_table_tab": "summary",
            }
        )
        for key in TABLES:
            state[f"jcs_{key}_headers"] = []
            state[f"jcs_{key}_items"] = []

    # Loading ---------------------------------------------------------------------------------

    def load(self, viewer_input: ViewerInput) -> None:
        """Show the session's CT in every view (lung window); say why Diagnose is blocked, if it is."""
        self.input = viewer_input
        self.volume_node = add_volume_node(self.slicer_app.scene, viewer_input.ct, viewer_input.name)
        set_window(self.volume_node, self.state.jcs_window)
        manager = self.slicer_app.display_manager
        manager.show_volume_in_slice_background(self.volume_node)
        manager.show_volume_in_slice_foreground(None)
        for view in self.slicer_app.view_manager.get_slice_views():
            view.set_visible_in_3d(True)
        manager.reset_views()
        for view in self.slicer_app.view_manager.get_threed_views():
            view.zoom(THREED_ZOOM)  # framed on the volume, without the fit's wide margins
        size = self.volume_node.GetImageData().GetDimensions()
        axial_count = as_3d(viewer_input.ct.axial_image()).GetSize()[2]
        self.slice_positions = np.array(
            [self.scene_logic.axialSliceCenter(self.volume_node, k)[2] for k in range(axial_count)]
        )
        spacing = self.volume_node.GetSpacing()
        dicom_note = _dicom_export_note(viewer_input)
        self._show_planned_rule(axial_count, as_3d(viewer_input.ct.axial_image()).GetSpacing()[2])
        self.state.update(
            {
                "jcs_case_name": viewer_input.name,
                "jcs_case_details": viewer_input.details,
                "jcs_volume_loaded": True,
                "jcs_blocker": self._diagnosis_blocker(),
                "jcs_is_dicom": dicom_note == "",
                "jcs_dicom_note": dicom_note,
                "jcs_footer": (
                    f"{viewer_input.name}: {size[0]} x {size[1]} x {size[2]} voxels, "
                    f"{spacing[0]:.2f} x {spacing[1]:.2f} x {spacing[2]:.2f} mm"
                ),
            }
        )

    def _show_planned_rule(self, slice_count: int, slice_spacing_mm: float) -> None:
        """Say before Diagnose which rule the loaded weights' card makes count, and title the chart by it."""
        try:
            self.rule = planned_rule(self.options, slice_count, slice_spacing_mm)
        except Exception as exc:  # noqa: BLE001 - an unreadable card is reported when Diagnose runs
            logger.warning("cannot read the decision rule from the weights' card: %s", exc)
            return
        self.rule_reason = self.rule.reason
        self.chart = SliceChart.for_rule(self.rule, np.zeros(0))
        self.state.update(
            {
                "jcs_rule_text": self.rule.explanation(),
                "jcs_rule_why": self.rule.why(),
                "jcs_chart_title": self.chart.title,
                "jcs_chart_legend": self.chart.legend,
            }
        )

    def _diagnosis_blocker(self) -> str:
        """Why Diagnose cannot run on this case with these options ('' when it can)."""
        problem = inputProblem(self.volume_node)
        if problem:
            return problem
        if not self.options.get("classifier") and default_weights("classifier") is None:
            return NO_WEIGHTS_MESSAGE[0].upper() + NO_WEIGHTS_MESSAGE[1:] + "."
        return ""

    def _on_window_changed(self, jcs_window: str, **_: Any) -> None:
        if self.volume_node is not None and jcs_window in WINDOW_PRESETS:
            set_window(self.volume_node, jcs_window)

    # Diagnosis -------------------------------------------------------------------------------

    def diagnose(self) -> None:
        """Start the diagnosis as a task of the event loop and return at once.

        The task must not run inside the click's own trigger: triggers from one page are handled one
        after the other, so Cancel (and every other button) would wait for the whole diagnosis.
        """
        if self.volume_node is None or self.state.jcs_busy:
            return
        # Keep a reference: the loop holds tasks only weakly.
        self._task = asyncio.get_running_loop().create_task(self._run_diagnosis())

    async def _run_diagnosis(self) -> None:
        """Run the engine on the loaded CT in the scene logic's background process, then show the results."""
        with self.state:
            self.state.update(
                {
                    "jcs_busy": True,
                    "jcs_running": True,
                    "jcs_error": "",
                    "jcs_stage": "starting",
                    "jcs_progress": 0,
                }
            )
        try:
            self.run = self.scene_logic.startDiagnosis(self.volume_node, **self.options)
            process = self.run.process
            while (code := process.poll()) is None:
                with self.state:
                    self.state.jcs_stage = process.stage or "starting the engine"
                    self.state.jcs_progress = round(100 * process.fraction)
                await asyncio.sleep(POLL_INTERVAL_S)
            process.check(code)
            with self.state:
                self.state.jcs_stage = "loading results"
            result = self.scene_logic.loadResults(self.run)
        except Exception as exc:  # noqa: BLE001 - every failure is reported on the page, details in the log
            logger.exception("diagnosis failed")
            with self.state:
                self.state.jcs_error = str(exc)
        else:
            with self.state:
                self._show_result(result)
        finally:
            if self.run is not None:
                shutil.rmtree(self.run.workDir, ignore_errors=True)
            self.run = None
            with self.state:
                self.state.jcs_busy = False
                self.state.jcs_running = False

    def cancel(self) -> None:
        """Stop the running diagnosis (kills the engine process tree)."""
        if self.run is not None:
            self.run.process.cancel()

    def _show_result(self, result: DiagnosisNodes) -> None:
        self.result = result
        self.scene_logic.setHeatmapOpacity(self._heatmap_opacity())
        self._render_slice_views()
        editor = self.slicer_app.segmentation_editor
        editor.deactivate_effect()
        editor.set_active_segmentation(result.segmentationNode, self.volume_node)
        editor.set_active_segment_id(lesion_spec().segment_id)
        # Lesions lie inside the lungs: painting a lesion must not carve it out of the lung segments.
        editor.set_overwrite_mode(SegmentationOverwriteMode.ALLOW_OVERLAP)
        self.probabilities = columnValues(result.sliceTableNode, PROBABILITY_COLUMN)
        case = result.results.get("case", {})
        self.rule = RuleWording.from_case(case, self.rule_reason)
        self.chart = slice_chart(case, result.results.get("slices", []), self.probabilities)
        self._show_3d(frame=True)
        self.state.update(
            {
                "jcs_has_results": True,
                "jcs_decision": "COVID-19 positive" if case.get("positive") else "COVID-19 negative",
                "jcs_positive": bool(case.get("positive")),
                "jcs_positive_slices": int(case.get("positive_slice_count", 0)),
                "jcs_slice_count": len(self.probabilities),
                "jcs_threshold": int(case.get("threshold", 0)),
                "jcs_reading_line": reading_line(case, len(self.probabilities)),
                "jcs_rule_text": self.rule.explanation(),
                "jcs_rule_why": self.rule.why(),
                "jcs_decision_basis": decisionBasis(case),
                "jcs_current_reading": "",
                "jcs_notes": [clinical_note(note) for note in engineNotes(result.results)],
                "jcs_chart_title": self.chart.title,
                "jcs_chart_legend": self.chart.legend,
                "jcs_weights": _weights_text(result.results.get("weights", {})),
                "jcs_edit_note": "",
            }
        )
        self._refresh_tables()
        self._refresh_chart()

    def update_results(self) -> None:
        """Recompute every table from the (edited) lesion segmentation, without blocking the page."""
        if self.result is None or self.state.jcs_busy:
            return
        # Busy before the task starts, so a second click cannot start a second update.
        self.state.update({"jcs_busy": True, "jcs_error": "", "jcs_edit_note": "Recomputing results…"})
        self._task = asyncio.get_running_loop().create_task(self._run_update())

    async def _run_update(self) -> None:
        """Read the scene, quantify in a worker thread (the loop keeps serving the page), fill the tables."""
        self.slicer_app.segmentation_editor.deactivate_effect()
        try:
            job = self.scene_logic.quantificationJob(self.result.segmentationNode)
            quantification = await asyncio.to_thread(job.run)
            updated = self.scene_logic.applyQuantification(job, quantification)
        except Exception as exc:  # noqa: BLE001 - reported on the page, details in the log
            logger.exception("update results failed")
            with self.state:
                self.state.update({"jcs_error": str(exc), "jcs_edit_note": ""})
        else:
            reading = updated.results["reading"]
            if reading is not None:  # the segmenter rule's evidence follows the edit; the AI card stays
                self.chart = slice_chart(
                    self.result.results.get("case", {}), updated.results["slices"], self.probabilities
                )
            with self.state:
                self._show_3d()
                self.state.jcs_edit_note = "Results recomputed from the edited segmentation."
                self.state.jcs_current_reading = currentReadingText(reading, updated.results["edited"])
                self._refresh_tables()
                self._refresh_chart()
        finally:
            with self.state:
                self.state.jcs_busy = False

    def _refresh_tables(self) -> None:
        """The readable tables (`jcs.wording`): summary in sections, the lesions a reader needs, the slices
        with the rule's evidence first. The table nodes and downloads keep every field at full precision."""
        summary = summaryDict(self.result.summaryTableNode)
        sections: list[dict[str, Any]] = []
        for row in summary_rows(summary):
            if not sections or sections[-1]["title"] != row.section.value:
                sections.append({"title": row.section.value, "rows": []})
            sections[-1]["rows"].append({"label": row.label, "value": row.value, "unit": row.unit})
        self.state.jcs_summary_sections = sections

        lesions = lesion_view(readTable(self.result.lesionTableNode), self.min_lesion_ml)
        self.lesion_rows = lesions.indices
        self.state.jcs_lesions_headers = [{"title": header(w), "key": key} for key, w in lesions.columns]
        self.state.jcs_lesions_items = lesions.rows
        self.state.jcs_lesion_caption = lesions.caption()

        columns = slice_columns(self.rule)
        self.state.jcs_slices_headers = [{"title": header(w), "key": key} for key, w in columns]
        self.state.jcs_slices_items = slice_rows(readTable(self.result.sliceTableNode), self.rule)

        self.state.jcs_lesion_ml = _reading(summary.get("opacification_volume_ml"))
        self.state.jcs_lesion_pct = _reading(summary.get("opacification_percent"))
        self.state.jcs_segmentation = str(summary.get("segmentation", ""))

    # Heatmap and navigation ------------------------------------------------------------------

    def _heatmap_opacity(self) -> float:
        return float(self.state.jcs_heatmap_opacity) if self.state.jcs_heatmap_visible else 0.0

    def _on_heatmap_changed(self, **_: Any) -> None:
        if self.result is not None:
            self.scene_logic.setHeatmapOpacity(self._heatmap_opacity())
            self._render_slice_views()

    def _on_3d_changed(self, **_: Any) -> None:
        if self.result is not None:
            self._show_3d()

    def _show_3d(self, frame: bool = False) -> None:
        """Lesion and lung surfaces and the slice planes in the 3-D view as the toggles say; rendered now
        (trame-slicer renders a view only when one of its own setters asks). `frame`: fit the camera."""
        display.showSegments3D(
            self.result.segmentationNode,
            lesions=bool(self.state.jcs_3d_lesions),
            lungs=bool(self.state.jcs_3d_lungs),
        )
        for view in self.slicer_app.view_manager.get_slice_views():
            view.set_visible_in_3d(bool(self.state.jcs_3d_planes))
        for view in self.slicer_app.view_manager.get_threed_views():
            # Depth peeling drops translucent surfaces in off-screen (EGL) rendering: the lungs vanished.
            view.renderer().SetUseDepthPeeling(False)
            if frame:
                view.fit_view_to_content()
                view.zoom(THREED_ZOOM)
            view.schedule_render()
        self._render_slice_views()

    def chart_click(self, fraction: float) -> None:
        """Open the axial slice under a click on the probability chart (x fraction 0..1)."""
        if len(self.probabilities):
            self.go_to_slice(int(np.clip(fraction * len(self.probabilities), 0, len(self.probabilities) - 1)))

    def row_click(self, table: str, row: int) -> None:
        """Open the slice of a clicked slice-table row, or centre the views on a clicked lesion."""
        if self.result is None:
            return
        try:
            if table == "slices":
                self.go_to_slice(int(readTable(self.result.sliceTableNode)[row][SLICE_COLUMN]))
            elif table == "lesions":
                self.scene_logic.jumpToLesion(self.result.segmentationNode, self.lesion_rows[row])
                self._render_slice_views()
        except (KeyError, IndexError, ValueError) as exc:
            logger.exception("jump to %s row %s failed", table, row)
            self.state.jcs_error = f"cannot open {table} row {row}: {exc}"

    def go_to_slice(self, index: int) -> None:
        """Show axial-grid slice `index` (0 = most inferior) in every slice view."""
        self.scene_logic.jumpToSlice(self.volume_node, index)
        self._render_slice_views()

    def _render_slice_views(self) -> None:
        """Schedule a render of every view: composite/slice node edits made through the scene logic do not
        trigger one in trame-slicer (its own setters call `schedule_render`), and the 3-D view shows the
        slice planes (with the heatmap) when they are switched on."""
        for view in self.slicer_app.view_manager.get_views():
            view.schedule_render()

    def _on_axial_slice_changed(self, view: Any) -> None:
        if not len(self.slice_positions):
            return
        index = int(np.argmin(np.abs(self.slice_positions - view.get_slice_value())))
        if index != self.current_slice:
            self.current_slice = index
            self._refresh_chart()

    def _refresh_chart(self) -> None:
        with self.state:
            self.state.jcs_chart_svg = self.chart.svg(current=self.current_slice)

    # Downloads ---------------------------------------------------------------------------------

    def download(self, key: str) -> Any:
        """Bytes of one download (see `ui.DOWNLOADS`) as a trame attachment."""
        names = {k: filename for k, filename, *_ in DOWNLOADS}
        if self.result is None or key not in names:
            raise ValueError(f"nothing to download for {key!r}")
        folder = Path(self._exports.name)
        if key in ("seg", "sr"):
            data = self._dicom_bytes(key, folder)
        elif key == "labelmap":
            data = self._labelmap_bytes(folder / names[key])
        elif key == "json":
            data = json.dumps(self._results_dict(), indent=2).encode()
        else:
            node = {"summary": self.result.summaryTableNode, "lesions": self.result.lesionTableNode}.get(
                key, self.result.sliceTableNode
            )
            data = _csv_bytes(readTable(node))
        return self.server.protocol.addAttachment(data)

    def _dicom_bytes(self, key: str, folder: Path) -> bytes:
        written = self.scene_logic.exportDicomSeg(
            self.result.segmentationNode, folder / "dicom", sourceDicomDir=self.input.dicom_dir
        )
        return (written.seg_path if key == "seg" else written.sr_path).read_bytes()

    def _labelmap_bytes(self, path: Path) -> bytes:
        mask = self.scene_logic.lesionMask(self.result.segmentationNode)
        sitk.WriteImage(imageFromVolume(self.volume_node, mask), str(path), useCompression=True)
        return path.read_bytes()

    def _results_dict(self) -> dict[str, Any]:
        case = self.result.results.get("case", {})
        return {
            "case": {
                "name": self.input.name,
                **{k: v for k, v in case.items() if not isinstance(v, (list, dict))},
            },
            "weights": self.result.results.get("weights", {}),
            "notes": engineNotes(self.result.results),
            "min_lesion_ml_shown": self.min_lesion_ml,
            "segmentation": "edited"
            if self.scene_logic.isEdited(self.result.segmentationNode)
            else "automatic",
            "summary": readTable(self.result.summaryTableNode),
            "lesions": readTable(self.result.lesionTableNode),
            "slices": readTable(self.result.sliceTableNode),
        }


def _reading(value: Any) -> str:
    """A table value as the decision card shows it: one decimal, two below 1 (the tables keep all)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    return f"{number:.1f}" if abs(number) >= 1 else f"{number:.2f}"


def _answer_session_request(wslink_server: Any) -> None:
    """Answer the page's opening request for a session (trame's client first POSTs to ``paraview/``, as to
    a launcher, and falls back to the websocket after a 405): point it at this server's websocket."""
    from aiohttp import web

    async def session(_request: Any) -> web.Response:
        return web.json_response({"sessionURL": "ws://USE_HOST/ws"})

    wslink_server.app.router.add_post("/paraview/", session)


def _fit_slice(view: Any) -> None:
    """Fit a slice view to its volume after a resize; a view not laid out yet (0 pixels, which VTK warns
    about at start) is left until it is."""
    width, height = view.render_window().GetSize()
    if width > 1 and height > 1:
        view.fit_view_to_content()


def _weights_text(weights: dict[str, Any]) -> str:
    names = [f"{kind}: {info.get('name', '?')}" for kind, info in weights.items() if info]
    return "Weights " + ", ".join(names) if names else ""


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()
