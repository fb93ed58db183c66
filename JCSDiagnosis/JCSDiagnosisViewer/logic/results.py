"""A result on the page: the decision card (rule, verdict, what was counted, notes) and the readable
tables, worded by `jcs.wording`. The table nodes and downloads keep every field at full precision."""

from __future__ import annotations

from typing import Any

from jcs.wording import (
    RuleWording,
    classifier_aside,
    clinical_note,
    edited_reading,
    header,
    lesion_view,
    reading_line,
    slice_columns,
    slice_rows,
    summary_rows,
    verdict,
)
from JCSDiagnosisLib.logic import DiagnosisNodes, DiagnosisResults
from JCSDiagnosisLib.tables import sliceRecords
from trame_server import Server
from trame_slicer.app.logic import BaseLogic
from trame_slicer.core import SlicerApp

from ..state import ReadingState, SummaryRow, SummarySection, TablesState
from .session import ViewerSession


class ReadingLogic(BaseLogic[ReadingState]):
    """The decision card."""

    def __init__(self, server: Server, slicer_app: SlicerApp, session: ViewerSession) -> None:
        super().__init__(server, slicer_app, ReadingState)
        self.session = session

    def show_rule(self, rule: RuleWording) -> None:
        """Name the decision rule (from the weights' card before Diagnose, from the case after it)."""
        self.data.rule_text, self.data.rule_why = rule.explanation(), rule.why()

    def show_result(self, results: DiagnosisResults) -> None:
        """The AI's reading of a fresh diagnosis."""
        decision = results.case.case
        case = decision.to_json()
        planned = self.session.rule
        self.session.rule = RuleWording.from_case(case, planned.reason if planned else "")
        self.show_rule(self.session.rule)
        self.data.has_results = True
        self.data.decision = verdict(decision.positive)
        self.data.positive = decision.positive
        self.data.reading_line = reading_line(case, len(results.case.slices))
        self.data.decision_basis = classifier_aside(case)
        self.data.current_reading = ""
        self.data.notes = [clinical_note(note) for note in results.case.notes]
        self.data.weights = weights_text(results.case.weights)
        self.show_values(results)

    def show_update(self, results: DiagnosisResults) -> None:
        """After 'Update results': the figures of the edit and the rule's reading of it (the AI's stays)."""
        reading = results.reading if results.edited else None
        self.data.current_reading = edited_reading(reading) if reading is not None else ""
        self.show_values(results)

    def show_values(self, results: DiagnosisResults) -> None:
        summary = results.summary()
        self.data.lesion_ml = rounded(summary.get("opacification_volume_ml"))
        self.data.lesion_pct = rounded(summary.get("opacification_percent"))
        self.data.segmentation = str(summary.get("segmentation", ""))


class TablesLogic(BaseLogic[TablesState]):
    """The summary in sections, the lesions a reader needs and the slices with the rule's evidence first."""

    def __init__(self, server: Server, slicer_app: SlicerApp, session: ViewerSession) -> None:
        super().__init__(server, slicer_app, TablesState)
        self.session = session

    def show(self, result: DiagnosisNodes) -> None:
        sections: list[SummarySection] = []
        for row in summary_rows(result.results.summary()):
            if not sections or sections[-1].title != row.section.value:
                sections.append(SummarySection(row.section.value))
            sections[-1].rows.append(SummaryRow(row.label, row.value, row.unit))
        self.data.summary_sections = sections

        lesions = lesion_view(
            [row.to_json() for row in result.results.case.lesions], self.session.min_lesion_ml
        )
        self.session.lesion_rows = lesions.indices
        self.data.lesions_headers = [{"title": header(w), "key": key} for key, w in lesions.columns]
        self.data.lesions_items = lesions.rows
        self.data.lesion_caption = lesions.caption()

        rule = self.session.rule
        assert rule is not None
        self.data.slices_headers = [{"title": header(w), "key": key} for key, w in slice_columns(rule)]
        self.data.slices_items = slice_rows(sliceRecords(result.results.case.slices), rule)


def rounded(value: Any) -> str:
    """A value as the decision card shows it: one decimal, two below 1 (the tables keep all)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    return f"{number:.1f}" if abs(number) >= 1 else f"{number:.2f}"


def weights_text(weights: dict[str, Any]) -> str:
    names = [f"{kind}: {info.get('name', '?')}" for kind, info in weights.items() if info]
    return "Weights " + ", ".join(names) if names else ""
