"""Qt-free scene logic of the JCS Diagnosis module: diagnose, update results, export DICOM-SEG.

Driven by the module widget in Slicer and by tests/the web viewer on slicer-core, with any
application logic that provides the scene (`appLogic.GetMRMLScene()`). The engine runs in a child
process (`jcs.cli diagnose`, paper §III: per-slice classification, Grad-CAM explanation, lesion
segmentation); its files are loaded into new nodes, so re-running never overwrites an edited
segmentation.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
import slicer
from jcs.terminology import SegmentSpec, lesion_spec, lung_specs

from . import display, tables, volumes
from .process import EngineError, EngineProcess

if TYPE_CHECKING:
    from jcs.decision import SegmenterReading
    from jcs.quantify import Quantification
    from jcs.wording import RuleWording

ATTRIBUTE_PREFIX = "JCSDiagnosis."
ENGINE_ATTRIBUTE = ATTRIBUTE_PREFIX + "engine"
AUTOMATIC_HASH_ATTRIBUTE = ATTRIBUTE_PREFIX + "automaticLesionSha256"
RESULTS_HASH_ATTRIBUTE = ATTRIBUTE_PREFIX + "resultsLesionSha256"
ROLE_HEATMAP = "jcsHeatmap"
ROLE_SUMMARY = "jcsSummaryTable"
ROLE_LESIONS = "jcsLesionTable"
ROLE_SLICES = "jcsSliceTable"
ROLE_CHART = "jcsPlotChart"

POLICIES = ("positive-only", "always")
DECISIONS = ("auto", "classifier", "segmenter")
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Summary fields (jcs.quantify / results.json) that go into the SR report.
SUMMARY_LESION_VOLUME = "opacification_volume_ml"
SUMMARY_PERCENT_OF_LUNG = "opacification_percent"
SUMMARY_POSITIVE_SLICES = "positive_slice_count"
SUMMARY_THRESHOLD = "threshold"
#: Slice-table column of the segmenter rule's evidence (jcs.quantify / results.json).
SLICE_SHARE_COLUMN = "opacified_lung_fraction"
SUMMARY_POSITIVE = "positive"
#: Summary fields of the segmenter rule re-applied to the current (edited) segmentation.
SUMMARY_CURRENT_POSITIVE_SLICES = "current_positive_slice_count"
SUMMARY_CURRENT_POSITIVE = "current_positive"
#: Case fields of results.json kept on the segmentation (engine attribute), so the reading can be
#: re-applied and described after the scene is saved and reloaded.
ENGINE_CASE_FIELDS = (
    "threshold",
    "positive",
    "positive_slice_count",
    "decision",
    "min_lung_fraction",
    "classifier_positive_slice_count",
)


class InputVolumeError(ValueError):
    """The selected node cannot be diagnosed; the message says why."""


@dataclass
class DiagnosisNodes:
    """Nodes created by one diagnosis (`nodes.heatmapNode` or `nodes["heatmapNode"]`)."""

    volumeNode: slicer.vtkMRMLScalarVolumeNode
    heatmapNode: slicer.vtkMRMLScalarVolumeNode
    segmentationNode: slicer.vtkMRMLSegmentationNode
    summaryTableNode: slicer.vtkMRMLTableNode
    lesionTableNode: slicer.vtkMRMLTableNode
    sliceTableNode: slicer.vtkMRMLTableNode
    plotChartNode: slicer.vtkMRMLPlotChartNode
    results: dict = field(default_factory=dict)

    def __getitem__(self, key: str):
        return getattr(self, key)


@dataclass
class DiagnosisRun:
    """A started engine run: the process and its working folder."""

    volumeNode: slicer.vtkMRMLScalarVolumeNode
    process: EngineProcess
    workDir: Path
    name: str

    @property
    def outputDir(self) -> Path:
        return self.workDir / "out"


@dataclass
class QuantificationJob:
    """Arrays read from a result's nodes for :func:`jcs.quantify.quantify` (axial order, inferior first)."""

    segmentationNode: slicer.vtkMRMLSegmentationNode
    nodes: DiagnosisNodes
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
    ``done`` (e.g. from a QTimer), then hand it to :meth:`JCSDiagnosisSceneLogic.finishUpdateResults`."""

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
        return self._result


def inputProblem(volumeNode) -> str | None:
    """Why `volumeNode` cannot be diagnosed, or None when it can (the widget shows this reason)."""
    if volumeNode is None:
        return "Select a CT volume."
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        return f"'{volumeNode.GetName()}' is not a scalar (CT) volume."
    imageData = volumeNode.GetImageData()
    if imageData is None or imageData.GetPointData().GetScalars() is None:
        return f"'{volumeNode.GetName()}' has no voxel data."
    if imageData.GetNumberOfScalarComponents() != 1:
        return f"'{volumeNode.GetName()}' is a colour/vector image, not a CT."
    dims = imageData.GetDimensions()
    inPlane = [d for axis, d in enumerate(dims) if axis != _superiorAxis(volumeNode)]
    if min(inPlane) < 16:
        return f"'{volumeNode.GetName()}' is too small ({inPlane[0]}x{inPlane[1]} pixels per axial slice)."
    low, high = imageData.GetScalarRange()
    if high <= low:
        return f"'{volumeNode.GetName()}' is constant (all voxels {low:g})."
    if low > -200 or high < 0:
        return (
            f"'{volumeNode.GetName()}' does not look like a CT in Hounsfield units (range {low:g}..{high:g})."
        )
    return None


def isDiagnosisResult(segmentationNode) -> bool:
    """Whether `segmentationNode` was made by a diagnosis (has its heatmap, tables and chart)."""
    roles = (ROLE_HEATMAP, ROLE_SUMMARY, ROLE_LESIONS, ROLE_SLICES, ROLE_CHART)
    return segmentationNode is not None and all(segmentationNode.GetNodeReference(r) for r in roles)


def _superiorAxis(volumeNode) -> int:
    """The IJK axis closest to the patient's superior direction (the axial slice axis)."""
    return int(np.argmax(np.abs(volumes.ijkToRasMatrix(volumeNode)[2, :3])))


def maskSha256(mask: np.ndarray) -> str:
    """Fingerprint of a binary mask (to tell an edited segment from the automatic one)."""
    return hashlib.sha256(np.ascontiguousarray(mask > 0, dtype=np.uint8).tobytes()).hexdigest()


class JCSDiagnosisSceneLogic:
    """Diagnosis, result update and DICOM export on one MRML scene."""

    def __init__(self, appLogic, *, python: str | None = None) -> None:
        self.appLogic = appLogic
        self.scene: slicer.vtkMRMLScene = appLogic.GetMRMLScene()
        if self.scene is None:
            raise ValueError("the application logic has no MRML scene")
        self.python = python
        #: Maps a SOP Instance UID to its file (Slicer sets `slicer.dicomDatabase.fileForInstance`).
        self.dicomFileForInstance: Callable[[str], str] | None = None

    # ---------------------------------------------------------------- diagnose
    def startDiagnosis(
        self,
        volumeNode: slicer.vtkMRMLScalarVolumeNode,
        *,
        device: str = "auto",
        threshold: int | None = None,
        policy: str = "positive-only",
        decision: str = "auto",
        classifier: str | None = None,
        segmenter: str | None = None,
        onProgress: Callable[[str, float], None] | None = None,
    ) -> DiagnosisRun:
        """Write the volume to a temporary NRRD and start the engine on it (returns at once)."""
        problem = inputProblem(volumeNode)
        if problem:
            raise InputVolumeError(problem)
        if policy not in POLICIES:
            raise ValueError(f"segmentation policy must be one of {POLICIES}, got '{policy}'")
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got '{device}'")
        if decision not in DECISIONS:
            raise ValueError(f"decision rule must be one of {DECISIONS}, got '{decision}'")
        if threshold is not None and threshold < 0:
            raise ValueError(f"positive-slice threshold must not be negative, got {threshold}")
        workDir = Path(tempfile.mkdtemp(prefix="JCSDiagnosis-"))
        inputPath = workDir / "volume.nrrd"
        sitk.WriteImage(volumes.imageFromVolume(volumeNode), str(inputPath), useCompression=True)
        arguments = [
            "diagnose",
            str(inputPath),
            "--out",
            str(workDir / "out"),
            "--device",
            device,
            "--segment",
            policy,
            "--decision",
            decision,
        ]
        if threshold is not None:
            arguments += ["--threshold", str(threshold)]
        if classifier:
            arguments += ["--classifier", classifier]
        if segmenter:
            arguments += ["--segmenter", segmenter]
        process = EngineProcess(arguments, python=self.python, onProgress=onProgress)
        process.start()
        return DiagnosisRun(volumeNode, process, workDir, volumeNode.GetName())

    def diagnose(
        self, volumeNode: slicer.vtkMRMLScalarVolumeNode, *, timeout: float | None = None, **options
    ) -> DiagnosisNodes:
        """Run the engine on `volumeNode`, wait for it and load its results into new nodes.

        Options: device ("auto"/"cpu"/"cuda"/"mps"), threshold (positive slices for a positive
        case; default the weights' card), policy ("positive-only"/"always"), classifier/segmenter
        (registry names), onProgress (callable(stage, fraction)).
        """
        run = self.startDiagnosis(volumeNode, **options)
        try:
            run.process.wait(timeout=timeout)
            return self.loadResults(run)
        finally:
            shutil.rmtree(run.workDir, ignore_errors=True)

    def loadResults(self, run: DiagnosisRun) -> DiagnosisNodes:
        """Turn the engine's output folder into heatmap, segmentation, tables and chart nodes."""
        out = run.outputDir
        resultsPath = out / "results.json"
        if not resultsPath.is_file():
            raise EngineError(f"the engine wrote no {resultsPath.name}:\n{run.process.output()}")
        results = json.loads(resultsPath.read_text(encoding="utf-8"))
        volumeNode = run.volumeNode
        heatmap = self._readOnVolumeGrid(out / "heatmap.nrrd", volumeNode).astype(np.float32)
        lesions = self._readOnVolumeGrid(out / "lesions.nrrd", volumeNode) > 0
        lungsPath = out / "lungs.nrrd"
        lungs = (
            self._readOnVolumeGrid(lungsPath, volumeNode)
            if lungsPath.is_file()
            else _segmentLungs(volumeNode)
        )

        name = f"{run.name} JCS"
        heatmapNode = self.scene.AddNewNodeByClass(
            "vtkMRMLScalarVolumeNode", self.scene.GenerateUniqueName(f"{name} heatmap")
        )
        volumes.setVolumeArray(heatmapNode, np.clip(heatmap, 0.0, 1.0), volumes.ijkToRasMatrix(volumeNode))
        display.styleHeatmap(heatmapNode)

        segmentationNode = self._createSegmentation(
            volumeNode, self.scene.GenerateUniqueName(f"{name} segmentation"), lesions, lungs
        )
        segmentationNode.SetAttribute(AUTOMATIC_HASH_ATTRIBUTE, maskSha256(lesions))
        segmentationNode.SetAttribute(RESULTS_HASH_ATTRIBUTE, maskSha256(lesions))
        segmentationNode.SetAttribute(ENGINE_ATTRIBUTE, json.dumps(_engineInfo(results)))

        summaryNode, lesionNode, sliceNode = (
            self.scene.AddNewNodeByClass("vtkMRMLTableNode", self.scene.GenerateUniqueName(f"{name} {kind}"))
            for kind in ("summary", "lesions", "slices")
        )
        tables.fillTable(summaryNode, tables.summaryRecords(_summaryOf(results)))
        byShare = results.get("case", {}).get("decision") == "segmenter"
        tables.fillTable(lesionNode, tables.lesionRecords(results.get("lesions", [])))
        tables.fillTable(
            sliceNode,
            sliceRecords(results.get("slices", []), evidence=SLICE_SHARE_COLUMN if byShare else None),
        )
        chartNode = tables.makeProbabilityPlot(
            self.scene, sliceNode, name, SLICE_SHARE_COLUMN if byShare else None
        )

        for role, node in (
            (ROLE_HEATMAP, heatmapNode),
            (ROLE_SUMMARY, summaryNode),
            (ROLE_LESIONS, lesionNode),
            (ROLE_SLICES, sliceNode),
            (ROLE_CHART, chartNode),
        ):
            segmentationNode.SetNodeReferenceID(role, node.GetID())
        self._placeInStudy(
            volumeNode, [heatmapNode, segmentationNode, summaryNode, lesionNode, sliceNode, chartNode]
        )
        display.showHeatmap(volumeNode, heatmapNode)
        return DiagnosisNodes(
            volumeNode, heatmapNode, segmentationNode, summaryNode, lesionNode, sliceNode, chartNode, results
        )

    @staticmethod
    def _readOnVolumeGrid(path: Path, volumeNode) -> np.ndarray:
        if not path.is_file():
            raise EngineError(f"the engine did not write {path.name}")
        image = sitk.ReadImage(str(path))
        if not volumes.sameGeometry(image, volumeNode):
            raise EngineError(f"{path.name} does not have the geometry of '{volumeNode.GetName()}'")
        return sitk.GetArrayFromImage(image)

    def _createSegmentation(
        self, volumeNode, name: str, lesions: np.ndarray, lungs: np.ndarray
    ) -> slicer.vtkMRMLSegmentationNode:
        node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentation = node.GetSegmentation()
        segmentation.SetSourceRepresentationName(
            slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        )
        self._addSegment(node, lesion_spec(), lesions, volumeNode)
        for spec in lung_specs():
            self._addSegment(node, spec, lungs == spec.label, volumeNode)
            node.GetDisplayNode().SetSegmentVisibility(spec.segment_id, False)
        return node

    @staticmethod
    def _addSegment(node, spec: SegmentSpec, mask: np.ndarray, volumeNode) -> None:
        segment = slicer.vtkSegment()
        segment.SetName(spec.name)
        segment.SetColor(*spec.color)
        segment.SetTerminology(spec.terminology_entry())
        node.GetSegmentation().AddSegment(segment, spec.segment_id)
        volumes.setSegmentArray(node, spec.segment_id, mask, volumeNode)

    def _placeInStudy(self, volumeNode, nodes: list) -> None:
        """Put result nodes beside the CT in the subject hierarchy (its study), as DICOM export needs."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        if shNode is None:
            return
        volumeItem = shNode.GetItemByDataNode(volumeNode)
        parent = shNode.GetItemParent(volumeItem) if volumeItem else 0
        for node in nodes:
            item = shNode.GetItemByDataNode(node)
            if item and parent:
                shNode.SetItemParent(item, parent)

    # ---------------------------------------------------------------- results
    def resultNodes(self, segmentationNode: slicer.vtkMRMLSegmentationNode) -> DiagnosisNodes:
        """The nodes of the diagnosis that created `segmentationNode` (also after scene reload)."""
        volumeNode = self.sourceVolume(segmentationNode)
        refs = {
            role: segmentationNode.GetNodeReference(role)
            for role in (ROLE_HEATMAP, ROLE_SUMMARY, ROLE_LESIONS, ROLE_SLICES, ROLE_CHART)
        }
        missing = [role for role, node in refs.items() if node is None]
        if missing:
            raise ValueError(
                f"'{segmentationNode.GetName()}' is not a JCS Diagnosis result (missing {missing})"
            )
        return DiagnosisNodes(
            volumeNode,
            refs[ROLE_HEATMAP],
            segmentationNode,
            refs[ROLE_SUMMARY],
            refs[ROLE_LESIONS],
            refs[ROLE_SLICES],
            refs[ROLE_CHART],
            {"engine": self.engineInfo(segmentationNode)},
        )

    @staticmethod
    def sourceVolume(segmentationNode: slicer.vtkMRMLSegmentationNode) -> slicer.vtkMRMLScalarVolumeNode:
        """The CT the segmentation was made on."""
        node = segmentationNode.GetNodeReference(
            slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        )
        if node is None:
            raise ValueError(f"segmentation '{segmentationNode.GetName()}' is not linked to a CT volume")
        return node

    @staticmethod
    def engineInfo(segmentationNode: slicer.vtkMRMLSegmentationNode) -> dict:
        """Engine version, weights and decision stored on the segmentation at diagnosis time."""
        text = segmentationNode.GetAttribute(ENGINE_ATTRIBUTE)
        return json.loads(text) if text else {}

    def lesionMask(self, segmentationNode: slicer.vtkMRMLSegmentationNode) -> np.ndarray:
        """The current (possibly edited) lesion segment on the CT grid, (K, J, I) uint8."""
        spec = lesion_spec()
        if segmentationNode.GetSegmentation().GetSegment(spec.segment_id) is None:
            raise ValueError(f"'{segmentationNode.GetName()}' has no '{spec.name}' segment (was it deleted?)")
        return volumes.segmentArray(segmentationNode, spec.segment_id, self.sourceVolume(segmentationNode))

    def isEdited(self, segmentationNode: slicer.vtkMRMLSegmentationNode) -> bool:
        """Whether the lesion segment differs from what the engine produced."""
        automatic = segmentationNode.GetAttribute(AUTOMATIC_HASH_ATTRIBUTE)
        return automatic is None or maskSha256(self.lesionMask(segmentationNode)) != automatic

    def lungLabels(self, segmentationNode: slicer.vtkMRMLSegmentationNode) -> np.ndarray:
        """Lung labels (0, 1 right, 2 left) on the CT grid: the lung segments, else jcs.lung."""
        volumeNode = self.sourceVolume(segmentationNode)
        segmentation = segmentationNode.GetSegmentation()
        specs = lung_specs()
        if all(segmentation.GetSegment(spec.segment_id) is not None for spec in specs):
            labels = np.zeros(tuple(reversed(volumeNode.GetImageData().GetDimensions())), np.uint8)
            for spec in specs:
                labels[volumes.segmentArray(segmentationNode, spec.segment_id, volumeNode) > 0] = spec.label
            if labels.any():
                return labels
        return _segmentLungs(volumeNode)

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
        """Read what :meth:`updateResults` needs from the scene; the job's ``run()`` touches no node, so
        a caller may run it in a worker thread and pass its result to :meth:`applyQuantification`."""
        nodes = self.resultNodes(segmentationNode)
        ct = _ctVolume(nodes.volumeNode)

        def toAxial(array: np.ndarray) -> np.ndarray:
            return sitk.GetArrayFromImage(_axialImage(volumes.imageFromVolume(nodes.volumeNode, array)))

        mask = self.lesionMask(segmentationNode)
        probabilities = [row[tables.PROBABILITY_COLUMN] for row in tables.readTable(nodes.sliceTableNode)]
        return QuantificationJob(
            segmentationNode=segmentationNode,
            nodes=nodes,
            maskSha256=maskSha256(mask),
            lesion=toAxial(mask),
            lungs=toAxial(self.lungLabels(segmentationNode)),
            heatmap=toAxial(volumes.arrayFromVolume(nodes.heatmapNode).astype(np.float32)),
            image=ct.axial_image(),
            hu=ct.axial_array(),
            probabilities=np.array(probabilities, dtype=np.float64),
        )

    def applyQuantification(self, job: QuantificationJob, quantification: Quantification) -> DiagnosisNodes:
        """Write a finished :class:`QuantificationJob`'s figures into the result tables."""
        nodes, segmentationNode = job.nodes, job.segmentationNode
        previousSummary = tables.summaryDict(nodes.summaryTableNode)
        summary = {**previousSummary, **dict(quantification.summary)}
        edited = self.isEdited(segmentationNode)
        summary["segmentation"] = "edited" if edited else "automatic"
        engine = self.engineInfo(segmentationNode)
        reading = currentReading(engine, list(quantification.slices))
        if reading is not None:
            summary[SUMMARY_CURRENT_POSITIVE_SLICES] = reading.positive_slice_count
            summary[SUMMARY_CURRENT_POSITIVE] = reading.positive
        tables.fillTable(nodes.summaryTableNode, tables.summaryRecords(summary))
        tables.fillTable(nodes.lesionTableNode, tables.lesionRecords(list(quantification.lesions)))
        evidence = SLICE_SHARE_COLUMN if engine.get("decision") == "segmenter" else None
        tables.fillTable(
            nodes.sliceTableNode, sliceRecords(list(quantification.slices), job.probabilities, evidence)
        )
        segmentationNode.SetAttribute(RESULTS_HASH_ATTRIBUTE, job.maskSha256)
        nodes.results = {
            "engine": engine,
            "edited": edited,
            "reading": reading,
            "summary": summary,
            "lesions": list(quantification.lesions),
            "slices": list(quantification.slices),
        }
        return nodes

    # ---------------------------------------------------------------- navigation
    def axialSliceCenter(self, volumeNode, axialIndex: int) -> tuple[float, float, float]:
        """RAS centre of axial slice `axialIndex` (inferior to superior, as in the slice table)."""
        matrix = volumes.ijkToRasMatrix(volumeNode)
        dims = volumeNode.GetImageData().GetDimensions()
        axis = _superiorAxis(volumeNode)
        count = dims[axis]
        if not 0 <= axialIndex < count:
            raise IndexError(f"axial slice {axialIndex} is outside 0..{count - 1}")
        ijk = np.array([(d - 1) / 2 for d in dims] + [1.0])
        ijk[axis] = axialIndex if matrix[2, axis] > 0 else count - 1 - axialIndex
        ras = matrix @ ijk
        return (float(ras[0]), float(ras[1]), float(ras[2]))

    def jumpToSlice(self, volumeNode, axialIndex: int) -> None:
        """Show axial slice `axialIndex` in every slice view (click on a slice row or plot point)."""
        display.jumpToPoint(self.scene, self.axialSliceCenter(volumeNode, axialIndex))
        self._snapSlicesToVoxels()

    def _snapSlicesToVoxels(self) -> None:
        """Put every slice view on a voxel layer after a jump: a 2-D brush paints the voxels of the slice
        shown, and a plane between two layers (a lesion's centroid) would hold none of them."""
        logics = self.appLogic.GetSliceLogics() if hasattr(self.appLogic, "GetSliceLogics") else None
        for index in range(logics.GetNumberOfItems() if logics is not None else 0):
            logics.GetItemAsObject(index).SnapSliceOffsetToIJK()

    def jumpToLesion(self, segmentationNode, lesionRow: int) -> tuple[float, float, float]:
        """Centre the views on lesion `lesionRow` of the lesion table; returns its RAS centroid."""
        nodes = self.resultNodes(segmentationNode)
        rows = tables.readTable(nodes.lesionTableNode)
        if not 0 <= lesionRow < len(rows):
            raise IndexError(f"lesion row {lesionRow} is outside 0..{len(rows) - 1}")
        ras = lesionCentroidRas(rows[lesionRow])
        display.jumpToPoint(self.scene, ras)
        self._snapSlicesToVoxels()
        return ras

    def setHeatmapOpacity(self, opacity: float) -> None:
        """Opacity of the heatmap layer in all slice views."""
        display.setHeatmapOpacity(self.scene, opacity)

    # ---------------------------------------------------------------- export
    def exportDicomSeg(
        self,
        segmentationNode: slicer.vtkMRMLSegmentationNode,
        outputDir: str | Path,
        sourceDicomDir: str | Path | None = None,
    ):
        """Write the current lesion segment as DICOM-SEG plus a TID 1500 SR report into `outputDir`.

        Source CT files: `sourceDicomDir` if given, else the instances the volume was loaded from
        (Slicer's DICOM database, or the DICOM files of its storage node). Returns the written paths.
        """
        from jcs.dicomseg import export_seg_and_report

        volumeNode = self.sourceVolume(segmentationNode)
        sourceFiles = self.sourceDicomFiles(volumeNode, sourceDicomDir)
        mask = self.lesionMask(segmentationNode)
        if segmentationNode.GetAttribute(RESULTS_HASH_ATTRIBUTE) != maskSha256(mask):
            self.updateResults(segmentationNode)  # the report must describe the exported mask
        nodes = self.resultNodes(segmentationNode)
        summary = {row["quantity"]: row["value"] for row in tables.readTable(nodes.summaryTableNode)}
        edited = self.isEdited(segmentationNode)
        return export_seg_and_report(
            mask=volumes.imageFromVolume(volumeNode, mask),
            source_files=sourceFiles,
            output_dir=Path(outputDir),
            engine=self.engineInfo(segmentationNode),
            edited=edited,
            values=reportValues(summary, nodes.lesionTableNode.GetNumberOfRows(), edited),
        )

    def sourceDicomFiles(self, volumeNode, sourceDicomDir: str | Path | None = None) -> list[Path]:
        """The DICOM files of the CT series behind `volumeNode` (clear error when there are none)."""
        if sourceDicomDir is not None:
            folder = Path(sourceDicomDir)
            if not folder.is_dir():
                raise FileNotFoundError(f"source DICOM folder {folder} does not exist")
            files = sorted(p for p in folder.rglob("*") if p.is_file() and _isDicom(p))
            if not files:
                raise FileNotFoundError(f"no DICOM files in {folder}")
            return files
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        uids = ""
        item = shNode.GetItemByDataNode(volumeNode) if shNode is not None else 0
        if item:
            uids = shNode.GetItemAttribute(item, "DICOM.instanceUIDs") or ""
        if uids.split() and self.dicomFileForInstance is not None:
            files = [Path(self.dicomFileForInstance(uid)) for uid in uids.split()]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"source DICOM files are missing from the DICOM database: {missing[:3]}"
                )
            return files
        storage = volumeNode.GetStorageNode()
        if storage is not None:
            names = [storage.GetFileName()] + [
                storage.GetNthFileName(i) for i in range(storage.GetNumberOfFileNames())
            ]
            files = sorted({Path(n) for n in names if n and Path(n).is_file() and _isDicom(Path(n))})
            if files:
                return files
        raise ValueError(
            f"'{volumeNode.GetName()}' was not loaded from DICOM, so a DICOM-SEG cannot reference its source "
            "images: load the CT series through the DICOM module, or give the CT series folder "
            "(sourceDicomDir)."
        )


def sliceRecords(
    slices: list[dict], probabilities: np.ndarray | None = None, evidence: str | None = None
) -> list[dict]:
    """Slice-table rows: `slice_index`, then the column the decision rule counts by (`evidence`, e.g.
    the segmenter rule's `opacified_lung_fraction`), then `classifier_probability` and the rest.

    Accepts the CLI's results.json rows (`index`, `probability`, `positive`, quantification fields) and
    jcs.quantify's rows (`slice_index`, `classifier_probability`, ...); `probabilities` overrides.
    """
    rows = []
    for position, record in enumerate(slices):
        row = {tables.SLICE_COLUMN: int(record.get(tables.SLICE_COLUMN, record.get("index", position)))}
        if evidence and evidence in record:
            row[evidence] = record[evidence]
        row[tables.PROBABILITY_COLUMN] = record.get(tables.PROBABILITY_COLUMN, record.get("probability"))
        if probabilities is not None:
            row[tables.PROBABILITY_COLUMN] = float(probabilities[position])
        row.update({k: v for k, v in record.items() if k not in (*row, "index", "probability")})
        rows.append(row)
    return rows


def lesionCentroidRas(row: dict) -> tuple[float, float, float]:
    """RAS centroid of a lesion-table row (jcs.quantify gives it in LPS mm)."""
    try:
        lps = [float(row[f"centroid_lps_{axis}_mm"]) for axis in ("x", "y", "z")]
    except KeyError as exc:
        raise KeyError(f"lesion table has no centroid column {exc}") from None
    return (-lps[0], -lps[1], lps[2])


def decisionBasis(case: dict) -> str:
    """Under the segmenter rule, one line on what the classifier alone counted ('' otherwise)."""
    from jcs.wording import classifier_aside

    return classifier_aside(case)


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
        axis = _superiorAxis(volumeNode)
        count = volumeNode.GetImageData().GetDimensions()[axis]
        spacing = float(np.linalg.norm(volumes.ijkToRasMatrix(volumeNode)[:3, axis]))
        rule = replace(rule, threshold=scaled_threshold(count, spacing if spacing > 0 else None))
    return rule


def lesionRowsShown(lesionTableNode: slicer.vtkMRMLTableNode, minVolumeMl: float) -> list[int]:
    """Rows of the lesion table a reader sees: lesions of at least `minVolumeMl` (`jcs.wording`)."""
    from jcs.wording import lesion_view

    return sorted(lesion_view(tables.readTable(lesionTableNode), minVolumeMl).indices)


def readingText(results: dict) -> list[str]:
    """The reading in lines, worded by `jcs.wording` (what the module's status line shows): verdict and
    what was counted, the classifier's aside under the segmenter rule, the reading of an edit, notes."""
    from jcs.wording import clinical_note, reading_line, verdict

    engine = results.get("case") or results.get("engine") or {}
    if engine.get("positive") is None:
        return []
    slices = results.get("slices")
    count = len(slices) if slices else engine.get("slice_count")
    head = verdict(bool(engine["positive"]))
    lines = [f"{head}. {reading_line(engine, count)}" if count else head, decisionBasis(engine)]
    lines.append(currentReadingText(results.get("reading"), bool(results.get("edited"))))
    lines += [clinical_note(note) for note in engineNotes(results)]
    return [line for line in lines if line]


def currentReading(engine: dict, slices: list[dict]) -> SegmenterReading | None:
    """The engine's segmenter rule re-applied to quantified slice rows of the current segmentation
    (their ``opacified_lung_fraction``), with the engine's share and threshold; None when the case was
    decided by the classifier rule, whose evidence an edit does not change."""
    if engine.get("decision") != "segmenter" or engine.get("threshold") is None:
        return None
    from jcs.decision import OPACIFIED_LUNG_FRACTION, SegmenterReading

    share = engine.get("min_lung_fraction")
    return SegmenterReading.from_fractions(
        np.array([float(row[SLICE_SHARE_COLUMN]) for row in slices]),
        int(engine["threshold"]),
        OPACIFIED_LUNG_FRACTION if share is None else float(share),
    )


def currentReadingText(reading: SegmenterReading | None, edited: bool) -> str:
    """One line on what the decision rule says of an edited segmentation (empty when not edited)."""
    if reading is None or not edited:
        return ""
    verdict = "COVID-19 positive" if reading.positive else "COVID-19 negative"
    return (
        f"Edited segmentation: {reading.positive_slice_count} slices over "
        f"{100 * reading.min_lung_fraction:g} % of the lung (threshold {reading.threshold}), {verdict} by "
        "the same rule. The reading above is the AI's and is kept."
    )


def engineNotes(results: dict) -> list[str]:
    """The engine's notes on a diagnosis (cautions, what was dropped or fell back), from its
    results.json or, after an update or a scene reload, from the engine info kept on the segmentation."""
    notes = results.get("notes")
    if notes is None:
        notes = results.get("engine", {}).get("notes", [])
    return [str(note) for note in notes]


def _summaryOf(results: dict) -> dict:
    summary = dict(results.get("summary", {}))
    case = results.get("case", {})
    for key in ("positive", "positive_slice_count", "threshold", "segmented"):
        if key in case and key not in summary:
            summary[key] = case[key]
    summary.setdefault("segmentation", "automatic")
    return summary


def _engineInfo(results: dict) -> dict:
    case = results.get("case", {})
    return {
        "engine_version": results.get("engine_version", ""),
        "weights": results.get("weights", {}),
        "device": results.get("device", ""),
        **{key: case.get(key) for key in ENGINE_CASE_FIELDS},
        "slice_count": len(results.get("slices", [])) or None,
        "notes": [str(note) for note in results.get("notes", [])],
    }


def _segmentLungs(volumeNode) -> np.ndarray:
    """Lung labels (0, 1 right, 2 left) of the CT by jcs.lung, on the volume's (K, J, I) grid."""
    from jcs.lung import segment_lungs

    ct = _ctVolume(volumeNode)
    axial = segment_lungs(ct.axial_array(), tuple(reversed(ct.axial_image().GetSpacing())))
    return sitk.GetArrayFromImage(ct.from_axial(axial.astype(np.uint8)))


def _axialImage(image: sitk.Image) -> sitk.Image:
    from jcs.io import AXIAL_ORIENTATION

    return sitk.DICOMOrient(image, AXIAL_ORIENTATION)


def _ctVolume(volumeNode):
    from jcs.io import CTVolume

    return CTVolume(image=volumes.imageFromVolume(volumeNode), is_hu=True, path=Path(volumeNode.GetName()))


def _isDicom(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            file.seek(128)
            return file.read(4) == b"DICM"
    except OSError:
        return False


def reportValues(summary: dict, lesionCount: int, edited: bool = False):
    """SR measurements from the summary table (jcs.quantify field names), the AI's case reading and,
    for an `edited` segmentation, the segmenter rule's reading of the edit (when the summary has one)."""
    from jcs.dicomseg import ReportValues

    def number(key: str) -> float | None:
        value = summary.get(key)
        try:
            return float(value) if value not in (None, "") else None
        except ValueError:
            return None

    volume = number(SUMMARY_LESION_VOLUME)
    if volume is None:
        raise ValueError(f"the summary table has no '{SUMMARY_LESION_VOLUME}'; run 'Update results' first")
    positiveSlices = number(SUMMARY_POSITIVE_SLICES)
    threshold = number(SUMMARY_THRESHOLD)

    def flag(key: str) -> bool | None:
        return {True: True, "yes": True, False: False, "no": False}.get(summary.get(key))

    reviewedSlices = number(SUMMARY_CURRENT_POSITIVE_SLICES) if edited else None
    return ReportValues(
        lesion_volume_in_lungs_ml=volume,
        percent_of_lung=number(SUMMARY_PERCENT_OF_LUNG),
        lesion_count=int(lesionCount),
        positive_slice_count=int(positiveSlices) if positiveSlices is not None else None,
        threshold=int(threshold) if threshold is not None else None,
        case_positive=flag(SUMMARY_POSITIVE),
        reviewed_positive_slice_count=int(reviewedSlices) if reviewedSlices is not None else None,
        reviewed_case_positive=flag(SUMMARY_CURRENT_POSITIVE) if edited else None,
    )
