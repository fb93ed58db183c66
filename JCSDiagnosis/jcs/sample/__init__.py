"""The bundled sample scan for ``jcs diagnose --sample``: 48 axial slices of COVID-CT-MD case P001.

A real COVID-19 positive chest CT (DICOM, HU, original geometry), cropped to the body; source, terms
and processing are stated in ``README.md`` beside this file, and ``make_sample.py`` rebuilds it.
"""

from __future__ import annotations

from pathlib import Path

from jcs.errors import CorruptFileError

SAMPLE_DIR = Path(__file__).resolve().parent
SAMPLE_NAME = "COVID-CT-MD P001 (chest crop, 48 slices)"
SAMPLE_CITATION = (
    "Afshar P. et al., COVID-CT-MD, COVID-19 computed tomography scan dataset applicable in machine "
    "learning and deep learning. Scientific Data 8, 121 (2021)"
)


def sample_path() -> Path:
    """Folder of the sample DICOM series, readable with :func:`jcs.io.read_ct`."""
    folder = SAMPLE_DIR / "P001"
    if not any(folder.glob("*.dcm")):
        raise CorruptFileError(f"{folder}: the bundled sample is missing (reinstall the package)")
    return folder


def sample_labels_path() -> Path:
    """CSV of the radiologist's per-slice infection labels, one row per axial slice of the sample."""
    return SAMPLE_DIR / "P001_slice_labels.csv"
