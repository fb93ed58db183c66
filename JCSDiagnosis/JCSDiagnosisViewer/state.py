"""The page's state as typed dataclasses, one per feature (trame's `TypedState`, as trame-slicer does).

Each feature logic (:mod:`.logic`) owns one of these; the layout (:mod:`.ui`) binds widgets to the
state names the typed state gives (``logic.name.busy``), so a misspelt name fails when the page is
built instead of showing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NO_CASE_DETAILS = "Start jcs-viewer with a CT file, a DICOM folder or --sample."
NO_DICOM_NOTE = "DICOM-SEG and SR need a DICOM input series."
DEFAULT_HEATMAP_OPACITY = 0.4


@dataclass
class CaseState:
    """The loaded CT: its name and description, why Diagnose is blocked, whether DICOM export works."""

    name: str = "no case loaded"
    details: str = NO_CASE_DETAILS
    footer: str = ""
    loaded: bool = False
    blocker: str = ""
    is_dicom: bool = False
    dicom_note: str = NO_DICOM_NOTE
    window: str = "Lung"


@dataclass
class RunState:
    """A diagnosis or an update in progress (the engine's stage and progress) and the last error."""

    busy: bool = False
    running: bool = False
    stage: str = ""
    progress: int = 0
    error: str = ""
    #: What 'Update results' is doing or did.
    edit_note: str = ""


@dataclass
class ReadingState:
    """The decision card: the rule (before and after Diagnose), the verdict, what was counted, notes."""

    rule_text: str = ""
    rule_why: str = ""
    has_results: bool = False
    decision: str = ""
    positive: bool = False
    reading_line: str = ""
    decision_basis: str = ""
    current_reading: str = ""
    notes: list[str] = field(default_factory=list)
    lesion_ml: str = ""
    lesion_pct: str = ""
    segmentation: str = ""
    weights: str = ""


@dataclass
class SummaryRow:
    """One readable summary row (`jcs.wording.summary_rows`)."""

    label: str = ""
    value: str = ""
    unit: str = ""


@dataclass
class SummarySection:
    title: str = ""
    rows: list[SummaryRow] = field(default_factory=list)


@dataclass
class TablesState:
    """The readable tables: summary in sections, the lesions a reader needs, the slices."""

    tab: str = "summary"
    summary_sections: list[SummarySection] = field(default_factory=list)
    lesion_caption: str = ""
    lesions_headers: list[dict[str, str]] = field(default_factory=list)
    lesions_items: list[dict[str, str]] = field(default_factory=list)
    slices_headers: list[dict[str, str]] = field(default_factory=list)
    slices_items: list[dict[str, str]] = field(default_factory=list)


@dataclass
class DisplayState:
    """The heatmap overlay in the slice views and what the 3-D view shows."""

    heatmap_visible: bool = True
    heatmap_opacity: float = DEFAULT_HEATMAP_OPACITY
    lesions_3d: bool = True
    lungs_3d: bool = True
    planes_3d: bool = False


@dataclass
class ChartState:
    """The per-slice chart of the decision rule's evidence (an SVG) with its title and legend."""

    svg: str = ""
    title: str = ""
    legend: str = ""
