"""Result nodes of one diagnosis: created once per run, found again from the segmentation.

A diagnosis makes a heatmap volume, a segmentation (lesions and the two lungs), three tables and a
chart. The segmentation references the others by role and keeps the engine's reading (a
:class:`jcs.pipeline.CaseResult`), so every node of a result can be found and described again after the
scene is saved and reloaded. New nodes per run: re-running never overwrites an edited segmentation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import slicer
from jcs.options import DecisionRule
from jcs.terminology import SegmentSpec, lesion_spec, lung_specs

from . import display, tables, volumes

if TYPE_CHECKING:
    from jcs.decision import SegmenterReading
    from jcs.pipeline import CaseResult

ATTRIBUTE_PREFIX = "JCSDiagnosis."
#: The engine's reading (results.json without the arrays), kept on the segmentation so a result can be
#: updated, described and exported after the scene is saved and reloaded.
READING_ATTRIBUTE = ATTRIBUTE_PREFIX + "reading"
AUTOMATIC_HASH_ATTRIBUTE = ATTRIBUTE_PREFIX + "automaticLesionSha256"
RESULTS_HASH_ATTRIBUTE = ATTRIBUTE_PREFIX + "resultsLesionSha256"
ROLE_HEATMAP = "jcsHeatmap"
ROLE_SUMMARY = "jcsSummaryTable"
ROLE_LESIONS = "jcsLesionTable"
ROLE_SLICES = "jcsSliceTable"
ROLE_CHART = "jcsPlotChart"
ROLES = (ROLE_HEATMAP, ROLE_SUMMARY, ROLE_LESIONS, ROLE_SLICES, ROLE_CHART)
#: Summary fields of the segmenter rule re-applied to the current (edited) segmentation.
SUMMARY_CURRENT_POSITIVE_SLICES = "current_positive_slice_count"
SUMMARY_CURRENT_POSITIVE = "current_positive"


@dataclass
class DiagnosisResults:
    """A result's typed values: the reading its tables show (the engine's, or after 'Update results' the
    edited segmentation re-measured with the engine's decision kept) and the segmenter rule's reading of
    an edit."""

    case: CaseResult
    #: Whether the lesion segment differs from the engine's.
    edited: bool = False
    #: The segmenter rule re-applied to the current segmentation (None under the classifier rule).
    reading: SegmenterReading | None = None

    @property
    def bySegmenter(self) -> bool:
        """Whether the case was decided by the segmenter rule (whose evidence an edit changes)."""
        return self.case.case.decision == DecisionRule.SEGMENTER

    def summary(self) -> dict[str, Any]:
        """What the summary table shows: summary.csv's quantities (the decision, then the measurements),
        whether the segmentation was edited and, for an edit, the segmenter rule's reading of it."""
        summary = {**self.case.summary_quantities(), "segmentation": "edited" if self.edited else "automatic"}
        if self.reading is not None:
            summary[SUMMARY_CURRENT_POSITIVE_SLICES] = self.reading.positive_slice_count
            summary[SUMMARY_CURRENT_POSITIVE] = self.reading.positive
        return summary

    def tablesCase(self) -> CaseResult:
        """The reading as `CaseResult.write_tables` writes it: the engine's as it is, an edited one with
        the edit's marker and reading added to its summary (so the downloads say what they describe)."""
        if not self.edited:
            return self.case
        extra = {
            key: value for key, value in self.summary().items() if key not in self.case.summary_quantities()
        }
        return replace(self.case, summary={**self.case.summary, **extra})


@dataclass
class DiagnosisNodes:
    """Nodes created by one diagnosis, and the result's typed values."""

    volumeNode: slicer.vtkMRMLScalarVolumeNode
    heatmapNode: slicer.vtkMRMLScalarVolumeNode
    segmentationNode: slicer.vtkMRMLSegmentationNode
    summaryTableNode: slicer.vtkMRMLTableNode
    lesionTableNode: slicer.vtkMRMLTableNode
    sliceTableNode: slicer.vtkMRMLTableNode
    plotChartNode: slicer.vtkMRMLPlotChartNode
    results: DiagnosisResults


def isDiagnosisResult(segmentationNode) -> bool:
    """Whether `segmentationNode` was made by a diagnosis (has its heatmap, tables and chart)."""
    return segmentationNode is not None and all(segmentationNode.GetNodeReference(r) for r in ROLES)


def maskSha256(mask: np.ndarray) -> str:
    """Fingerprint of a binary mask (to tell an edited segment from the automatic one)."""
    return hashlib.sha256(np.ascontiguousarray(mask > 0, dtype=np.uint8).tobytes()).hexdigest()


def sourceVolume(segmentationNode: slicer.vtkMRMLSegmentationNode) -> slicer.vtkMRMLScalarVolumeNode:
    """The CT the segmentation was made on."""
    node = segmentationNode.GetNodeReference(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    )
    if node is None:
        raise ValueError(f"segmentation '{segmentationNode.GetName()}' is not linked to a CT volume")
    return node


def engineReading(segmentationNode: slicer.vtkMRMLSegmentationNode) -> CaseResult:
    """The engine's reading of the case, kept on the segmentation at diagnosis time."""
    text = segmentationNode.GetAttribute(READING_ATTRIBUTE)
    if not text:
        raise ValueError(
            f"'{segmentationNode.GetName()}' holds no engine reading (made by an earlier version of JCS "
            "Diagnosis?): run Diagnose again"
        )
    from jcs.pipeline import CaseResult

    return CaseResult.from_json(json.loads(text))


def lesionMask(segmentationNode: slicer.vtkMRMLSegmentationNode) -> np.ndarray:
    """The current (possibly edited) lesion segment on the CT grid, (K, J, I) uint8."""
    spec = lesion_spec()
    if segmentationNode.GetSegmentation().GetSegment(spec.segment_id) is None:
        raise ValueError(f"'{segmentationNode.GetName()}' has no '{spec.name}' segment (was it deleted?)")
    return volumes.segmentArray(segmentationNode, spec.segment_id, sourceVolume(segmentationNode))


def isEdited(segmentationNode: slicer.vtkMRMLSegmentationNode) -> bool:
    """Whether the lesion segment differs from what the engine produced."""
    automatic = segmentationNode.GetAttribute(AUTOMATIC_HASH_ATTRIBUTE)
    return automatic is None or maskSha256(lesionMask(segmentationNode)) != automatic


def lungLabels(segmentationNode: slicer.vtkMRMLSegmentationNode) -> np.ndarray:
    """Lung labels (0, 1 right, 2 left) on the CT grid: the lung segments, else jcs.lung on the CT."""
    volumeNode = sourceVolume(segmentationNode)
    segmentation = segmentationNode.GetSegmentation()
    specs = lung_specs()
    if all(segmentation.GetSegment(spec.segment_id) is not None for spec in specs):
        labels = np.zeros(tuple(reversed(volumeNode.GetImageData().GetDimensions())), np.uint8)
        for spec in specs:
            labels[volumes.segmentArray(segmentationNode, spec.segment_id, volumeNode) > 0] = spec.label
        if labels.any():
            return labels
    return volumes.segmentLungs(volumeNode)


def findResultNodes(segmentationNode: slicer.vtkMRMLSegmentationNode) -> DiagnosisNodes:
    """The nodes of the diagnosis that created `segmentationNode` (also after a scene reload)."""
    refs = {role: segmentationNode.GetNodeReference(role) for role in ROLES}
    missing = [role for role, node in refs.items() if node is None]
    if missing:
        raise ValueError(f"'{segmentationNode.GetName()}' is not a JCS Diagnosis result (missing {missing})")
    return DiagnosisNodes(
        sourceVolume(segmentationNode),
        refs[ROLE_HEATMAP],
        segmentationNode,
        refs[ROLE_SUMMARY],
        refs[ROLE_LESIONS],
        refs[ROLE_SLICES],
        refs[ROLE_CHART],
        DiagnosisResults(engineReading(segmentationNode)),
    )


def createResultNodes(
    volumeNode: slicer.vtkMRMLScalarVolumeNode,
    name: str,
    *,
    heatmap: np.ndarray,
    lesions: np.ndarray,
    lungs: np.ndarray,
    case: CaseResult,
) -> DiagnosisNodes:
    """New heatmap, segmentation, (empty) table and chart nodes of one diagnosis, linked by role to the
    segmentation and placed beside the CT in its study. Arrays are on the CT's (K, J, I) grid."""
    scene = volumeNode.GetScene()
    heatmapNode = scene.AddNewNodeByClass(
        "vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(f"{name} heatmap")
    )
    volumes.setVolumeArray(heatmapNode, np.clip(heatmap, 0.0, 1.0), volumes.ijkToRasMatrix(volumeNode))
    display.styleHeatmap(heatmapNode)
    segmentationNode = _createSegmentation(
        volumeNode, scene.GenerateUniqueName(f"{name} segmentation"), lesions, lungs
    )
    segmentationNode.SetAttribute(AUTOMATIC_HASH_ATTRIBUTE, maskSha256(lesions))
    segmentationNode.SetAttribute(READING_ATTRIBUTE, json.dumps(case.to_json()))
    summaryNode, lesionNode, sliceNode = (
        scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(f"{name} {kind}"))
        for kind in ("summary", "lesions", "slices")
    )
    results = DiagnosisResults(case)
    shareColumn = tables.SHARE_COLUMN if results.bySegmenter else None
    chartNode = tables.makeProbabilityPlot(scene, sliceNode, name, shareColumn)
    created = (heatmapNode, summaryNode, lesionNode, sliceNode, chartNode)
    for role, node in zip(ROLES, created, strict=True):
        segmentationNode.SetNodeReferenceID(role, node.GetID())
    _placeInStudy(volumeNode, [heatmapNode, segmentationNode, *created[1:]])
    return DiagnosisNodes(
        volumeNode,
        heatmapNode,
        segmentationNode,
        summaryNode,
        lesionNode,
        sliceNode,
        chartNode,
        results,
    )


def showResultValues(nodes: DiagnosisNodes, results: DiagnosisResults, maskSha: str) -> None:
    """Fill the three tables from typed values and remember which mask they describe."""
    evidence = tables.SHARE_COLUMN if results.bySegmenter else None
    tables.fillTable(nodes.summaryTableNode, tables.summaryRecords(results.summary()))
    tables.fillTable(
        nodes.lesionTableNode, tables.lesionRecords([row.to_json() for row in results.case.lesions])
    )
    tables.fillTable(nodes.sliceTableNode, tables.sliceRecords(results.case.slices, evidence=evidence))
    nodes.segmentationNode.SetAttribute(RESULTS_HASH_ATTRIBUTE, maskSha)
    nodes.results = results


def tablesDescribeMask(segmentationNode: slicer.vtkMRMLSegmentationNode, mask: np.ndarray) -> bool:
    """Whether the tables were last computed from `mask` (else an edit awaits 'Update results')."""
    return segmentationNode.GetAttribute(RESULTS_HASH_ATTRIBUTE) == maskSha256(mask)


def _createSegmentation(volumeNode, name: str, lesions: np.ndarray, lungs: np.ndarray):
    node = volumeNode.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    node.GetSegmentation().SetSourceRepresentationName(
        slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    )
    _addSegment(node, lesion_spec(), lesions, volumeNode)
    for spec in lung_specs():
        _addSegment(node, spec, lungs == spec.label, volumeNode)
        node.GetDisplayNode().SetSegmentVisibility(spec.segment_id, False)
    return node


def _addSegment(node, spec: SegmentSpec, mask: np.ndarray, volumeNode) -> None:
    segment = slicer.vtkSegment()
    segment.SetName(spec.name)
    segment.SetColor(*spec.color)
    segment.SetTerminology(spec.terminology_entry())
    node.GetSegmentation().AddSegment(segment, spec.segment_id)
    volumes.setSegmentArray(node, spec.segment_id, mask, volumeNode)


def _placeInStudy(volumeNode, nodes: list) -> None:
    """Put result nodes beside the CT in the subject hierarchy (its study), as DICOM export needs."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(volumeNode.GetScene())
    if shNode is None:
        return
    volumeItem = shNode.GetItemByDataNode(volumeNode)
    parent = shNode.GetItemParent(volumeItem) if volumeItem else 0
    for node in nodes:
        item = shNode.GetItemByDataNode(node)
        if item and parent:
            shNode.SetItemParent(item, parent)
