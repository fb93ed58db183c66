"""Feature logics of the viewer, one per panel feature, each bound to its typed state (trame-slicer's
`BaseLogic[T]`): the case, the diagnosis run, the reading and tables, the display, navigation and
downloads. They share a :class:`~.session.ViewerSession`; `viewer.JCSViewer` wires them together."""

from .case import CaseLogic
from .diagnosis import DiagnosisLogic
from .display import DisplayLogic
from .downloads import DownloadLogic
from .navigation import NavigationLogic
from .results import ReadingLogic, TablesLogic
from .session import ViewerInput, ViewerSession

__all__ = [
    "CaseLogic",
    "DiagnosisLogic",
    "DisplayLogic",
    "DownloadLogic",
    "NavigationLogic",
    "ReadingLogic",
    "TablesLogic",
    "ViewerInput",
    "ViewerSession",
]
