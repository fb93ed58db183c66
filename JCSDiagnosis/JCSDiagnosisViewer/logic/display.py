"""What the views show of a result: the heatmap over the CT, and the lesion and lung surfaces and the
slice planes in 3-D, as the page's toggles say."""

from __future__ import annotations

from jcs.terminology import lesion_spec
from JCSDiagnosisLib import display
from JCSDiagnosisLib.logic import DiagnosisNodes
from trame_server import Server
from trame_slicer.app.logic import BaseLogic
from trame_slicer.core import SlicerApp
from trame_slicer.segmentation import SegmentationOverwriteMode

from ..state import DisplayState
from .case import THREED_ZOOM
from .session import ViewerSession


class DisplayLogic(BaseLogic[DisplayState]):
    """Heatmap opacity and 3-D surfaces of the session's result."""

    def __init__(self, server: Server, slicer_app: SlicerApp, session: ViewerSession) -> None:
        super().__init__(server, slicer_app, DisplayState)
        self.session = session
        self.bind_changes(
            {
                (self.name.heatmap_visible, self.name.heatmap_opacity): self._on_heatmap_changed,
                (self.name.lesions_3d, self.name.lungs_3d, self.name.planes_3d): self._on_3d_changed,
            }
        )

    def show_result(self, result: DiagnosisNodes) -> None:
        """Heatmap at the page's opacity, surfaces framed in 3-D, the lesion segment ready to edit."""
        self.session.scene_logic.setHeatmapOpacity(self.heatmap_opacity())
        editor = self._slicer_app.segmentation_editor
        editor.deactivate_effect()
        editor.set_active_segmentation(result.segmentationNode, self.session.volume_node)
        editor.set_active_segment_id(lesion_spec().segment_id)
        # Lesions lie inside the lungs: painting a lesion must not carve it out of the lung segments.
        editor.set_overwrite_mode(SegmentationOverwriteMode.ALLOW_OVERLAP)
        self.show_3d(frame=True)

    def heatmap_opacity(self) -> float:
        return float(self.data.heatmap_opacity) if self.data.heatmap_visible else 0.0

    def _on_heatmap_changed(self, *_: object) -> None:
        if self.session.result is not None:
            self.session.scene_logic.setHeatmapOpacity(self.heatmap_opacity())
            self.session.render_views()

    def _on_3d_changed(self, *_: object) -> None:
        if self.session.result is not None:
            self.show_3d()

    def show_3d(self, frame: bool = False) -> None:
        """Lesion and lung surfaces and the slice planes in the 3-D view as the toggles say; rendered now
        (trame-slicer renders a view only when one of its own setters asks). `frame`: fit the camera."""
        display.showSegments3D(
            self.session.current_result().segmentationNode,
            lesions=bool(self.data.lesions_3d),
            lungs=bool(self.data.lungs_3d),
        )
        views = self._slicer_app.view_manager
        for view in views.get_slice_views():
            view.set_visible_in_3d(bool(self.data.planes_3d))
        for view in views.get_threed_views():
            # Depth peeling drops translucent surfaces in off-screen (EGL) rendering: the lungs vanished.
            view.renderer().SetUseDepthPeeling(False)
            if frame:
                view.fit_view_to_content()
                view.zoom(THREED_ZOOM)
            view.schedule_render()
        self.session.render_views()
