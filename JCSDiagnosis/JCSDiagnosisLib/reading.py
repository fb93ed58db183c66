"""What the module and the viewer say about a result, composed from `jcs.wording` (the one place
where a reading is worded): the rule before Diagnose, the reading after it, the lesions shown."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import slicer

from . import tables, volumes

if TYPE_CHECKING:
    from jcs.wording import RuleWording

    from .nodes import DiagnosisResults


def plannedRule(
    volumeNode,
    *,
    decision: str = "auto",
    threshold: int | None = None,
    classifier: str | None = None,
    segmenter: str | None = None,
) -> RuleWording | None:
    """The decision rule a diagnosis of `volumeNode` with these options will use, read from the
    classifier's model card as the engine reads it (T scaled to the scan when the card sets none).
    None when the weights cannot be read here (no PyTorch yet, no weights, unreadable card)."""
    from jcs.decision import scaled_threshold
    from jcs.wording import RuleWording

    try:
        from jcs.weights import default_weights, find_weights

        classifier = classifier or default_weights("classifier")
        segmenter = segmenter or default_weights("segmenter")
        card = find_weights(classifier).data if classifier else None
    except Exception:  # noqa: BLE001 - ImportError without PyTorch, WeightsError: the run says it
        return None
    if card is None:
        return None
    rule = RuleWording.from_card(
        card, decision=decision, has_segmenter=segmenter is not None, threshold=threshold
    )
    if rule.threshold is None and volumeNode is not None and volumeNode.GetImageData() is not None:
        axis = volumes.superiorAxis(volumeNode)
        spacing = float(np.linalg.norm(volumes.ijkToRasMatrix(volumeNode)[:3, axis]))
        count = volumes.axialSliceCount(volumeNode)
        rule = replace(rule, threshold=scaled_threshold(count, spacing if spacing > 0 else None))
    return rule


def readingLines(results: DiagnosisResults) -> list[str]:
    """The reading in lines (what the module's status line shows): verdict and what was counted, the
    classifier's aside under the segmenter rule, the rule's reading of an edit, the engine's notes."""
    from jcs.wording import classifier_aside, clinical_note, edited_reading, reading_line, verdict

    case = results.case.case.to_json()
    count = len(results.case.slices)
    head = verdict(bool(results.case.case.positive))
    lines = [f"{head}. {reading_line(case, count)}" if count else head, classifier_aside(case)]
    if results.edited and results.reading is not None:
        lines.append(edited_reading(results.reading))
    lines += [clinical_note(note) for note in results.case.notes]
    return [line for line in lines if line]


def lesionRowsShown(lesionTableNode: slicer.vtkMRMLTableNode, minVolumeMl: float) -> list[int]:
    """Rows of the lesion table a reader sees: lesions of at least `minVolumeMl` (`jcs.wording`)."""
    from jcs.wording import lesion_view

    return sorted(lesion_view(tables.readTable(lesionTableNode), minVolumeMl).indices)
