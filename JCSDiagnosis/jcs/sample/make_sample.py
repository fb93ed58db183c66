"""Build the bundled sample (``jcs/sample/P001``) from the COVID-CT-MD case P001 in ``../shared/data``.

Run from the repository root: ``python -m jcs.sample.make_sample [SOURCE_FOLDER]``. Deterministic: the
same source gives byte-identical files. What it does is stated in ``jcs/sample/README.md``:

1. read the P001 series (148 axial slices, 2 mm) with :func:`jcs.io.read_ct`;
2. keep :data:`SLICES`: 48 contiguous slices (96 mm) from the hila down into the infected lower
   lobes; 38 carry the radiologist's infection label, 10 do not (9 at the top, 1 in the middle);
3. body mask = largest 3-D component above -500 HU (drops the table), holes filled per slice, dilated
   by :data:`BODY_MARGIN` voxels; voxels outside it are set to -1024 HU (air); rows are cropped to the
   mask's bounding box (the body spans all columns, so columns are kept); HU inside the body unchanged;
4. write each slice as a derived CT image with the source header (private tags and a retired
   attribute removed, empty type-2 PatientName/PatientBirthDate added), new
   SOP Instance and Series UIDs, the cropped ImagePositionPatient, and lossless JPEG (process 14 SV1,
   the source's transfer syntax, encoded by GDCM through SimpleITK);
5. read the written series back and check it equals the intended HU voxel for voxel.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import JPEGLosslessSV1, generate_uid
from pydicom.valuerep import DSfloat
from scipy import ndimage

from jcs.io import read_ct

SAMPLE_DIR = Path(__file__).resolve().parent
OUT_DIR = SAMPLE_DIR / "P001"
DEFAULT_SOURCE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "covid-ct-md" / "P001"
SLICES = range(37, 85)
"""Axial-grid (inferior to superior) indices kept: source slice_index_sup_to_inf 63 to 110."""
BODY_MARGIN = 2
AIR_HU = -1024
UID_SEED = "jcs-diagnosis sample P001 v1"


def body_mask(hu: np.ndarray) -> np.ndarray:
    """Patient body: largest 3-D component above -500 HU, holes filled per slice, dilated."""
    labels, _ = ndimage.label(hu > -500)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == sizes.argmax()
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return ndimage.binary_dilation(body, iterations=BODY_MARGIN)


def _jpeg_lossless(stored: np.ndarray) -> pydicom.Dataset:
    """A GDCM-written lossless JPEG (process 14 SV1) of one uint16 slice, read back with pydicom."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slice.dcm"
        writer = sitk.ImageFileWriter()
        writer.SetFileName(str(path))
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG")
        writer.Execute(sitk.GetImageFromArray(stored))
        encoded = pydicom.dcmread(path)
    if encoded.file_meta.TransferSyntaxUID != JPEGLosslessSV1:
        raise RuntimeError(f"GDCM wrote {encoded.file_meta.TransferSyntaxUID.name}, not lossless JPEG SV1")
    return encoded


def make_sample(source: Path = DEFAULT_SOURCE, out_dir: Path = OUT_DIR) -> list[Path]:
    """Write the sample series into ``out_dir``; return its files in axial order."""
    ct = read_ct(source, allow_2d=False)
    if ct.image.GetDirection() != (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0):
        raise RuntimeError(f"{source}: expected an identity-direction axial series")
    hu = sitk.GetArrayFromImage(ct.axial_image()).astype(np.int16)[SLICES.start : SLICES.stop]
    if ct.dicom_files is None:
        raise RuntimeError(f"{source}: expected a DICOM series")
    files = ct.dicom_files[SLICES.start : SLICES.stop]
    body = body_mask(hu)
    rows = np.nonzero(body.any(axis=(0, 2)))[0]
    cols = np.nonzero(body.any(axis=(0, 1)))[0]
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    kept = np.where(body, hu, np.int16(AIR_HU))[:, r0:r1, c0:c1]

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.dcm"):
        old.unlink()
    series_uid = generate_uid(entropy_srcs=[UID_SEED, "series"])
    written = []
    for k, (path, slice_hu) in enumerate(zip(files, kept, strict=True)):
        ds = pydicom.dcmread(path)
        ds.remove_private_tags()
        ds.PatientName = ds.get("PatientName", "")  # type 2: present, empty in the de-identified source
        ds.PatientBirthDate = ds.get("PatientBirthDate", "")
        if "EstimatedDoseSaving" in ds:
            del ds.EstimatedDoseSaving  # retired attribute
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        stored = np.rint((slice_hu - intercept) / slope).astype(np.uint16)
        encoded = _jpeg_lossless(stored)
        source_ref = pydicom.Dataset()
        source_ref.ReferencedSOPClassUID = ds.SOPClassUID
        source_ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        ds.SourceImageSequence = [source_ref]
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[UID_SEED, ds.SOPInstanceUID])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = "JCS sample: COVID-CT-MD P001 chest crop"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.DerivationDescription = (
            f"Slices {SLICES.start}-{SLICES.stop - 1} (inferior to superior) of the source series; rows "
            f"{r0}-{r1 - 1} kept; outside the body set to {AIR_HU} HU; lossless JPEG"
        )
        row_dir = np.asarray(ds.ImageOrientationPatient[:3], dtype=float)
        col_dir = np.asarray(ds.ImageOrientationPatient[3:], dtype=float)
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        position = np.asarray(ds.ImagePositionPatient, dtype=float)
        position = position + r0 * row_spacing * col_dir + c0 * col_spacing * row_dir
        ds.ImagePositionPatient = [DSfloat(v, auto_format=True) for v in position]
        ds.Rows, ds.Columns = stored.shape
        for keyword in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
            setattr(ds, keyword, getattr(encoded, keyword))
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.PixelData = encoded.PixelData
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        target = out_dir / f"P001_{k:03d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        written.append(target)

    check = read_ct(out_dir, allow_2d=False)
    if check.dicom_files != written or not np.array_equal(check.axial_array(), kept):
        raise RuntimeError("the written sample does not read back as the intended HU volume")
    _write_labels(source.parent / "slice_labels.csv", files, out_dir.parent / "P001_slice_labels.csv")
    return written


def _write_labels(labels_csv: Path, files: list[Path], target: Path) -> None:
    """Radiologist slice labels of the kept slices, in axial order of the sample."""
    with open(labels_csv, newline="") as handle:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(handle)}
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(
            ["axial_index", "sample_file", "source_file", "infected_slice_label", "infected_lobes"]
        )
        for k, path in enumerate(files):
            row = rows[path.name]
            writer.writerow(
                [k, f"P001_{k:03d}.dcm", row["file"], row["infected_slice_label"], row["infected_lobes"]]
            )


if __name__ == "__main__":
    written = make_sample(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
    total = sum(p.stat().st_size for p in written)
    print(f"wrote {len(written)} files, {total / 1e6:.2f} MB, to {written[0].parent}")
