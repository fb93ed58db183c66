"""What the feature logics share: the Slicer application, the scene logic, the case and its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jcs.io import CTVolume
from jcs.wording import RuleWording
from JCSDiagnosisLib.logic import DiagnosisNodes, JCSDiagnosisSceneLogic
from slicer import vtkMRMLScalarVolumeNode
from trame_slicer.core import SlicerApp


@dataclass
class ViewerInput:
    """What the viewer shows: the CT as read by `jcs.io.read_ct`, its name, DICOM folder and description."""

    ct: CTVolume
    name: str
    dicom_dir: Path | None = None
    details: str = ""


@dataclass
class ViewerSession:
    """Server-side objects of one viewer session (not page state): the case, its result and the rule
    that decides it."""

    slicer_app: SlicerApp
    scene_logic: JCSDiagnosisSceneLogic
    #: Options of `JCSDiagnosisSceneLogic.startDiagnosis` (from the command line).
    options: dict[str, Any] = field(default_factory=dict)
    min_lesion_ml: float = 0.1
    input: ViewerInput | None = None
    volume_node: vtkMRMLScalarVolumeNode | None = None
    result: DiagnosisNodes | None = None
    rule: RuleWording | None = None
    #: Row of the full lesion table behind each lesion row the page shows (for jumps).
    lesion_rows: list[int] = field(default_factory=list)

    def current_result(self) -> DiagnosisNodes:
        """The result shown; a clear error before Diagnose."""
        if self.result is None:
            raise ValueError("no result yet: run Diagnose first")
        return self.result

    def current_input(self) -> ViewerInput:
        """The case shown; a clear error before one is loaded."""
        if self.input is None:
            raise ValueError("no case loaded")
        return self.input

    def render_views(self) -> None:
        """Schedule a render of every view: node edits made through the scene logic do not trigger one
        in trame-slicer (its own setters call `schedule_render`)."""
        for view in self.slicer_app.view_manager.get_views():
            view.schedule_render()
