"""jcs.wording: the rule named from the weights' card, readable tables, notes for a clinician."""

from __future__ import annotations

import json

import pytest
from jcs.wording import (
    DecisionRule,
    RuleWording,
    Section,
    classifier_aside,
    clinical_note,
    field_wording,
    lesion_view,
    reading_line,
    slice_columns,
    slice_rows,
    summary_rows,
)

SEGMENTER_CARD = {
    "name": "cls",
    "threshold": 20,
    "decision": {"rule": "segmenter", "min_lung_fraction": 0.03, "reason": "it does not generalise"},
}


def test_rule_follows_the_card_and_the_options():
    rule = RuleWording.from_card(SEGMENTER_CARD)
    assert (rule.rule, rule.threshold, rule.min_lung_fraction) == (DecisionRule.SEGMENTER, None, 0.03)
    assert (
        "segmenter rule" in rule.explanation() and "more than 3 % of the slice's lung" in rule.explanation()
    )
    assert "set for each scan" in rule.explanation()  # no T in the card's block: scaled per scan
    assert rule.why().endswith("it does not generalise")
    # without a segmenter, or asked for the paper's rule, the classifier decides with the card's T
    for paper in (
        RuleWording.from_card(SEGMENTER_CARD, has_segmenter=False),
        RuleWording.from_card(SEGMENTER_CARD, decision="classifier"),
    ):
        assert (paper.rule, paper.threshold, paper.why()) == (DecisionRule.CLASSIFIER, 20, "")
        assert "probability exceeds 0.5" in paper.explanation() and "(T = 20)" in paper.explanation()
    assert RuleWording.from_card({}, threshold=7).threshold == 7
    assert RuleWording.from_card({}).threshold == 25  # the paper's T when the card names none


def test_rule_wording_matches_the_bundled_card():
    """What the page says comes from the card shipped in the tree (whatever its figures are)."""
    from jcs.weights import default_weights, find_weights

    name = default_weights("classifier")
    if name is None:
        pytest.skip("no bundled classifier")
    card = find_weights(name).data
    rule = RuleWording.from_card(card)
    block = card.get("decision") or {}
    assert rule.by_segmenter == (block.get("rule") == "segmenter")
    if rule.by_segmenter:
        assert f"{100 * block.get('min_lung_fraction', 0.02):g} %" in rule.explanation()
        assert rule.reason == block.get("reason", "")


def test_chart_and_slice_table_follow_the_rule():
    ruled = RuleWording.from_case({"decision": "segmenter", "min_lung_fraction": 0.02, "threshold": 12})
    paper = RuleWording.from_case({"decision": "classifier", "threshold": 25})
    assert "opacified share of the lung" in ruled.chart_title() and "segmenter rule" in ruled.chart_title()
    assert "COVID-19 probability" in paper.chart_title()
    assert [key for key, _ in slice_columns(ruled)][:4] == [
        "slice_index",
        "opacified_lung_fraction",
        "counted",
        "classifier_probability",
    ]
    assert [key for key, _ in slice_columns(paper)][:3] == [
        "slice_index",
        "classifier_probability",
        "counted",
    ]
    rows = [
        {"slice_index": 0, "classifier_probability": 0.55, "opacified_lung_fraction": 0.001},
        {"slice_index": 1, "classifier_probability": 0.25, "opacified_lung_fraction": 0.0417},
    ]
    shown = slice_rows(rows, ruled)
    assert [(r["opacified_lung_fraction"], r["counted"], r["classifier_probability"]) for r in shown] == [
        ("0.10", "no", "0.55"),
        ("4.17", "yes", "0.25"),
    ]
    assert [r["counted"] for r in slice_rows(rows, paper)] == ["yes", "no"]


def test_reading_line_and_the_classifier_aside():
    case = {
        "decision": "segmenter",
        "min_lung_fraction": 0.02,
        "threshold": 12,
        "positive": True,
        "positive_slice_count": 30,
        "classifier_positive_slice_count": 43,
    }
    assert reading_line(case, 48) == (
        "30 of 48 slices show opacification over 2 % of the lung; positive when more than 12 do."
    )
    assert classifier_aside(case).startswith("The classifier alone scores 43 slices over p = 0.5")
    paper = {"decision": "classifier", "threshold": 25, "positive_slice_count": 3}
    assert reading_line(paper, 300) == (
        "3 of 300 slices score a COVID-19 probability over 0.5; positive when more than 25 do."
    )
    assert classifier_aside(paper) == ""


def test_summary_is_grouped_labelled_and_rounded():
    summary = {
        "slice_count": 48,
        "voxel_volume_ml": 0.0011191482543945314,
        "lung_volume_ml": 3425.584104652405,
        "opacification_volume_ml": 77.78416112518312,
        "opacification_percent": 2.2706831520949007,
        "bilateral": True,
        "opacification_percent_right_upper": 0.4308827847161054,
        "severity_score_right_upper": 1,
        "lung_volume_ml_right_upper": 575.57,
        "severity_score_6zone": 6,
        "severity_score_5lobe": None,
        "ground_glass_fraction": 0.6499816872176779,
        "positive": True,
        "positive_slice_count": 30,
        "segmentation": "automatic",
        "some_new_field": 3,
    }
    rows = summary_rows(summary)
    sections = list(dict.fromkeys(row.section for row in rows))
    assert sections == [
        Section.READING,
        Section.LUNGS,
        Section.OPACIFICATION,
        Section.ZONES,
        Section.SCORES,
        Section.DENSITY,
        Section.TECHNICAL,
    ]
    by_key = {row.key: (row.label, row.value, row.unit) for row in rows}
    assert by_key["opacification_volume_ml"] == ("Opacification in the lungs", "77.8", "mL")
    assert by_key["lung_volume_ml"] == ("Lung volume", "3426", "mL")
    assert by_key["opacification_percent"] == ("Share of the lungs opacified", "2.3", "%")
    assert by_key["opacification_percent_right_upper"] == ("Right upper zone, opacified", "0.4", "%")
    assert by_key["ground_glass_fraction"][1:] == ("65", "%")  # a fraction shown as percent
    assert by_key["bilateral"][1] == "yes" and by_key["positive"][1] == "yes"
    assert "severity_score_5lobe" not in by_key  # not measured (no lobes): left out
    assert field_wording("lung_volume_ml_right_upper").section is Section.TECHNICAL
    assert by_key["some_new_field"] == ("Some new field", "3", "")
    assert [row.key for row in summary_rows(summary, technical=False)][-1] == "ground_glass_fraction"
    assert len(summary_rows(summary, empty=True)) == len(summary)  # the table node keeps every field


def test_lesion_view_lists_readable_columns_above_a_stated_minimum():
    lesions = [
        {
            "lesion_id": 1,
            "volume_ml": 5.488303,
            "voxel_count": 4904,
            "lung_side": "right",
            "zone": "right lower",
            "lobe": None,
            "ground_glass_fraction": 0.7757,
            "first_slice": 0,
            "last_slice": 5,
        },
        {
            "lesion_id": 2,
            "volume_ml": 0.017,
            "voxel_count": 15,
            "lung_side": "left",
            "zone": "left upper",
            "lobe": None,
            "ground_glass_fraction": 1.0,
            "first_slice": 9,
            "last_slice": 9,
        },
        {
            "lesion_id": 3,
            "volume_ml": 55.81,
            "voxel_count": 49000,
            "lung_side": "right",
            "zone": "right middle",
            "lobe": None,
            "ground_glass_fraction": 0.5,
            "first_slice": 10,
            "last_slice": 30,
        },
    ]
    view = lesion_view(lesions, 0.1)
    assert [key for key, _ in view.columns] == [
        "lesion_id",
        "volume_ml",
        "lung_side",
        "zone",
        "ground_glass_fraction",
        "first_slice",
        "last_slice",
    ]  # lobe (never measured here) and voxel counts are left to the downloads
    assert view.indices == [2, 0]  # largest first, the 0.017 mL speck left out
    assert view.rows[1]["volume_ml"] == "5.49" and view.rows[1]["ground_glass_fraction"] == "78"
    assert view.caption() == (
        "2 lesions of at least 0.1 mL, largest first; 1 smaller ones (0.02 mL together) are counted in the "
        "volumes and listed in the downloads."
    )
    assert lesion_view(lesions, 0).hidden_count == 0
    with pytest.raises(ValueError, match="must not be negative"):
        lesion_view(lesions, -1)


def test_engine_notes_are_worded_for_a_clinician():
    dropped = (
        "179.8 mL of predicted opacification lay more than 10 mm from the lungs and was dropped "
        "(--lesion-margin-mm)"
    )
    worded = clinical_note(dropped)
    assert "179.8 mL" in worded and "dropped" not in worded and "not lung lesions" in worded
    assert clinical_note("no lungs were found; the case was decided by the classifier rule").startswith(
        "No lungs"
    )
    json.dumps(worded)


def test_the_command_lines_reading_and_units_are_worded_here():
    from jcs.wording import case_line, rule_sentence, threshold_hint, unit_of

    case = {"positive": True, "decision": "segmenter", "positive_slice_count": 30, "threshold": 12,
            "classifier_positive_slice_count": 43, "min_lung_fraction": 0.02, "suggested_threshold": 12}
    assert case_line(case, 48, "cpu", "fp32", 49.24) == (
        "case: POSITIVE (by the segmenter rule: 30 of 48 slices with opacification over 2 % of the lung, "
        "threshold 12; classifier: 43 slices positive; cpu fp32, 49.2 s)"
    )
    paper = {**case, "positive": False, "decision": "classifier", "threshold": 25}
    assert case_line(paper, 48, "cuda", "fp16", 3.0) == (
        "case: negative (30 of 48 slices positive, threshold 25; cuda fp16, 3.0 s)"
    )
    assert threshold_hint(case, 48) == ""
    assert threshold_hint(paper, 48).startswith("for 48 slices the paper's rule T=25") and "T=12" in (
        threshold_hint(paper, 48)
    )
    assert rule_sentence("classifier", 0.02).endswith("its COVID-19 probability > 0.5")
    assert "covers more than 2 % of its lung area" in rule_sentence("segmenter", 0.02)
    fields = ("opacification_volume_ml", "lung_area_mm2", "mean_hu", "lesion_count", "opacification_percent",
              "largest_axial_area_px", "peripheral_fraction")
    assert [unit_of(k) for k in fields] == ["mL", "mm2", "HU", "", "%", "px", ""]
