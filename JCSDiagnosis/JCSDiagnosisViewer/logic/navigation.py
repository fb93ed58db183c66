"""Navigation and the per-slice chart: a click on the chart, a slice row or a lesion row opens that
place in the slice views; the chart marks the axial slice shown."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from jcs.wording import RuleWording
from JCSDiagnosisLib.logic import DiagnosisNodes
from JCSDiagnosisLib.volumes import axialSliceCount
from trame_server import Server
from trame_slicer.app.logic import BaseLogic
from trame_slicer.core import SlicerApp

from ..scene import SliceChart, slice_chart
from ..state import ChartState
from .session import ViewerSession

logger = logging.getLogger(__name__)


class NavigationLogic(BaseLogic[ChartState]):
    """Jumps to slices and lesions; draws the chart of the decision rule's evidence."""

    def __init__(
        self, server: Server, slicer_app: SlicerApp, session: ViewerSession, on_error: Any = None
    ) -> None:
        super().__init__(server, slicer_app, ChartState)
        self.session = session
        self.on_error = on_error
        self.chart = SliceChart(np.zeros(0))
        self.probabilities = np.zeros(0)
        #: z (RAS) of each axial slice, inferior first, to find the slice the axial view shows.
        self.slice_positions = np.zeros(0)
        self.current_slice: int | None = None
        self._show_chart(self.chart)

    def follow_axial_view(self) -> None:
        """Mark the slice the axial view shows on the chart (call once the views exist)."""
        self._slicer_app.view_manager.get_view("Red").modified.connect(self._on_axial_slice_changed)

    def on_case_loaded(self) -> None:
        volume = self.session.volume_node
        scene_logic = self.session.scene_logic
        self.slice_positions = np.array(
            [scene_logic.axialSliceCenter(volume, k)[2] for k in range(axialSliceCount(volume))]
        )

    def show_rule(self, rule: RuleWording) -> None:
        """Title the (empty) chart by the rule that will decide, before Diagnose."""
        self._show_chart(SliceChart.for_rule(rule, np.zeros(0)))

    def show_result(self, result: DiagnosisNodes) -> None:
        """The chart of the result's evidence (follows each update under the segmenter rule)."""
        reading = result.results.case
        self.probabilities = np.array([row.probability for row in reading.slices])
        slices = [row.to_json() for row in reading.slices]
        self._show_chart(slice_chart(reading.case.to_json(), slices, self.probabilities))

    def _show_chart(self, chart: SliceChart) -> None:
        self.chart = chart
        self.data.title, self.data.legend = chart.title, chart.legend
        self.refresh_chart()

    def refresh_chart(self) -> None:
        with self.state:
            self.data.svg = self.chart.svg(current=self.current_slice)

    def chart_click(self, fraction: float) -> None:
        """Open the axial slice under a click on the chart (x fraction 0..1)."""
        count = len(self.probabilities)
        if count:
            self.go_to_slice(int(np.clip(fraction * count, 0, count - 1)))

    def row_click(self, table: str, row: int) -> None:
        """Open the slice of a clicked slice-table row, or centre the views on a clicked lesion."""
        result = self.session.result
        if result is None:
            return
        try:
            if table == "slices":
                self.go_to_slice(result.results.case.slices[row].index)
            elif table == "lesions":
                self.session.scene_logic.jumpToLesion(result.segmentationNode, self.session.lesion_rows[row])
                self.session.render_views()
        except (KeyError, IndexError, ValueError) as exc:
            logger.exception("jump to %s row %s failed", table, row)
            if self.on_error is not None:
                self.on_error(f"cannot open {table} row {row}: {exc}")

    def go_to_slice(self, index: int) -> None:
        """Show axial-grid slice `index` (0 = most inferior) in every slice view."""
        self.session.scene_logic.jumpToSlice(self.session.volume_node, index)
        self.session.render_views()

    def _on_axial_slice_changed(self, view: Any) -> None:
        if not len(self.slice_positions):
            return
        index = int(np.argmin(np.abs(self.slice_positions - view.get_slice_value())))
        if index != self.current_slice:
            self.current_slice = index
            self.refresh_chart()
