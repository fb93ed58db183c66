"""Downloads of the current result: DICOM-SEG and SR, the tables, results.json and the lesion labelmap."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import SimpleITK as sitk
from JCSDiagnosisLib.tables import readTable
from JCSDiagnosisLib.volumes import imageFromVolume
from trame_server import Server
from trame_slicer.app.logic import BaseLogic
from trame_slicer.core import SlicerApp

from .session import ViewerSession

#: Files the download menu offers: (key, file name, label, MIME type, needs DICOM input).
DOWNLOADS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("seg", "lesions_seg.dcm", "DICOM-SEG", "application/dicom", True),
    ("sr", "report_sr.dcm", "DICOM SR report", "application/dicom", True),
    ("summary", "summary.csv", "Summary CSV", "text/csv", False),
    ("lesions", "lesions.csv", "Lesions CSV", "text/csv", False),
    ("slices", "slices.csv", "Slices CSV", "text/csv", False),
    ("json", "results.json", "Results JSON", "application/json", False),
    ("labelmap", "lesions_labelmap.nrrd", "Lesion labelmap", "application/octet-stream", False),
)
FILE_NAMES = {key: filename for key, filename, *_ in DOWNLOADS}


class DownloadLogic(BaseLogic[None]):
    """Writes each download into a session folder and hands its bytes to the page."""

    def __init__(self, server: Server, slicer_app: SlicerApp, session: ViewerSession) -> None:
        super().__init__(server, slicer_app, None)
        self.session = session
        self._folder = tempfile.TemporaryDirectory(prefix="jcs-viewer-")

    def download(self, key: str) -> Any:
        """Bytes of one download (see `DOWNLOADS`) as a trame attachment."""
        return self.server.protocol.addAttachment(self.file_bytes(key))

    def file_bytes(self, key: str) -> bytes:
        if self.session.result is None or key not in FILE_NAMES:
            raise ValueError(f"nothing to download for {key!r}")
        folder = Path(self._folder.name)
        if key in ("seg", "sr"):
            return self._dicom_bytes(key, folder)
        if key == "labelmap":
            return self._labelmap_bytes(folder / FILE_NAMES[key])
        if key == "json":
            return json.dumps(self.results_dict(), indent=2).encode()
        result = self.session.result
        node = {"summary": result.summaryTableNode, "lesions": result.lesionTableNode}.get(
            key, result.sliceTableNode
        )
        return _csv_bytes(readTable(node))

    def _dicom_bytes(self, key: str, folder: Path) -> bytes:
        written = self.session.scene_logic.exportDicomSeg(
            self.session.result.segmentationNode,
            folder / "dicom",
            sourceDicomDir=self.session.input.dicom_dir,
        )
        return (written.seg_path if key == "seg" else written.sr_path).read_bytes()

    def _labelmap_bytes(self, path: Path) -> bytes:
        mask = self.session.scene_logic.lesionMask(self.session.result.segmentationNode)
        sitk.WriteImage(imageFromVolume(self.session.volume_node, mask), str(path), useCompression=True)
        return path.read_bytes()

    def results_dict(self) -> dict[str, Any]:
        result = self.session.result
        engine = result.results.engine
        return {
            "case": {"name": self.session.input.name, **engine.caseFields()},
            "weights": engine.weights,
            "notes": list(engine.notes),
            "min_lesion_ml_shown": self.session.min_lesion_ml,
            "segmentation": "edited"
            if self.session.scene_logic.isEdited(result.segmentationNode)
            else "automatic",
            "summary": readTable(result.summaryTableNode),
            "lesions": readTable(result.lesionTableNode),
            "slices": readTable(result.sliceTableNode),
        }


def _csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()
