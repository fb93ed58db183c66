"""The viewer application: trame-slicer views and segment editor around the JCS Diagnosis scene logic.

All scene work goes through `JCSDiagnosisLib` (the same nodes, tables and exports as desktop Slicer).
Each panel feature is a small logic class bound to its typed state (:mod:`.logic`, :mod:`.state`);
this class builds them, wires their events and lays out the page (:mod:`.ui`).
"""

from __future__ import annotations

from typing import Any

from jcs.wording import DEFAULT_MIN_LESION_ML, RuleWording
from JCSDiagnosisLib.logic import DiagnosisNodes, JCSDiagnosisSceneLogic
from trame.app import TrameApp
from trame_server import Server
from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic import LayoutButtonLogic, SegmentEditorLogic
from trame_slicer.core import SlicerApp
from trame_slicer.rca_view import register_rca_factories
from vtkmodules.vtkCommonCore import vtkCommand

from .logic import (
    CaseLogic,
    DiagnosisLogic,
    DisplayLogic,
    DownloadLogic,
    NavigationLogic,
    ReadingLogic,
    TablesLogic,
    ViewerInput,
    ViewerSession,
)
from .state import NO_DICOM_NOTE
from .ui import PanelNames, build_layout, slice_view_overlay, threed_view_overlay

__all__ = ["NO_DICOM_NOTE", "JCSViewer", "ViewerInput"]


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
        self.state.trame__title = "JCS Diagnosis"
        self.state.trame__favicon = None
        self.state.active_tool = "jcs"
        self.slicer_app = SlicerApp()
        register_rca_factories(
            self.slicer_app.view_manager,
            self.server,
            slice_view_ui_f=slice_view_overlay,
            three_d_view_ui_f=threed_view_overlay,
        )
        self.session = ViewerSession(
            self.slicer_app,
            JCSDiagnosisSceneLogic(self.slicer_app.app_logic),
            options=dict(options or {}),
            min_lesion_ml=float(min_lesion_ml),
        )
        self._build_logics()
        self.ui, editor = build_layout(
            self.server,
            self.layout_logic.layout_manager,
            PanelNames(
                self.case.name,
                self.diagnosis.name,
                self.reading.name,
                self.tables.name,
                self.display.name,
                self.navigation.name,
            ),
            diagnose=self.diagnosis.diagnose,
            cancel=self.diagnosis.cancel,
            update_results=self.diagnosis.update_results,
            chart_click=self.navigation.chart_click,
            row_click=self.navigation.row_click,
            download=self.downloads.download,
        )
        self.editor_logic.set_ui(editor)
        self.navigation.follow_axial_view()
        for view in self.slicer_app.view_manager.get_slice_views():
            view.render_window().AddObserver(vtkCommand.WindowResizeEvent, lambda *_, v=view: _fit_slice(v))

    def _build_logics(self) -> None:
        server, app, session = self.server, self.slicer_app, self.session
        self.layout_logic = LayoutButtonLogic(server, app)
        self.editor_logic = SegmentEditorLogic(server, app)
        self.reading = ReadingLogic(server, app, session)
        self.tables = TablesLogic(server, app, session)
        self.display = DisplayLogic(server, app, session)
        self.navigation = NavigationLogic(server, app, session, on_error=self._show_error)
        self.case = CaseLogic(server, app, session, on_rule=self._on_planned_rule)
        self.diagnosis = DiagnosisLogic(
            server, app, session, on_result=self._on_result, on_updated=self._on_updated
        )
        self.downloads = DownloadLogic(server, app, session)

    @property
    def result(self) -> DiagnosisNodes | None:
        """The result shown (None before Diagnose)."""
        return self.session.result

    def load(self, viewer_input: ViewerInput) -> None:
        """Show the session's CT in every view (lung window); say why Diagnose is blocked, if it is."""
        self.case.load(viewer_input)
        self.navigation.on_case_loaded()

    def _on_planned_rule(self, rule: RuleWording) -> None:
        self.reading.show_rule(rule)
        self.navigation.show_rule(rule)

    def _on_result(self, result: DiagnosisNodes) -> None:
        self.reading.show_result(result.results)
        self.display.show_result(result)
        self.tables.show(result)
        self.navigation.show_result(result)

    def _on_updated(self, result: DiagnosisNodes) -> None:
        self.display.show_3d()
        self.reading.show_update(result.results)
        self.tables.show(result)
        if result.results.reading is not None:  # the segmenter rule's evidence follows the edit
            self.navigation.show_result(result)
        self.navigation.refresh_chart()

    def _show_error(self, message: str) -> None:
        self.diagnosis.data.error = message


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
