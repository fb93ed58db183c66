"""Scene logic of the JCS Diagnosis module: one object per scene for the module widget, the web viewer,
scripts and tests.

A thin facade over the parts that do the work, each with one job: :mod:`.engine` (run the engine,
load its files), :mod:`.nodes` (result nodes: creation, lookup, edit state), :mod:`.update` (recompute
the tables from an edited segmentation), :mod:`.export` (DICOM-SEG and SR), :mod:`.navigation` and
:mod:`.display` (what the views show). Qt-free: it runs in Slicer and on slicer-core alike, with any
application logic that provides the scene (`appLogic.GetMRMLScene()`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import slicer

from . import display, nodes, tables, update
from .engine import DiagnosisRun, EngineRunner, InputVolumeError, inputProblem
from .export import DicomExporter
from .navigation import Navigator, axialSliceCenter
from .nodes import DiagnosisNodes, DiagnosisResults, isDiagnosisResult, maskSha256
from .update import BackgroundQuantification, QuantificationJob

if TYPE_CHECKING:
    from jcs.dicomseg import ExportedFiles
    from jcs.quantify import Quantification

__all__ = [
    "BackgroundQuantification",
    "DiagnosisNodes",
    "DiagnosisResults",
    "DiagnosisRun",
    "InputVolumeError",
    "JCSDiagnosisSceneLogic",
    "QuantificationJob",
    "inputProblem",
    "isDiagnosisResult",
    "maskSha256",
]


class JCSDiagnosisSceneLogic:
    """Diagnosis, result update, navigation and DICOM export on one MRML scene."""

    def __init__(self, appLogic, *, python: str | None = None) -> None:
        self.appLogic = appLogic
        self.scene: slicer.vtkMRMLScene = appLogic.GetMRMLScene()
        if self.scene is None:
            raise ValueError("the application logic has no MRML scene")
        self.engine = EngineRunner(python)
        self.exporter = DicomExporter(self.scene)
        self.navigator = Navigator(appLogic)
        #: Typed values of the results diagnosed or updated in this session, by segmentation node ID
        #: (forgotten when the scene closes: a new scene reuses node IDs).
        self._values: dict[str, DiagnosisResults] = {}
        self.scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, self._forgetValues)

    @property
    def dicomFileForInstance(self) -> Callable[[str], str] | None:
        """Maps a SOP Instance UID to its file (Slicer sets `slicer.dicomDatabase.fileForInstance`)."""
        return self.exporter.dicomFileForInstance

    @dicomFileForInstance.setter
    def dicomFileForInstance(self, lookup: Callable[[str], str] | None) -> None:
        self.exporter.dicomFileForInstance = lookup

    # ---------------------------------------------------------------- diagnose
    def startDiagnosis(self, volumeNode: slicer.vtkMRMLScalarVolumeNode, **options: Any) -> DiagnosisRun:
        """Start the engine on `volumeNode` (returns at once; options as :meth:`diagnose`)."""
        return self.engine.start(volumeNode, **options)

    def loadResults(self, run: DiagnosisRun) -> DiagnosisNodes:
        """Turn a finished run's output folder into new result nodes."""
        return self._remember(self.engine.load(run))

    def diagnose(
        self, volumeNode: slicer.vtkMRMLScalarVolumeNode, *, timeout: float | None = None, **options: Any
    ) -> DiagnosisNodes:
        """Run the engine on `volumeNode`, wait for it and load its results into new nodes.

        Options: :class:`jcs.options.DiagnosisOptions` fields with the CLI's defaults (device,
        precision, threshold, decision, segment_policy, classifier/segmenter registry names, batch_size,
        lesion_margin_mm), and onProgress (callable(stage, fraction of the run)).
        """
        run = self.startDiagnosis(volumeNode, **options)
        try:
            run.process.wait(timeout=timeout)
            return self.loadResults(run)
        finally:
            shutil.rmtree(run.workDir, ignore_errors=True)

    # ---------------------------------------------------------------- results
    def resultNodes(self, segmentationNode: slicer.vtkMRMLSegmentationNode) -> DiagnosisNodes:
        """The nodes of the diagnosis that created `segmentationNode` (also after a scene reload), with
        the typed values known in this session."""
        found = nodes.findResultNodes(segmentationNode)
        known = self._values.get(segmentationNode.GetID())
        if known is not None:
            found.results = known
        return found

    sourceVolume = staticmethod(nodes.sourceVolume)
    engineReading = staticmethod(nodes.engineReading)
    lesionMask = staticmethod(nodes.lesionMask)
    isEdited = staticmethod(nodes.isEdited)
    lungLabels = staticmethod(nodes.lungLabels)

    # ---------------------------------------------------------------- update
    def updateResults(self, segmentationNode: slicer.vtkMRMLSegmentationNode) -> DiagnosisNodes:
        """Recompute every table from the current (edited) lesion segment with jcs.quantify."""
        job = self.quantificationJob(segmentationNode)
        return self.applyQuantification(job, job.run())

    def startUpdateResults(
        self, segmentationNode: slicer.vtkMRMLSegmentationNode
    ) -> BackgroundQuantification:
        """:meth:`updateResults` in two halves: read the scene now, quantify in a worker thread."""
        return BackgroundQuantification(self.quantificationJob(segmentationNode))

    def finishUpdateResults(self, task: BackgroundQuantification) -> DiagnosisNodes:
        """Write a finished background update into the tables (call on the GUI thread)."""
        return self.applyQuantification(task.job, task.result())

    def quantificationJob(self, segmentationNode: slicer.vtkMRMLSegmentationNode) -> QuantificationJob:
        """Read what an update needs from the scene; the job's ``run()`` touches no node."""
        return update.quantificationJob(segmentationNode)

    def applyQuantification(self, job: QuantificationJob, quantification: Quantification) -> DiagnosisNodes:
        """Write a finished :class:`QuantificationJob`'s figures into the result tables."""
        return self._remember(update.applyQuantification(job, quantification))

    def _forgetValues(self, *_: object) -> None:
        self._values.clear()

    def _remember(self, result: DiagnosisNodes) -> DiagnosisNodes:
        self._values[result.segmentationNode.GetID()] = result.results
        return result

    def currentResults(self, segmentationNode: slicer.vtkMRMLSegmentationNode) -> DiagnosisNodes:
        """The result with typed values that describe the current lesion segment (updated if they do
        not: after an edit, or after a scene reload)."""
        result = self.resultNodes(segmentationNode)
        known = segmentationNode.GetID() in self._values
        if not known or not nodes.tablesDescribeMask(segmentationNode, nodes.lesionMask(segmentationNode)):
            result = self.updateResults(segmentationNode)
        return result

    # ---------------------------------------------------------------- navigation and display
    @staticmethod
    def axialSliceCenter(volumeNode, axialIndex: int) -> tuple[float, float, float]:
        """RAS centre of axial slice `axialIndex` (inferior to superior, as in the slice table)."""
        return axialSliceCenter(volumeNode, axialIndex)

    def jumpToSlice(self, volumeNode, axialIndex: int) -> None:
        """Show axial slice `axialIndex` in every slice view (click on a slice row or plot point)."""
        self.navigator.jumpToSlice(volumeNode, axialIndex)

    def jumpToLesion(self, segmentationNode, lesionRow: int) -> tuple[float, float, float]:
        """Centre the views on lesion `lesionRow` of the lesion table; returns its RAS centroid."""
        rows = tables.readTable(self.resultNodes(segmentationNode).lesionTableNode)
        return self.navigator.jumpToLesion(rows, lesionRow)

    def setHeatmapOpacity(self, opacity: float) -> None:
        """Opacity of the heatmap layer in all slice views."""
        display.setHeatmapOpacity(self.scene, opacity)

    # ---------------------------------------------------------------- export
    def exportDicomSeg(
        self,
        segmentationNode: slicer.vtkMRMLSegmentationNode,
        outputDir: str | Path,
        sourceDicomDir: str | Path | None = None,
    ) -> ExportedFiles:
        """Write the current lesion segment as DICOM-SEG plus a TID 1500 SR report into `outputDir`.

        Source CT files: `sourceDicomDir` if given, else the instances the volume was loaded from
        (Slicer's DICOM database, or the DICOM files of its storage node). Returns the written paths.
        """
        sourceFiles = self.sourceDicomFiles(self.sourceVolume(segmentationNode), sourceDicomDir)
        return self.exporter.export(self.currentResults(segmentationNode), outputDir, sourceFiles)

    def sourceDicomFiles(self, volumeNode, sourceDicomDir: str | Path | None = None) -> list[Path]:
        """The DICOM files of the CT series behind `volumeNode` (clear error when there are none)."""
        return self.exporter.sourceDicomFiles(volumeNode, sourceDicomDir)
