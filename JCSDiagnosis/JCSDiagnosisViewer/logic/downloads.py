"""Downloads of the current result: DICOM-SEG and SR, the tables, results.json and the lesion labelmap."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import SimpleITK as sitk
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
        """The bytes of one download of the current result (the tables as `jcs diagnose` writes them)."""
        if self.session.result is None or key not in FILE_NAMES:
            raise ValueError(f"nothing to download for {key!r}")
        folder = Path(self._folder.name)
        if key in ("seg", "sr"):
            return self._dicom_bytes(key, folder)
        if key == "labelmap":
            return self._labelmap_bytes(folder / FILE_NAMES[key])
        if key == "json":
            return json.dumps(self.results_json(), indent=2, allow_nan=False).encode()
        tables = folder / "tables"
        self.session.current_result().results.tablesCase().write_tables(tables)
        return (tables / FILE_NAMES[key]).read_bytes()

    def _dicom_bytes(self, key: str, folder: Path) -> bytes:
        written = self.session.scene_logic.exportDicomSeg(
            self.session.current_result().segmentationNode,
            folder / "dicom",
            sourceDicomDir=self.session.current_input().dicom_dir,
        )
        return (written.seg_path if key == "seg" else written.sr_path).read_bytes()

    def _labelmap_bytes(self, path: Path) -> bytes:
        mask = self.session.scene_logic.lesionMask(self.session.current_result().segmentationNode)
        sitk.WriteImage(imageFromVolume(self.session.volume_node, mask), str(path), useCompression=True)
        return path.read_bytes()

    def results_json(self) -> dict[str, Any]:
        """results.json of the current result (the CLI's layout) with the case's name, the smallest
        lesion listed and whether the segmentation the tables describe was edited."""
        result = self.session.current_result()
        data = result.results.tablesCase().to_json()
        data["case"] = {"name": self.session.current_input().name, **data["case"]}
        edited = self.session.scene_logic.isEdited(result.segmentationNode)
        data["segmentation"] = "edited" if edited else "automatic"
        data["min_lesion_ml_shown"] = self.session.min_lesion_ml
        return data
