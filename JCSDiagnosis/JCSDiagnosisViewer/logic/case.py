"""The case: show the CT in every view, say why Diagnose is blocked, whether DICOM export works, and
which decision rule the loaded weights will use."""

from __future__ import annotations

import logging
from collections.abc import Callable

from jcs.errors import InputError
from jcs.inference import NO_WEIGHTS_MESSAGE
from jcs.weights import default_weights
from jcs.wording import RuleWording
from JCSDiagnosisLib.engine import inputProblem
from JCSDiagnosisLib.reading import plannedRule
from trame_server import Server
from trame_slicer.app.logic import BaseLogic
from trame_slicer.core import SlicerApp

from ..scene import WINDOW_PRESETS, add_volume_node, set_window
from ..state import NO_DICOM_NOTE, CaseState
from .session import ViewerInput, ViewerSession

logger = logging.getLogger(__name__)

#: After framing the 3-D view on the data, come this much closer (trame-slicer's fit leaves wide margins).
THREED_ZOOM = 0.15


def dicom_export_note(viewer_input: ViewerInput) -> str:
    """Why DICOM-SEG and SR cannot be downloaded for this input; "" when they can."""
    from jcs.dicomseg import check_source_series

    if viewer_input.dicom_dir is None:
        return NO_DICOM_NOTE
    try:
        check_source_series(viewer_input.ct)
    except InputError as exc:
        return f"No DICOM-SEG or SR for this series: {exc}"
    return ""


class CaseLogic(BaseLogic[CaseState]):
    """Loads the session's CT and describes it; `on_rule` hears the rule the weights' card sets."""

    def __init__(
        self,
        server: Server,
        slicer_app: SlicerApp,
        session: ViewerSession,
        on_rule: Callable[[RuleWording], None],
    ) -> None:
        super().__init__(server, slicer_app, CaseState)
        self.session = session
        self.on_rule = on_rule
        self.bind_changes({self.name.window: self._on_window_changed})

    def load(self, viewer_input: ViewerInput) -> None:
        """Show the CT in every view (lung window); say why Diagnose is blocked, if it is."""
        session = self.session
        session.input = viewer_input
        volume = add_volume_node(self.scene, viewer_input.ct, viewer_input.name)
        session.volume_node = volume
        set_window(volume, self.data.window)
        self._show_in_views(volume)
        self._show_planned_rule()
        size, spacing = volume.GetImageData().GetDimensions(), volume.GetSpacing()
        note = dicom_export_note(viewer_input)
        self.data.name = viewer_input.name
        self.data.details = viewer_input.details
        self.data.loaded = True
        self.data.blocker = self.blocker()
        self.data.is_dicom = note == ""
        self.data.dicom_note = note
        self.data.footer = (
            f"{viewer_input.name}: {size[0]} x {size[1]} x {size[2]} voxels, "
            f"{spacing[0]:.2f} x {spacing[1]:.2f} x {spacing[2]:.2f} mm"
        )

    def _show_in_views(self, volume) -> None:
        manager = self._slicer_app.display_manager
        manager.show_volume_in_slice_background(volume)
        manager.show_volume_in_slice_foreground(None)
        for view in self._slicer_app.view_manager.get_slice_views():
            view.set_visible_in_3d(True)
        manager.reset_views()
        for view in self._slicer_app.view_manager.get_threed_views():
            view.zoom(THREED_ZOOM)  # framed on the volume, without the fit's wide margins

    def _show_planned_rule(self) -> None:
        """Say before Diagnose which rule the loaded weights' card makes count."""
        options = self.session.options
        keys = ("decision", "threshold", "classifier", "segmenter")
        rule = plannedRule(self.session.volume_node, **{k: options[k] for k in keys if k in options})
        if rule is None:
            logger.warning("cannot read the decision rule from the weights' card (Diagnose will say why)")
            return
        self.session.rule = rule
        self.on_rule(rule)

    def blocker(self) -> str:
        """Why Diagnose cannot run on this case with these options ('' when it can)."""
        problem = inputProblem(self.session.volume_node)
        if problem:
            return problem
        if not self.session.options.get("classifier") and default_weights("classifier") is None:
            return NO_WEIGHTS_MESSAGE[0].upper() + NO_WEIGHTS_MESSAGE[1:] + "."
        return ""

    def _on_window_changed(self, window: str) -> None:
        if self.session.volume_node is not None and window in WINDOW_PRESETS:
            set_window(self.session.volume_node, window)
