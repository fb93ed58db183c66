"""Write synthetic CT Image Storage series with pydicom, valid by default and broken on request.

`write_ct_series` writes one file per axial-grid slice with the Patient, General Study, General Series,
Frame of Reference, General Equipment, General Image, Image Plane, Image Pixel, CT Image and SOP Common
modules filled in (checked with dicom3tools `dciodvfy` in test_io.py). Keyword knobs produce the bad
inputs the reader must refuse: dropped slices, uneven positions, oblique or non-axial orientation,
another modality, slices of another size, truncated files.

Geometry follows SimpleITK: `spacing`, `origin` and `direction` are in (x, y, z) order and the array is
(Z, Y, X); array axis 2 runs along ImageOrientationPatient's row direction (direction column 0), axis 1
along its column direction (direction column 1) and slice k lies at origin + k * spacing_z * column 2.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


def rotate_direction(direction: Sequence[float], degrees: float, axis: str = "x") -> tuple[float, ...]:
    """A direction matrix (row-major, 9 values) rotated by `degrees` about patient axis `axis`."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    rotations = {
        "x": [[1, 0, 0], [0, c, -s], [0, s, c]],
        "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
        "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]],
    }
    matrix = np.asarray(rotations[axis]) @ np.asarray(direction, dtype=float).reshape(3, 3)
    return tuple(float(v) for v in matrix.ravel())


def _uid(seed: str | None, *parts: object) -> str:
    return generate_uid(entropy_srcs=[seed, *map(str, parts)]) if seed is not None else generate_uid()


def write_ct_series(
    hu: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    out_dir: str | Path,
    *,
    modality: str = "CT",
    rescale_intercept: float = -1024.0,
    rescale_slope: float = 1.0,
    drop_slices: Iterable[int] = (),
    position_offsets_mm: Mapping[int, float] | None = None,
    resize_slices: Iterable[int] = (),
    truncate_slices: Iterable[int] = (),
    uid_seed: str | None = "jcs-test",
    series_number: int = 1,
    series_description: str = "Synthetic chest CT",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    file_prefix: str = "CT",
) -> list[Path]:
    """Write `hu` (Z, Y, X) as a DICOM series into `out_dir`; return the written files in slice order.

    Knobs for bad series: `drop_slices` omits slice indices (a gap), `position_offsets_mm` shifts
    slices along the slice axis (uneven spacing), a rotated `direction` gives an oblique series (see
    `rotate_direction`), `modality` other than "CT" writes that modality, `resize_slices` writes those
    slices cropped by 2 rows and columns, `truncate_slices` cuts those files to half their length.
    `uid_seed` makes UIDs reproducible; give different seeds (or series numbers) for separate series.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be (Z, Y, X), got shape {hu.shape}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    sx, sy, sz = (float(v) for v in spacing)
    stored = np.rint((hu.astype(np.float64) - rescale_intercept) / rescale_slope)
    signed = stored.min() < 0
    info = np.iinfo(np.int16 if signed else np.uint16)
    if stored.min() < info.min or stored.max() > info.max:
        raise ValueError("HU values do not fit 16-bit stored values with this rescale")
    stored = stored.astype(np.int16 if signed else np.uint16)
    study_uid = _uid(uid_seed, "study")
    series_uid = _uid(uid_seed, "series", series_number)
    frame_uid = _uid(uid_seed, "frame")
    offsets = dict(position_offsets_mm or {})
    dropped, resized, truncated = set(drop_slices), set(resize_slices), set(truncate_slices)
    written: list[Path] = []
    for k in range(hu.shape[0]):
        if k in dropped:
            continue
        pixels = stored[k, 1:-1, 1:-1] if k in resized else stored[k]
        position = np.asarray(origin, dtype=float) + (k * sz + offsets.get(k, 0.0)) * d[:, 2]
        ds = _slice_dataset(
            pixels, signed, modality, (sx, sy, sz), position, d, rescale_intercept, rescale_slope,
            instance=k + 1, study_uid=study_uid, series_uid=series_uid, frame_uid=frame_uid,
            sop_uid=_uid(uid_seed, "sop", series_number, k), series_number=series_number,
            series_description=series_description, image_type=image_type,
        )  # fmt: skip
        path = out_dir / f"{file_prefix}{series_number:03d}_{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if k in truncated:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        written.append(path)
    return written


def write_image_series(image: sitk.Image, out_dir: str | Path, **knobs: object) -> list[Path]:
    """`write_ct_series` for a 3-D SimpleITK image in HU, keeping its geometry."""
    return write_ct_series(
        sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
        out_dir, **knobs,
    )  # fmt: skip


def _slice_dataset(
    pixels: np.ndarray,
    signed: bool,
    modality: str,
    spacing: tuple[float, float, float],
    position: np.ndarray,
    d: np.ndarray,
    intercept: float,
    slope: float,
    *,
    instance: int,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    sop_uid: str,
    series_number: int,
    series_description: str,
    image_type: Sequence[str],
) -> pydicom.Dataset:
    sop_class = _SOP_CLASS.get(modality, CTImageStorage)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(image_type)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20200305"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "JCS Diagnosis test suite"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientName = "Phantom^Chest"
    ds.PatientID = "JCS-PHANTOM"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = _ds(spacing[2])
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in (*d[:, 0], *d[:, 1])]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (y), column spacing (x)
    ds.BitsAllocated = 16
    bits = 12 if not signed and int(pixels.max(initial=0)) < 4096 else 16  # as most scanners
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = _ds(slope)
    if modality == "CT":
        ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _ds(value: float) -> str:
    """A Decimal String value of at most 16 characters."""
    text = f"{float(value):.10g}"
    return text if len(text) <= 16 else f"{float(value):.6g}"


def dciodvfy_errors(path: str | Path) -> list[str] | None:
    """The "Error" lines of dicom3tools' `dciodvfy` for one DICOM file; None when it is not installed."""
    if shutil.which("dciodvfy") is None:
        return None
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
