"""Engine run and load: check the CT, run `jcs diagnose` in a child process, load its files as nodes.

The engine (`jcs.cli diagnose`, paper §III: per-slice classification, Grad-CAM explanation, lesion
segmentation, quantification) runs out of process on a temporary NRRD of the volume; its output
folder is turned into new result nodes (:mod:`.nodes`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer

from . import display, nodes, volumes
from .process import EngineError, EngineProcess

POLICIES = ("positive-only", "always")
DECISIONS = ("auto", "classifier", "segmenter")
DEVICES = ("auto", "cpu", "cuda", "mps")


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


def engineArguments(
    inputPath: Path,
    outputDir: Path,
    *,
    device: str = "auto",
    threshold: int | None = None,
    policy: str = "positive-only",
    decision: str = "auto",
    classifier: str | None = None,
    segmenter: str | None = None,
) -> list[str]:
    """`jcs diagnose` arguments for these options (checked here, so a bad option fails before the run)."""
    if policy not in POLICIES:
        raise ValueError(f"segmentation policy must be one of {POLICIES}, got '{policy}'")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got '{device}'")
    if decision not in DECISIONS:
        raise ValueError(f"decision rule must be one of {DECISIONS}, got '{decision}'")
    if threshold is not None and threshold < 0:
        raise ValueError(f"positive-slice threshold must not be negative, got {threshold}")
    arguments = ["diagnose", str(inputPath), "--out", str(outputDir), "--progress", "json"]
    arguments += ["--device", device, "--segment", policy, "--decision", decision]
    for flag, value in (("--threshold", threshold), ("--classifier", classifier), ("--segmenter", segmenter)):
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
        workDir = Path(tempfile.mkdtemp(prefix="JCSDiagnosis-"))
        inputPath = workDir / "volume.nrrd"
        arguments = engineArguments(inputPath, workDir / "out", **options)
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
        case = json.loads(resultsPath.read_text(encoding="utf-8"))
        heatmap = _readOnVolumeGrid(out / "heatmap.nrrd", volumeNode).astype(np.float32)
        lesions = _readOnVolumeGrid(out / "lesions.nrrd", volumeNode) > 0
        lungsPath = out / "lungs.nrrd"
        lungs = (
            _readOnVolumeGrid(lungsPath, volumeNode)
            if lungsPath.is_file()
            else volumes.segmentLungs(volumeNode)
        )
        engine = engineInfoOf(case)
        result = nodes.createResultNodes(
            volumeNode, f"{run.name} JCS", heatmap=heatmap, lesions=lesions, lungs=lungs, engine=engine
        )
        nodes.showResultValues(result, resultsOf(case, engine), nodes.maskSha256(lesions))
        display.showHeatmap(volumeNode, result.heatmapNode)
        return result


def engineInfoOf(case: dict[str, Any]) -> nodes.EngineInfo:
    """What is kept on the segmentation of a results.json."""
    fields = case.get("case", {})
    return nodes.EngineInfo.fromJson(
        {
            **fields,
            "engine_version": case.get("engine_version", ""),
            "weights": case.get("weights", {}),
            "device": case.get("device", ""),
            "slice_count": len(case.get("slices", [])) or None,
            "notes": case.get("notes", []),
        }
    )


def resultsOf(case: dict[str, Any], engine: nodes.EngineInfo) -> nodes.DiagnosisResults:
    """The typed values of a results.json (its summary completed with the case fields)."""
    summary = dict(case.get("summary", {}))
    fields = case.get("case", {})
    for key in ("positive", "positive_slice_count", "threshold", "segmented"):
        if key in fields and key not in summary:
            summary[key] = fields[key]
    summary.setdefault("segmentation", "automatic")
    return nodes.DiagnosisResults(
        engine, summary=summary, lesions=list(case.get("lesions", [])), slices=list(case.get("slices", []))
    )


def _readOnVolumeGrid(path: Path, volumeNode) -> np.ndarray:
    if not path.is_file():
        raise EngineError(f"the engine did not write {path.name}")
    image = sitk.ReadImage(str(path))
    if not volumes.sameGeometry(image, volumeNode):
        raise EngineError(f"{path.name} does not have the geometry of '{volumeNode.GetName()}'")
    return sitk.GetArrayFromImage(image)
