"""Engine run and load: check the CT, run `jcs diagnose` in a child process, load its files as nodes.

The engine (`jcs.cli diagnose`, paper §III: per-slice classification, Grad-CAM explanation, lesion
segmentation, quantification) runs out of process on a temporary NRRD of the volume; its output
folder is turned into new result nodes (:mod:`.nodes`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk
import slicer
from jcs.options import DiagnosisOptions, ProgressStyle

from . import display, nodes, volumes
from .process import EngineError, EngineProcess

if TYPE_CHECKING:
    from jcs.pipeline import CaseResult


class InputVolumeError(ValueError):
    """The selected node cannot be diagnosed; the message says why."""


def inputProblem(volumeNode) -> str | None:
    """Why `volumeNode` cannot be diagnosed, or None when it can (the widget shows this reason)."""
    if volumeNode is None:
        return "Select a CT volume."
    name = volumeNode.GetName()
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        return f"'{name}' is not a scalar (CT) volume."
    imageData = volumeNode.GetImageData()
    if imageData is None or imageData.GetPointData().GetScalars() is None:
        return f"'{name}' has no voxel data."
    if imageData.GetNumberOfScalarComponents() != 1:
        return f"'{name}' is a colour/vector image, not a CT."
    dims = imageData.GetDimensions()
    inPlane = [d for axis, d in enumerate(dims) if axis != volumes.superiorAxis(volumeNode)]
    if min(inPlane) < 16:
        return f"'{name}' is too small ({inPlane[0]}x{inPlane[1]} pixels per axial slice)."
    low, high = imageData.GetScalarRange()
    if high <= low:
        return f"'{name}' is constant (all voxels {low:g})."
    if low > -200 or high < 0:
        return f"'{name}' does not look like a CT in Hounsfield units (range {low:g}..{high:g})."
    return None


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


#: `jcs diagnose` flag of each :class:`jcs.options.DiagnosisOptions` field the scene logic passes on
#: (progress is always JSON lines; DICOM-SEG is exported from the scene).
ENGINE_FLAGS = {
    "classifier": "--classifier",
    "segmenter": "--segmenter",
    "device": "--device",
    "precision": "--precision",
    "threshold": "--threshold",
    "decision": "--decision",
    "segment_policy": "--segment",
    "batch_size": "--batch-size",
    "lesion_margin_mm": "--lesion-margin-mm",
}


def diagnosisOptions(**options: Any) -> DiagnosisOptions:
    """The options of a diagnosis (:class:`jcs.options.DiagnosisOptions` fields, the CLI's defaults),
    checked before anything runs."""
    unknown = sorted(set(options) - set(ENGINE_FLAGS))
    if unknown:
        raise ValueError(f"unknown diagnosis options {unknown}; known: {', '.join(ENGINE_FLAGS)}")
    return DiagnosisOptions(**options)


def engineArguments(inputPath: Path, outputDir: Path, options: DiagnosisOptions) -> list[str]:
    """`jcs diagnose` arguments of one run with these options."""
    arguments = ["diagnose", str(inputPath), "--out", str(outputDir), "--progress", str(ProgressStyle.JSON)]
    for name, flag in ENGINE_FLAGS.items():
        value = getattr(options, name)
        if value is not None and value != "":
            arguments += [flag, str(value)]
    return arguments


class EngineRunner:
    """Starts the engine on a volume and loads a finished run's files into new result nodes."""

    def __init__(self, python: str | None = None) -> None:
        #: Interpreter for the engine (default: PythonSlicer inside Slicer, else this one).
        self.python = python

    def start(
        self,
        volumeNode: slicer.vtkMRMLScalarVolumeNode,
        *,
        onProgress: Callable[[str, float], None] | None = None,
        **options: Any,
    ) -> DiagnosisRun:
        """Write the volume to a temporary NRRD and start the engine on it (returns at once)."""
        problem = inputProblem(volumeNode)
        if problem:
            raise InputVolumeError(problem)
        chosen = diagnosisOptions(**options)
        workDir = Path(tempfile.mkdtemp(prefix="JCSDiagnosis-"))
        inputPath = workDir / "volume.nrrd"
        arguments = engineArguments(inputPath, workDir / "out", chosen)
        sitk.WriteImage(volumes.imageFromVolume(volumeNode), str(inputPath), useCompression=True)
        process = EngineProcess(arguments, python=self.python, onProgress=onProgress)
        process.start()
        return DiagnosisRun(volumeNode, process, workDir, volumeNode.GetName())

    def load(self, run: DiagnosisRun) -> nodes.DiagnosisNodes:
        """Turn the engine's output folder into heatmap, segmentation, tables and chart nodes."""
        out, volumeNode = run.outputDir, run.volumeNode
        resultsPath = out / "results.json"
        if not resultsPath.is_file():
            raise EngineError(f"the engine wrote no {resultsPath.name}:\n{run.process.output()}")
        case = _readCase(resultsPath)
        heatmap = _readOnVolumeGrid(out / "heatmap.nrrd", volumeNode).astype(np.float32)
        lesions = _readOnVolumeGrid(out / "lesions.nrrd", volumeNode) > 0
        lungsPath = out / "lungs.nrrd"
        lungs = (
            _readOnVolumeGrid(lungsPath, volumeNode)
            if lungsPath.is_file()
            else volumes.segmentLungs(volumeNode)
        )
        result = nodes.createResultNodes(
            volumeNode, f"{run.name} JCS", heatmap=heatmap, lesions=lesions, lungs=lungs, case=case
        )
        nodes.showResultValues(result, result.results, nodes.maskSha256(lesions))
        display.showHeatmap(volumeNode, result.heatmapNode)
        return result


def _readCase(path: Path) -> CaseResult:
    from jcs.pipeline import CaseResult

    try:
        return CaseResult.read(path)
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineError(f"the engine's {path.name} cannot be read ({type(exc).__name__}: {exc})") from exc


def _readOnVolumeGrid(path: Path, volumeNode) -> np.ndarray:
    if not path.is_file():
        raise EngineError(f"the engine did not write {path.name}")
    image = sitk.ReadImage(str(path))
    if not volumes.sameGeometry(image, volumeNode):
        raise EngineError(f"{path.name} does not have the geometry of '{volumeNode.GetName()}'")
    return sitk.GetArrayFromImage(image)
