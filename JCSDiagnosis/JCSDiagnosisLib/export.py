"""DICOM export of a result: the current lesion segment as DICOM-SEG plus a TID 1500 SR report.

The SEG references the CT series the volume was loaded from (a given folder, Slicer's DICOM
database, or the DICOM files of its storage node); the SR's values come from the result's typed
values through `jcs.dicomseg.ReportValues.from_summary`, the one source of SR values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import slicer

from . import nodes, volumes

if TYPE_CHECKING:
    from jcs.dicomseg import ExportedFiles, ReportValues


def reportValues(results: nodes.DiagnosisResults) -> ReportValues:
    """SR measurements of a result: the measured summary, the AI's case reading and, for an edited
    segmentation decided by the segmenter rule, that rule's reading of the edit."""
    from jcs.dicomseg import ReportValues

    summary, decision = results.case.summary, results.case.case
    reading = results.reading if results.edited else None
    if summary.get("opacification_volume_ml") is None:
        raise ValueError("the result has no 'opacification_volume_ml'; run 'Update results' first")
    return ReportValues.from_summary(
        dict(summary),
        positive_slice_count=decision.positive_slice_count,
        threshold=decision.threshold,
        case_positive=decision.positive,
        reviewed_positive_slice_count=reading.positive_slice_count if reading is not None else None,
        reviewed_case_positive=reading.positive if reading is not None else None,
    )


class DicomExporter:
    """Writes DICOM-SEG + SR of results on one scene."""

    def __init__(self, scene: slicer.vtkMRMLScene) -> None:
        self.scene = scene
        #: Maps a SOP Instance UID to its file (Slicer sets `slicer.dicomDatabase.fileForInstance`).
        self.dicomFileForInstance: Callable[[str], str] | None = None

    @staticmethod
    def export(result: nodes.DiagnosisNodes, outputDir: str | Path, sourceFiles: list[Path]) -> ExportedFiles:
        """Write the current lesion segment and the SR of `result` (whose values must describe that
        segment: update it first), referencing the CT's `sourceFiles`, into `outputDir`."""
        from jcs.dicomseg import export_seg_and_report

        mask = nodes.lesionMask(result.segmentationNode)
        return export_seg_and_report(
            mask=volumes.imageFromVolume(result.volumeNode, mask),
            source_files=sourceFiles,
            output_dir=Path(outputDir),
            engine=result.results.case.to_json(),
            edited=result.results.edited,
            values=reportValues(result.results),
        )

    def sourceDicomFiles(self, volumeNode, sourceDicomDir: str | Path | None = None) -> list[Path]:
        """The DICOM files of the CT series behind `volumeNode` (clear error when there are none)."""
        if sourceDicomDir is not None:
            return _filesInFolder(Path(sourceDicomDir))
        files = self._filesInDatabase(volumeNode) or _filesOfStorage(volumeNode)
        if files:
            return files
        raise ValueError(
            f"'{volumeNode.GetName()}' was not loaded from DICOM, so a DICOM-SEG cannot reference its source "
            "images: load the CT series through the DICOM module, or give the CT series folder "
            "(sourceDicomDir)."
        )

    def _filesInDatabase(self, volumeNode) -> list[Path]:
        """The instances Slicer's DICOM plugin recorded for the volume ([] when none)."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.scene)
        item = shNode.GetItemByDataNode(volumeNode) if shNode is not None else 0
        uids = (shNode.GetItemAttribute(item, "DICOM.instanceUIDs") or "").split() if item else []
        if not uids or self.dicomFileForInstance is None:
            return []
        files = [Path(self.dicomFileForInstance(uid)) for uid in uids]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"source DICOM files are missing from the DICOM database: {missing[:3]}")
        return files


def _filesInFolder(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"source DICOM folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _isDicom(p))
    if not files:
        raise FileNotFoundError(f"no DICOM files in {folder}")
    return files


def _filesOfStorage(volumeNode) -> list[Path]:
    """The DICOM files the volume's storage node read ([] when it read none)."""
    storage = volumeNode.GetStorageNode()
    if storage is None:
        return []
    names = [storage.GetFileName()] + [
        storage.GetNthFileName(i) for i in range(storage.GetNumberOfFileNames())
    ]
    return sorted({Path(n) for n in names if n and Path(n).is_file() and _isDicom(Path(n))})


def _isDicom(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            file.seek(128)
            return file.read(4) == b"DICM"
    except OSError:
        return False
