"""'Update results': quantify the current (edited) lesion segment and refill the result tables.

In two halves so a GUI stays responsive: :func:`quantificationJob` reads the scene (GUI thread), the
job's ``run()`` touches no node (any thread, e.g. :class:`BackgroundQuantification`), and
:func:`applyQuantification` writes the tables (GUI thread again).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk
import slicer
from jcs.options import DecisionRule

from . import nodes, tables, volumes

if TYPE_CHECKING:
    from jcs.decision import SegmenterReading
    from jcs.pipeline import CaseResult
    from jcs.quantify import Quantification


@dataclass
class QuantificationJob:
    """Arrays read from a result's nodes for :func:`jcs.quantify.quantify` (axial order, inferior first);
    ``nodes.results.case`` is the engine's reading the figures replace."""

    segmentationNode: slicer.vtkMRMLSegmentationNode
    nodes: nodes.DiagnosisNodes
    maskSha256: str
    lesion: np.ndarray
    lungs: np.ndarray
    heatmap: np.ndarray
    image: sitk.Image
    hu: np.ndarray
    probabilities: np.ndarray

    def run(self) -> Quantification:
        """The quantification itself; reads no MRML node, so it may run in a worker thread."""
        from jcs.quantify import quantify

        return quantify(
            self.lesion,
            self.lungs,
            self.image,
            hu=self.hu,
            slice_probabilities=self.probabilities,
            heatmap=self.heatmap,
        )


class BackgroundQuantification:
    """A :class:`QuantificationJob` running in a worker thread, so the GUI stays responsive: poll
    ``done`` (e.g. from a QTimer), then hand it to :func:`applyQuantification` via ``result()``."""

    def __init__(self, job: QuantificationJob) -> None:
        self.job = job
        self._result: Quantification | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="JCSDiagnosis-quantify", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            self._result = self.job.run()
        except BaseException as exc:  # handed to the GUI thread by result()
            self._error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float | None = None) -> Quantification:
        """The quantification (waiting up to ``timeout`` s); re-raises the worker's error."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the quantification is still running")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def quantificationJob(segmentationNode: slicer.vtkMRMLSegmentationNode) -> QuantificationJob:
    """Read what an update needs from the scene; the job's ``run()`` touches no node."""
    result = nodes.findResultNodes(segmentationNode)
    volumeNode = result.volumeNode
    ct = volumes.ctVolume(volumeNode)
    mask = nodes.lesionMask(segmentationNode)
    return QuantificationJob(
        segmentationNode=segmentationNode,
        nodes=result,
        maskSha256=nodes.maskSha256(mask),
        lesion=volumes.toAxial(volumeNode, mask),
        lungs=volumes.toAxial(volumeNode, nodes.lungLabels(segmentationNode)),
        heatmap=volumes.toAxial(volumeNode, volumes.arrayFromVolume(result.heatmapNode).astype(np.float32)),
        image=ct.axial_image(),
        hu=ct.axial_array(),
        probabilities=np.array([row.probability for row in result.results.case.slices], dtype=np.float64),
    )


def applyQuantification(job: QuantificationJob, quantification: Quantification) -> nodes.DiagnosisNodes:
    """Write a finished :class:`QuantificationJob`'s figures into the result tables: the engine's reading
    re-measured on the current segmentation (its decision kept) and the segmenter rule's reading of it."""
    engine = job.nodes.results.case
    measured = engine.with_quantification(quantification, job.lesion)
    values = nodes.DiagnosisResults(
        replace(measured, lesion_mask=None),  # the mask lives in the segmentation, not twice in memory
        edited=nodes.isEdited(job.segmentationNode),
        reading=currentReading(engine, quantification.slices),
    )
    nodes.showResultValues(job.nodes, values, job.maskSha256)
    return job.nodes


def currentReading(engine: CaseResult, slices: Sequence[Mapping[str, Any]]) -> SegmenterReading | None:
    """The engine's segmenter rule re-applied to quantified slice rows of the current segmentation
    (their ``opacified_lung_fraction``), with the engine's share and threshold; None when the case was
    decided by the classifier rule, whose evidence an edit does not change."""
    case = engine.case
    if case.decision != DecisionRule.SEGMENTER or case.threshold is None:
        return None
    from jcs.decision import OPACIFIED_LUNG_FRACTION, SegmenterReading

    share = case.min_lung_fraction
    return SegmenterReading.from_fractions(
        np.array([float(row[tables.SHARE_COLUMN]) for row in slices]),
        int(case.threshold),
        OPACIFIED_LUNG_FRACTION if share is None else float(share),
    )
