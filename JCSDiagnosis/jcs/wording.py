"""How a reading is worded for a reader: the decision rule, readable table labels, units and rounding.

One source for the web viewer and the Slicer module (which wraps these strings in its translator):

- :class:`RuleWording`: the decision rule the loaded weights use, read from the classifier's model card
  (before a run) or from a run's ``case`` block (after), with the sentences, chart title and axis that
  follow from it. Nothing here hard-codes a rule or a threshold: both come from the card or the run.
- :func:`summary_rows`, :func:`lesion_view`, :func:`slice_columns`: the summary, lesion and slice tables
  as a reader sees them (grouped sections, labels with units, sensible rounding, the columns a reader
  needs first). The tables' own data and the downloads keep full precision.
- :func:`clinical_note`: an engine note worded for a clinician.

No PyTorch, Slicer or Qt, so any layer can import it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypedDict

from jcs.decision import DEFAULT_THRESHOLD, SegmenterReading
from jcs.options import AUTO, DecisionRule

SLICE_PROBABILITY_CUTOFF = 0.5
"""The classifier rule's per-slice cutoff (paper §III; `jcs.decision.SLICE_THRESHOLD`)."""
DEFAULT_MIN_LESION_ML = 0.1
"""Lesions smaller than this are left out of the lesion table a reader sees (kept in the downloads)."""
NOT_MEASURED = "—"
HEATMAP_LEGEND = (
    "Heat shows where the classifier sees COVID-19 on a slice; its brightness is the slice's COVID-19 "
    "probability (0–1), so slices it calls negative stay dark."
)


class Section(str, Enum):
    """Groups of the summary table, in reading order."""

    READING = "Reading"
    LUNGS = "Lungs"
    OPACIFICATION = "Opacification"
    ZONES = "Zones (upper, middle, lower thirds)"
    LOBES = "Lobes"
    SCORES = "Severity scores"
    DENSITY = "Lesions and density"
    TECHNICAL = "Technical"


# ----------------------------------------------------------------------------------------- the rule
@dataclass(frozen=True)
class RuleWording:
    """The decision rule of a reading and how the page words it.

    ``threshold`` None means T is set per scan (25 mm of slices, `jcs.decision.scaled_threshold`).
    """

    rule: DecisionRule
    threshold: int | None
    min_lung_fraction: float = 0.02
    reason: str = ""
    weights: str = ""

    @classmethod
    def from_card(
        cls,
        card: Mapping[str, Any] | None,
        *,
        decision: DecisionRule | str = AUTO,
        has_segmenter: bool = True,
        threshold: int | None = None,
    ) -> RuleWording:
        """The rule a run with these options will use, as `jcs.inference.DiagnosisEngine.from_registry`
        picks it: ``auto`` takes the classifier card's ``decision`` block when a segmenter is there."""
        card = card or {}
        stated = card.get("decision")
        block: Mapping[str, Any] = stated if isinstance(stated, Mapping) else {}
        if decision == AUTO:
            wanted = block.get("rule") == DecisionRule.SEGMENTER and has_segmenter
            decision = DecisionRule.SEGMENTER if wanted else DecisionRule.CLASSIFIER
        rule = DecisionRule(decision)
        if threshold is None:
            if rule is DecisionRule.SEGMENTER:
                threshold = block.get("threshold")
            else:
                threshold = card.get("threshold", DEFAULT_THRESHOLD)
        share = float(block.get("min_lung_fraction", 0.02))
        reason = str(block.get("reason", "")) if rule is DecisionRule.SEGMENTER else ""
        return cls(
            rule, None if threshold is None else int(threshold), share, reason, str(card.get("name", ""))
        )

    @classmethod
    def from_case(cls, case: Mapping[str, Any], reason: str = "") -> RuleWording:
        """The rule a finished run used (its results.json ``case`` block, or the engine info kept on a
        Slicer segmentation)."""
        rule = DecisionRule(case.get("decision") or DecisionRule.CLASSIFIER)
        threshold = case.get("threshold")
        share = case.get("min_lung_fraction")
        return cls(
            rule,
            None if threshold is None else int(threshold),
            0.02 if share is None else float(share),
            reason if rule is DecisionRule.SEGMENTER else "",
        )

    @property
    def by_segmenter(self) -> bool:
        return self.rule is DecisionRule.SEGMENTER

    def share_text(self) -> str:
        return f"{100 * self.min_lung_fraction:g} %"

    def slice_criterion(self) -> str:
        """When one slice counts, in words."""
        if self.by_segmenter:
            return f"the segmented opacification covers more than {self.share_text()} of the slice's lung"
        return f"the classifier's COVID-19 probability exceeds {SLICE_PROBABILITY_CUTOFF:g}"

    def threshold_text(self) -> str:
        if self.threshold is None:
            return "a threshold T set for each scan (25 mm of slices)"
        return f"T = {self.threshold}"

    def name(self) -> str:
        return "segmenter rule" if self.by_segmenter else "classifier rule (the paper's)"

    def explanation(self) -> str:
        """What decides the case, said before and after a run."""
        head = (
            f"These weights decide by the {self.name()}: a slice counts when {self.slice_criterion()}; "
            f"the case is positive when more than T slices count ({self.threshold_text()})."
        )
        if self.by_segmenter:
            return (
                f"{head} The classifier's slice probabilities and its Grad-CAM heatmap are shown as "
                "explanation but do not decide."
            )
        return (
            f"{head} The Grad-CAM heatmap shows the regions behind the slice scores; the segmenter outlines "
            "the opacities that are measured."
        )

    def why(self) -> str:
        """The card's reason for the rule ('' when the card gives none)."""
        return f"Why this rule (from the weights' card): {self.reason}" if self.reason else ""

    def evidence_label(self) -> str:
        """Name of the per-slice value the rule counts by (chart axis, slice-table column)."""
        return "opacified share of the lung" if self.by_segmenter else "COVID-19 probability"

    def chart_title(self) -> str:
        return f"Per-slice {self.evidence_label()}, the evidence of the {self.name()} (click to open a slice)"

    def chart_legend(self) -> str:
        if self.by_segmenter:
            return f"red: counted · dashed: {self.share_text()} of the lung"
        return f"red: counted · dashed: p = {SLICE_PROBABILITY_CUTOFF:g}"

    def evidence_column(self) -> str:
        """The slice-table field the rule counts by."""
        return "opacified_lung_fraction" if self.by_segmenter else "classifier_probability"

    def counts(self, row: Mapping[str, Any]) -> bool | None:
        """Whether a slice row counts under this rule (None when its evidence is missing)."""
        value = row.get(self.evidence_column(), row.get("probability") if not self.by_segmenter else None)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        cutoff = self.min_lung_fraction if self.by_segmenter else SLICE_PROBABILITY_CUTOFF
        return float(value) > cutoff


def rule_sentence(decision: DecisionRule | str, min_lung_fraction: float) -> str:
    """The decision rule of a run in one sentence (results.json ``case.decision_rule``)."""
    if decision == DecisionRule.SEGMENTER:
        slice_rule = (
            f"the segmenter's opacification covers more than {100 * min_lung_fraction:g} % of its lung area"
        )
    else:
        slice_rule = f"its COVID-19 probability > {SLICE_PROBABILITY_CUTOFF}"
    return f"positive when positive_slice_count > threshold; a slice is positive when {slice_rule}"


def case_line(
    case: Mapping[str, Any], slice_count: int, device: str, precision: str, seconds: float
) -> str:
    """The command line's one-line reading of a case (results.json ``case``): ``case: POSITIVE (...)``."""
    verdict_word = "POSITIVE" if case["positive"] else "negative"
    if case.get("decision") == DecisionRule.SEGMENTER:
        share = 100 * float(case.get("min_lung_fraction") or 0.0)
        counted = (
            f"by the segmenter rule: {case['positive_slice_count']} of {slice_count} slices with "
            f"opacification over {share:g} % of the lung, threshold {case['threshold']}; classifier: "
            f"{case['classifier_positive_slice_count']} slices positive"
        )
    else:
        counted = (
            f"{case['positive_slice_count']} of {slice_count} slices positive, threshold {case['threshold']}"
        )
    return f"case: {verdict_word} ({counted}; {device} {precision}, {seconds:.1f} s)"


def threshold_hint(case: Mapping[str, Any], slice_count: int) -> str:
    """When the paper's T, scaled to this scan, differs from the T used: a note saying so ('' otherwise)."""
    suggested = case.get("suggested_threshold")
    if suggested is None or suggested == case.get("threshold"):
        return ""
    return (
        f"for {slice_count} slices the paper's rule T=25 (about 300 slices of ~1 mm) scales to "
        f"T={suggested}; pass --threshold to use it"
    )


#: Unit token in a field name (jcs.quantify's convention) -> the unit as tables show it.
UNIT_TOKENS = {
    "ml": "mL", "mm": "mm", "mm2": "mm2", "mm3": "mm3", "percent": "%", "hu": "HU", "px": "px", "s": "s",
}


def unit_of(field: str) -> str:
    """Unit of a field from the unit token in its name ('' for counts, fractions, flags and names)."""
    for token in reversed(field.lower().split("_")[1:]):
        if token in UNIT_TOKENS:
            return UNIT_TOKENS[token]
    return ""


def verdict(positive: bool) -> str:
    return "COVID-19 positive" if positive else "COVID-19 negative"


def reading_line(case: Mapping[str, Any], slice_count: int) -> str:
    """What was counted against what, in one line (from a results.json ``case``); the verdict is said
    beside it."""
    rule = RuleWording.from_case(case)
    count = case.get("positive_slice_count", 0)
    if rule.by_segmenter:
        what = f"show opacification over {rule.share_text()} of the lung"
    else:
        what = f"score a COVID-19 probability over {SLICE_PROBABILITY_CUTOFF:g}"
    return f"{count} of {slice_count} slices {what}; positive when more than {rule.threshold} do."


def classifier_aside(case: Mapping[str, Any]) -> str:
    """Under the segmenter rule, what the classifier alone would have counted ('' otherwise)."""
    count = case.get("classifier_positive_slice_count")
    if case.get("decision") != DecisionRule.SEGMENTER or count is None:
        return ""
    return (
        f"The classifier alone scores {count} slices over p = {SLICE_PROBABILITY_CUTOFF:g}; with these "
        "weights it explains but does not decide."
    )


def edited_reading(reading: SegmenterReading) -> str:
    """What the segmenter rule says of a segmentation the reader edited (the AI's reading stands)."""
    return (
        f"Edited segmentation: {reading.positive_slice_count} slices over "
        f"{100 * reading.min_lung_fraction:g} % of the lung (threshold {reading.threshold}), "
        f"{verdict(reading.positive)} by the same rule. The reading above is the AI's and is kept."
    )


# ------------------------------------------------------------------------------------------- notes
_DROPPED = re.compile(
    r"^(?P<ml>[\d.]+) mL of predicted opacification lay more than (?P<mm>[\d.]+) mm from the lungs "
    r"and was dropped"
)


def clinical_note(note: str) -> str:
    """An engine note worded for a clinician (notes not known here are returned as they are)."""
    match = _DROPPED.match(note)
    if match:
        return (
            f"The segmenter also marked {match['ml']} mL more than {match['mm']} mm outside the lungs "
            "(e.g. bowel gas or soft tissue). These marks are not lung lesions: they were removed and do "
            "not count in this reading."
        )
    return note[:1].upper() + note[1:]


# ---------------------------------------------------------------------------------- field wording
@dataclass(frozen=True)
class FieldWording:
    """How one field is shown: label, unit, decimals, a scale (fractions as percent) and its section."""

    label: str
    unit: str = ""
    decimals: int | None = None
    scale: float = 1.0
    section: Section = Section.TECHNICAL

    def text(self, value: Any) -> str:
        """The value as the reader sees it (the data keep full precision)."""
        if value is None or value == "":
            return NOT_MEASURED
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                return NOT_MEASURED
            number = value * self.scale
            if self.decimals is None:
                return f"{number:g}" if isinstance(number, float) else str(number)
            return f"{number:.{self.decimals}f}"
        return str(value)


class _Style(TypedDict, total=False):
    """Unit and decimals of a family of fields (keyword arguments of :class:`FieldWording`)."""

    unit: str
    decimals: int | None


_PERCENT: _Style = {"unit": "%", "decimals": 1}
_SUMMARY: dict[str, FieldWording] = {
    "positive": FieldWording("AI reading: COVID-19 positive", section=Section.READING),
    "positive_slice_count": FieldWording("Slices counted by the rule", section=Section.READING),
    "threshold": FieldWording("Threshold T (positive when more slices count)", section=Section.READING),
    "segmentation": FieldWording("Segmentation", section=Section.READING),
    "current_positive": FieldWording(
        "Edited segmentation: positive by the same rule", section=Section.READING
    ),
    "current_positive_slice_count": FieldWording(
        "Edited segmentation: slices counted", section=Section.READING
    ),
    "lung_volume_ml": FieldWording("Lung volume", "mL", 0, section=Section.LUNGS),
    "lung_volume_ml_right": FieldWording("Right lung volume", "mL", 0, section=Section.LUNGS),
    "lung_volume_ml_left": FieldWording("Left lung volume", "mL", 0, section=Section.LUNGS),
    "opacification_volume_ml": FieldWording(
        "Opacification in the lungs", "mL", 1, section=Section.OPACIFICATION
    ),
    "opacification_percent": FieldWording(
        "Share of the lungs opacified", **_PERCENT, section=Section.OPACIFICATION
    ),
    "opacification_volume_ml_right": FieldWording(
        "Right lung opacification", "mL", 1, section=Section.OPACIFICATION
    ),
    "opacification_percent_right": FieldWording(
        "Share of the right lung opacified", **_PERCENT, section=Section.OPACIFICATION
    ),
    "opacification_volume_ml_left": FieldWording(
        "Left lung opacification", "mL", 1, section=Section.OPACIFICATION
    ),
    "opacification_percent_left": FieldWording(
        "Share of the left lung opacified", **_PERCENT, section=Section.OPACIFICATION
    ),
    "bilateral": FieldWording("Both lungs involved", section=Section.OPACIFICATION),
    "severity_score_6zone": FieldWording("Severity score, 6 zones (0-24)", section=Section.SCORES),
    "severity_score_5lobe": FieldWording("CT severity score, 5 lobes (0-25)", section=Section.SCORES),
    "lesion_count": FieldWording("Lesions (connected regions, any size)", section=Section.DENSITY),
    "peripheral_lesion_fraction": FieldWording(
        "Opacification within 10 mm of the lung surface", "%", 0, 100.0, Section.DENSITY
    ),
    "lesion_mean_hu": FieldWording("Mean density of the opacification", "HU", 0, section=Section.DENSITY),
    "lesion_median_hu": FieldWording("Median density of the opacification", "HU", 0, section=Section.DENSITY),
    "ground_glass_fraction": FieldWording("Ground glass (-750 to -300 HU)", "%", 0, 100.0, Section.DENSITY),
    "consolidation_fraction": FieldWording("Consolidation (-300 to 100 HU)", "%", 0, 100.0, Section.DENSITY),
    "opacification_volume_ml_outside_lungs": FieldWording(
        "Segmented outside the lungs (not counted)", "mL", 1
    ),
    "infection_ratio_fraction": FieldWording("Infection ratio (fraction of lung volume)", "", 4),
    "voxel_volume_ml": FieldWording("Voxel volume", "mL", 6),
    "peripheral_distance_mm": FieldWording("Peripheral band width", "mm", 0),
    "min_lesion_voxels": FieldWording("Smallest lesion counted", "voxels"),
    "lesion_connectivity": FieldWording("Lesion connectivity (neighbours)"),
}
_REGION_FIELDS: tuple[tuple[str, str, _Style], ...] = (
    ("opacification_percent_", "opacified", _PERCENT),
    ("severity_score_", "score", {}),
    ("opacification_volume_ml_", "opacification", {"unit": "mL", "decimals": 1}),
    ("lung_volume_ml_", "lung volume", {"unit": "mL", "decimals": 0}),
)
_SECTION_ORDER = list(Section)


def _region_wording(key: str) -> FieldWording | None:
    """Zone (``right_upper``) and lobe (``right_upper_lobe``) fields of `jcs.quantify`."""
    for prefix, what, style in _REGION_FIELDS:
        if not key.startswith(prefix):
            continue
        region = key[len(prefix) :]
        if region in ("right", "left", "outside_lungs", "6zone", "5lobe") or "_" not in region:
            return None
        is_lobe = region.endswith("_lobe")
        name = region.removesuffix("_lobe").replace("_", " ").capitalize()
        label = f"{name} {'lobe' if is_lobe else 'zone'}, {what}"
        shown = what in ("opacified", "score")
        section = (Section.LOBES if is_lobe else Section.ZONES) if shown else Section.TECHNICAL
        return FieldWording(label, section=section, **style)
    return None


def field_wording(key: str) -> FieldWording:
    """How the summary field ``key`` is shown; unknown fields go to the technical section as they are."""
    known = _SUMMARY.get(key) or _region_wording(key)
    if known is not None:
        return known
    return FieldWording(key.replace("_", " ").capitalize())


@dataclass(frozen=True)
class SummaryRow:
    """One row of the readable summary."""

    section: Section
    key: str
    label: str
    value: str
    unit: str


def summary_rows(
    summary: Mapping[str, Any], *, technical: bool = True, empty: bool = False
) -> list[SummaryRow]:
    """The summary grouped into sections in reading order; fields that were not measured (None) are left
    out unless ``empty``, and the technical section only when ``technical``."""
    rows = []
    for position, (key, value) in enumerate(summary.items()):
        if isinstance(value, (dict, list)) or (not empty and (value is None or value == "")):
            continue
        wording = field_wording(key)
        if wording.section is Section.TECHNICAL and not technical:
            continue
        rows.append((wording, position, key, value))
    rows.sort(key=lambda item: (_SECTION_ORDER.index(item[0].section), _rank(item[2], item[1])))
    return [SummaryRow(w.section, key, w.label, w.text(value), w.unit) for w, _pos, key, value in rows]


def _rank(key: str, position: int) -> int:
    keys = list(_SUMMARY)
    return keys.index(key) if key in keys else len(keys) + position


# ------------------------------------------------------------------------------------------ lesions
#: Lesion columns a reader needs first, in order; the other fields follow in the downloads only.
LESION_COLUMNS: dict[str, FieldWording] = {
    "lesion_id": FieldWording("Lesion"),
    "volume_ml": FieldWording("Volume", "mL", 2),
    "lung_side": FieldWording("Lung"),
    "zone": FieldWording("Zone"),
    "location": FieldWording("Location"),
    "largest_axial_area_mm2": FieldWording("Largest axial area", "mm²", 0),
    "mean_hu": FieldWording("Mean density", "HU", 0),
    "ground_glass_fraction": FieldWording("Ground glass", "%", 0, 100.0),
    "consolidation_fraction": FieldWording("Consolidation", "%", 0, 100.0),
    "first_slice": FieldWording("First slice"),
    "last_slice": FieldWording("Last slice"),
    "bbox_size_x_mm": FieldWording("Width (R-L)", "mm", 0),
    "bbox_size_y_mm": FieldWording("Depth (A-P)", "mm", 0),
    "bbox_size_z_mm": FieldWording("Height (S-I)", "mm", 0),
    "lobe": FieldWording("Lobe"),
    "peak_gradcam": FieldWording("Peak heatmap", "", 2),
}


@dataclass(frozen=True)
class LesionView:
    """The lesion table as a reader sees it: lesions of at least ``min_volume_ml``, biggest first."""

    columns: list[tuple[str, FieldWording]]
    rows: list[dict[str, str]]
    indices: list[int]
    """Row index of each shown lesion in the full lesion table (for jumps)."""
    hidden_count: int
    hidden_ml: float
    min_volume_ml: float

    def caption(self) -> str:
        """States the minimum size and what was left out."""
        shown = f"{len(self.rows)} lesions of at least {self.min_volume_ml:g} mL, largest first"
        if not self.hidden_count:
            return shown + "."
        return (
            f"{shown}; {self.hidden_count} smaller ones ({self.hidden_ml:.2f} mL together) are counted "
            "in the volumes and listed in the downloads."
        )


def lesion_view(
    lesions: Sequence[Mapping[str, Any]], min_volume_ml: float = DEFAULT_MIN_LESION_ML
) -> LesionView:
    """Lesions of at least ``min_volume_ml`` (largest first) with the reader's columns, rounded."""
    if min_volume_ml < 0:
        raise ValueError(f"the minimum lesion size must not be negative, got {min_volume_ml}")
    present = {key for row in lesions for key in row}
    columns = [(key, wording) for key, wording in LESION_COLUMNS.items() if key in present]
    columns = [(key, wording) for key, wording in columns if any(row.get(key) is not None for row in lesions)]
    kept, hidden_ml = [], 0.0
    for index, row in enumerate(lesions):
        volume = row.get("volume_ml")
        if volume is not None and float(volume) < min_volume_ml:
            hidden_ml += float(volume)
            continue
        kept.append(index)
    kept.sort(key=lambda i: -float(lesions[i].get("volume_ml") or 0.0))
    rows = [{key: wording.text(lesions[i].get(key)) for key, wording in columns} for i in kept]
    return LesionView(columns, rows, kept, len(lesions) - len(kept), hidden_ml, float(min_volume_ml))


# ------------------------------------------------------------------------------------------- slices
SLICE_COLUMNS: dict[str, FieldWording] = {
    "slice_index": FieldWording("Slice"),
    "opacified_lung_fraction": FieldWording("Opacified share of the lung", "%", 2, 100.0),
    "classifier_probability": FieldWording("Classifier probability", "", 2),
    "position_z_mm": FieldWording("Position z", "mm", 1),
    "opacification_area_mm2": FieldWording("Opacified area", "mm²", 0),
    "lung_area_mm2": FieldWording("Lung area", "mm²", 0),
}
COUNTED_COLUMN = "counted"


def slice_columns(rule: RuleWording) -> list[tuple[str, FieldWording]]:
    """Slice-table columns: the slice, the value the rule counts by, whether it counted, the rest."""
    evidence = rule.evidence_column()
    order = ["slice_index", evidence, COUNTED_COLUMN] + [
        key for key in SLICE_COLUMNS if key not in ("slice_index", evidence)
    ]
    counted = FieldWording("Counted by rule")
    return [(key, counted if key == COUNTED_COLUMN else SLICE_COLUMNS[key]) for key in order]


def slice_rows(rows: Sequence[Mapping[str, Any]], rule: RuleWording) -> list[dict[str, str]]:
    """Slice rows as text in :func:`slice_columns` order (``counted`` from the rule, not a stored flag)."""
    columns = slice_columns(rule)
    shown = []
    for row in rows:
        values = dict(row)
        values[COUNTED_COLUMN] = rule.counts(row)
        shown.append({key: wording.text(values.get(key)) for key, wording in columns})
    return shown


def header(wording: FieldWording) -> str:
    """Column title with its unit."""
    return f"{wording.label} ({wording.unit})" if wording.unit else wording.label
