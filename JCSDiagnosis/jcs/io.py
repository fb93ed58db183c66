"""Reading chest CT into a :class:`CTVolume` with its original geometry and an axial working grid.

What is accepted (everything else is refused with a specific :mod:`jcs.errors` exception whose
message names the file and the problem):

- Volume files (NIfTI ``.nii``/``.nii.gz``, NRRD ``.nrrd``/``.nhdr``, MetaImage ``.mha``/``.mhd``)
  holding Hounsfield units. Any axis-aligned orientation (e.g. NIfTI in RAS, sagittal or coronal
  stacks) is accepted and reoriented to the axial grid by permutation/flip only; a direction that
  deviates from the nearest axes by more than :data:`MAX_OBLIQUE_DEG` is refused as oblique. The value
  range must look like HU (air and lung at about -1000 present, see :func:`check_hu_range`).
- DICOM series folders (searched recursively). Files are grouped by SeriesInstanceUID; the CT series
  with the most slices is read and the others are listed in ``skipped_series``. The chosen series must
  be axial (ImageOrientationPatient rows/columns along the patient x/y axes, any flips), all slices the
  same size, positions on a straight line along the slice normal (no gantry tilt), evenly spaced and
  without gaps. Localizer images inside the series are skipped. Oblique, sagittal or coronal series are
  refused because slice-wise 2-D models were trained on axial slices. Modality must be CT; the values
  are taken as HU after RescaleSlope/Intercept. Files without the DICM preamble or without a suffix
  are recognised; a damaged or truncated file is named in the error.
- A single DICOM file: one CT slice, or a multi-frame (enhanced) CT whose frames are checked as a
  series is (``dicom_files`` is then that one file).
- 2-D images (PNG/JPEG, 8-bit grey, already windowed; RGB/RGBA is converted to grey with ITU-R 601
  luma weights, as PIL's ``convert("L")``, and refused when it is a colour picture). 2-D images and
  single slices are accepted only with ``allow_2d=True``.

Every input then passes :mod:`jcs.validate` (raw-file integrity, geometry and "is this a CT"): it is
refused, or read with cautions listed in :attr:`CTVolume.notes` that travel into the results.

The axial grid is the image reoriented with ``SimpleITK.DICOMOrient(image, "LPS")``: array axis 0 runs
inferior to superior, axis 1 anterior to posterior and axis 2 from patient right to left (the usual
radiological display of an axial slice). :meth:`CTVolume.from_axial` maps arrays computed on that grid
back onto the original image voxel for voxel.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from jcs.errors import (
    CorruptFileError,
    EmptyImageError,
    InputError,
    MixedSeriesError,
    NotCTError,
    NotVolumeError,
    ObliqueSeriesError,
    SliceSpacingError,
)
from jcs.validate import apply_nifti_spacing, check_2d_colour, check_geometry, check_raw_file, spacing_caution

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
MAX_OBLIQUE_DEG = 1.0
"""Largest angle (degrees) between an image axis and the nearest patient axis still taken as aligned."""
SPACING_REL_TOL = 0.05
"""Relative tolerance on DICOM slice gaps before they count as non-uniform."""
MIN_AIR_FRACTION = 0.005
"""Smallest fraction of voxels in the air/lung HU range for a volume file to count as chest CT."""
AXIAL_ORIENTATION = "LPS"

_LUMA_601 = (0.299, 0.587, 0.114)


@dataclass
class CTVolume:
    """A CT image as read plus the information needed to map results back onto it.

    ``image`` keeps the original geometry (HU as float32/int16, or uint8 for 8-bit 2-D images).
    ``dicom_files`` lists the source files in axial-grid slice order (index 0 = axial slice 0); a
    multi-frame CT gives the one file. ``skipped_series`` describes the other series of a folder.
    ``notes`` are cautions found while reading (:mod:`jcs.validate`), copied into every result.
    """

    image: sitk.Image
    is_hu: bool
    path: Path
    dicom_files: list[Path] | None = None
    series_instance_uid: str | None = None
    skipped_series: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _axial: sitk.Image | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_2d(self) -> bool:
        """True for a single slice (2-D image, single DICOM slice or a volume one slice thick)."""
        return self.image.GetDimension() == 2 or self.image.GetSize()[2] == 1

    def axial_image(self) -> sitk.Image:
        """The image reoriented to the axial grid (permutation/flip only); always 3-D."""
        if self._axial is None:
            image = self.image
            if image.GetDimension() == 2:
                image = sitk.JoinSeries(image)
            self._axial = sitk.DICOMOrient(image, AXIAL_ORIENTATION)
        return self._axial

    def axial_array(self) -> np.ndarray:
        """(Z, Y, X) array of :meth:`axial_image`: float32 HU, or uint8 for 8-bit images."""
        array = sitk.GetArrayFromImage(self.axial_image())
        return array if array.dtype == np.uint8 else array.astype(np.float32, copy=False)

    def from_axial(self, array: np.ndarray) -> sitk.Image:
        """Place an array computed on the axial grid into the original geometry.

        The result has the size, origin, spacing and direction of ``image`` (2-D when ``image`` is
        2-D) and the dtype of ``array``; voxel values are moved, never interpolated.
        """
        axial = self.axial_image()
        expected = tuple(reversed(axial.GetSize()))
        array = np.asarray(array)
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        if array.shape != expected:
            raise InputError(
                f"{self.path}: array of shape {array.shape} does not match the axial grid {expected}"
            )
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(axial)
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self._direction_3d())
        out = sitk.DICOMOrient(out, code)
        if self.image.GetDimension() == 2:
            out = out[:, :, 0]
        out.CopyInformation(self.image)
        return out

    def _direction_3d(self) -> tuple[float, ...]:
        if self.image.GetDimension() == 3:
            return self.image.GetDirection()
        d = self.image.GetDirection()
        return (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)


def read_ct(path: str | os.PathLike[str], *, allow_2d: bool = True) -> CTVolume:
    """Read a CT volume (file or DICOM folder) or, with ``allow_2d``, a single 2-D slice."""
    path = Path(path)
    if not path.exists():
        raise CorruptFileError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise CorruptFileError(f"{path}: the file is empty (0 bytes)")
    if path.is_dir():
        ct = _read_dicom_dir(path)
    else:
        name = path.name.lower()
        if name.endswith(IMAGE_SUFFIXES):
            ct = _read_2d_image(path)
        elif name.endswith(VOLUME_SUFFIXES):
            ct = _read_volume_file(path)
        elif _dicom_kind(path) or name.endswith(DICOM_SUFFIXES):
            ct = _read_dicom_file(path)
        else:
            raise InputError(
                f"{path}: unsupported file type; give a DICOM folder or file, NIfTI, NRRD, MHA, PNG or JPEG"
            )
    _check_values(ct)
    if ct.is_2d and not allow_2d:
        what = "a 2-D image" if ct.image.GetDimension() == 2 else "a single slice"
        raise NotVolumeError(f"{path}: {what} where a 3-D volume with several slices is needed")
    ct.notes.extend(check_geometry(ct.image, path, is_hu=ct.is_hu))
    return ct


# ----------------------------------------------------------------------------------------------
# value checks


def check_hu_range(values: np.ndarray, source: Path) -> None:
    """Refuse arrays whose values do not look like Hounsfield units of a chest CT.

    A chest CT holds air and lung: at least :data:`MIN_AIR_FRACTION` of the voxels must lie in
    [-1150, -500] HU (padding such as -3024 outside the field of view is allowed). Tissue and bone
    stay below a few thousand HU: the 99th percentile must be at most 4000. Raw stored values
    (air = 0), MR or PET intensities, scaled units and 8-bit images fail these tests.
    """
    sample = values[:: max(1, values.shape[0] // 32)] if values.ndim == 3 else values
    air = float(np.count_nonzero((sample >= -1150) & (sample <= -500))) / max(sample.size, 1)
    high = float(np.percentile(sample, 99))
    if air < MIN_AIR_FRACTION or high > 4000:
        raise NotCTError(
            f"{source}: values do not look like CT Hounsfield units ({100 * air:.2f}% of voxels in the "
            f"air/lung range -1150..-500, 99th percentile {high:.0f}; a chest CT has lung near -850 HU)"
        )


def _check_values(ct: CTVolume) -> None:
    array = sitk.GetArrayViewFromImage(ct.image)
    if array.size == 0:
        raise EmptyImageError(f"{ct.path}: the image has no voxels")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise EmptyImageError(f"{ct.path}: the image contains NaN or infinite values")
    if array.min() == array.max():
        raise EmptyImageError(f"{ct.path}: the image is constant (every voxel is {array.flat[0]})")


# ----------------------------------------------------------------------------------------------
# orientation


def _check_axis_aligned(direction: tuple[float, ...], dim: int, source: Path) -> None:
    matrix = np.asarray(direction, dtype=float).reshape(dim, dim)
    cosines = np.abs(matrix).max(axis=0).clip(-1.0, 1.0)
    worst = math.degrees(math.acos(float(cosines.min())))
    if worst > MAX_OBLIQUE_DEG:
        raise ObliqueSeriesError(
            f"{source}: the image is oblique (axes {worst:.1f} degrees off the patient axes; at most "
            f"{MAX_OBLIQUE_DEG} accepted); resample it to an axis-aligned grid first"
        )


# ----------------------------------------------------------------------------------------------
# files


def _sitk_read(path: Path) -> sitk.Image:
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # header remarks are checked and worded here
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CorruptFileError(f"{path}: cannot read the file ({_first_line(exc)})") from exc
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)


def _hu_pixel_type(image: sitk.Image) -> sitk.Image:
    """HU images as int16 when the values fit (integer types), float32 otherwise."""
    if image.GetPixelID() in (sitk.sitkInt16, sitk.sitkFloat32):
        return image
    array = sitk.GetArrayViewFromImage(image)
    integral = array.dtype.kind in "iu"
    if integral and array.size and array.min() >= -32768 and array.max() <= 32767:
        return sitk.Cast(image, sitk.sitkInt16)
    return sitk.Cast(image, sitk.sitkFloat32)


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _read_volume_file(path: Path) -> CTVolume:
    raw = check_raw_file(path)  # before the reader, which zero-fills truncated NIfTI and zeroes NaN
    image = _sitk_read(path)
    image, caution = apply_nifti_spacing(image, raw, path)
    caution = caution or spacing_caution(raw)
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise NotCTError(
            f"{path}: the image has {image.GetNumberOfComponentsPerPixel()} channels; CT has one"
        )
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
        dim = 3
    if dim not in (2, 3):
        raise NotVolumeError(f"{path}: a {dim}-D image; a 3-D CT volume is needed")
    _check_axis_aligned(image.GetDirection(), dim, path)
    image = _hu_pixel_type(image)
    ct = CTVolume(image=image, is_hu=True, path=path, notes=[caution] if caution else [])
    array = sitk.GetArrayViewFromImage(image)
    if array.size and (array.dtype.kind != "f" or np.isfinite(array).all()):
        check_hu_range(array, path)
    return ct


def _read_2d_image(path: Path) -> CTVolume:
    image = _sitk_read(path)
    components = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() != 2:
        raise NotVolumeError(f"{path}: expected a 2-D image, got {image.GetDimension()}-D")
    pixel = image.GetPixelIDValue()
    if pixel not in (sitk.sitkUInt8, sitk.sitkVectorUInt8):
        raise InputError(
            f"{path}: {image.GetPixelIDTypeAsString()} pixels; only 8-bit images that are already "
            "windowed are accepted (give HU volumes as DICOM, NIfTI, NRRD or MHA)"
        )
    if components in (3, 4):
        check_2d_colour(sitk.GetArrayViewFromImage(image), path)
        rgb = sitk.GetArrayViewFromImage(image)[..., :3].astype(np.float32)
        grey = np.rint(rgb @ np.asarray(_LUMA_601, dtype=np.float32)).clip(0, 255).astype(np.uint8)
        converted = sitk.GetImageFromArray(grey)
        converted.CopyInformation(image)
        image = converted
    elif components == 2:  # grey + alpha
        converted = sitk.VectorIndexSelectionCast(image, 0)
        converted.CopyInformation(image)
        image = converted
    elif components != 1:
        raise InputError(f"{path}: {components} channels per pixel; expected grey or RGB")
    return CTVolume(image=image, is_hu=False, path=path)


def _dicom_kind(path: Path) -> str | None:
    """``"part10"`` for files with the DICM preamble, ``"raw"`` for preamble-less data sets (they
    start with a group 0002 or 0008 tag), None for anything else."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return None
    if head[128:132] == b"DICM":
        return "part10"
    return "raw" if head[:2] in (b"\x02\x00", b"\x08\x00") and len(head) >= 8 else None


def _read_header(path: Path, *, required: bool) -> pydicom.Dataset | None:
    """The header of a DICOM image file (pixel data checked for truncation, then dropped).

    Returns None for files that are not DICOM and for DICOM objects that are not images (reports,
    presentation states, ...); ``required`` (a file named *.dcm or given on its own) turns the former
    into an error.
    """
    kind = _dicom_kind(path)
    if kind is None:
        if required:
            raise CorruptFileError(f"{path}: not a valid DICOM file (truncated or damaged)")
        return None
    try:
        ds = pydicom.dcmread(path, force=kind == "raw")
    except Exception as exc:  # pydicom raises many types on damaged headers
        if kind == "raw" and not required:
            return None
        raise CorruptFileError(f"{path}: damaged DICOM header ({_first_line(exc)})") from exc
    if kind == "raw" and "SOPClassUID" not in ds:
        if required:
            raise CorruptFileError(f"{path}: not a valid DICOM file (no SOP Class UID)")
        return None
    if "PixelData" not in ds:
        meta = getattr(ds, "file_meta", None)
        sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
        if sop_class is not None and "Image Storage" in getattr(sop_class, "name", ""):
            raise CorruptFileError(f"{path}: truncated DICOM file (image without pixel data)")
        return None
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta else None
    if syntax is not None and not syntax.is_compressed and "Rows" in ds:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1))
        expected = int(ds.Rows) * int(ds.Columns) * samples * int(ds.BitsAllocated) // 8 * frames
        if len(ds.PixelData) < expected:
            raise CorruptFileError(
                f"{path}: truncated DICOM file (pixel data has {len(ds.PixelData)} of {expected} bytes)"
            )
    del ds.PixelData
    return ds


def _read_dicom_file(path: Path) -> CTVolume:
    header = _read_header(path, required=True)
    if header is None:
        raise InputError(f"{path}: the DICOM file holds no image")
    modality = str(header.get("Modality", "")).upper()
    if modality != "CT":
        raise NotCTError(f"{path}: DICOM modality is {modality or 'missing'}, not CT")
    if int(header.get("NumberOfFrames", 1) or 1) > 1 and "PerFrameFunctionalGroupsSequence" in header:
        _check_frames(header, path)
    elif "ImageOrientationPatient" in header:
        _axial_normal(np.array([[float(v) for v in header.ImageOrientationPatient]]), path)
    image = _hu_pixel_type(_sitk_read(path))
    if image.GetDimension() == 3 and image.GetSize()[2] > 1:
        _check_axis_aligned(image.GetDirection(), 3, path)
    uid = str(header.get("SeriesInstanceUID", "")) or None
    return CTVolume(image=image, is_hu=True, path=path, dicom_files=[path], series_instance_uid=uid)


@dataclass
class _Slice:
    path: Path
    header: pydicom.Dataset


def _describe_series(uid: str, slices: list[_Slice]) -> str:
    first = slices[0].header
    modality = str(first.get("Modality", "?"))
    description = str(first.get("SeriesDescription", "")).strip()
    label = f" '{description}'" if description else ""
    return f"{uid} ({modality}{label}, {len(slices)} file{'s' if len(slices) != 1 else ''})"


def _read_dicom_dir(folder: Path) -> CTVolume:
    candidates = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.upper() != "DICOMDIR")
    series: dict[str, list[_Slice]] = defaultdict(list)
    for file in candidates:
        header = _read_header(file, required=file.name.lower().endswith(DICOM_SUFFIXES))
        if header is None:
            continue  # presentation states, reports and other non-image objects
        series[str(header.get("SeriesInstanceUID", "unknown"))].append(_Slice(file, header))
    if not series:
        raise InputError(f"{folder}: no DICOM image files found in the folder")
    ct_series = {
        uid: items
        for uid, items in series.items()
        if str(items[0].header.get("Modality", "")).upper() == "CT"
    }
    if not ct_series:
        found = ", ".join(_describe_series(uid, items) for uid, items in series.items())
        raise NotCTError(f"{folder}: no CT series in the folder (found {found})")
    uid = max(ct_series, key=lambda key: len(ct_series[key]))
    skipped = [_describe_series(key, items) for key, items in series.items() if key != uid]
    slices = [
        s
        for s in ct_series[uid]
        if "LOCALIZER" not in [str(v).upper() for v in s.header.get("ImageType", [])]
    ]
    if len(slices) < len(ct_series[uid]):
        skipped.append(f"{uid} ({len(ct_series[uid]) - len(slices)} localizer images)")
    if not slices:
        raise NotVolumeError(f"{folder}: the CT series {uid} holds only localizer (scout) images")
    if len(slices) == 1:  # a single slice or a multi-frame (enhanced) CT file
        single = _read_dicom_file(slices[0].path)
        return replace(single, path=folder, skipped_series=skipped)
    files = _sort_and_check_series(folder, slices)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in files])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise _bad_file_error(files, exc) from exc
    image = _hu_pixel_type(image)
    ct = CTVolume(image=image, is_hu=True, path=folder, series_instance_uid=uid, skipped_series=skipped)
    axial = ct.axial_image()
    order = [
        axial.TransformPhysicalPointToIndex(image.TransformIndexToPhysicalPoint((0, 0, k)))[2]
        for k in range(len(files))
    ]
    ct.dicom_files = [files[k] for k in np.argsort(order)]
    return ct


def _bad_file_error(files: list[Path], exc: RuntimeError) -> CorruptFileError:
    """The error naming the first file of a series that cannot be decoded on its own."""
    for file in files:
        try:
            sitk.ReadImage(str(file))
        except RuntimeError as inner:
            return CorruptFileError(f"{file}: cannot decode the pixel data ({_first_line(inner)})")
    return CorruptFileError(f"{files[0].parent}: cannot read the series ({_first_line(exc)})")


def _axial_normal(orientations: np.ndarray, source: Path) -> np.ndarray:
    """Slice normal of an axial stack from its (N, 6) ImageOrientationPatient values; refuses oblique,
    sagittal/coronal or mixed orientations."""
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise MixedSeriesError(f"{source}: slices with different ImageOrientationPatient in one series")
    row, col = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row, col)
    limit = math.cos(math.radians(MAX_OBLIQUE_DEG))
    if abs(normal[2]) < limit:
        if max(abs(normal[0]), abs(normal[1])) >= limit:
            plane = "sagittal" if abs(normal[0]) >= limit else "coronal"
            raise ObliqueSeriesError(f"{source}: a {plane} series; only axial series are accepted")
        raise ObliqueSeriesError(
            f"{source}: an oblique series (ImageOrientationPatient "
            f"{' '.join(f'{v:.3g}' for v in orientations[0])}); "
            "only axial series are accepted"
        )
    if max(abs(row[0]), abs(col[1])) < limit and max(abs(row[1]), abs(col[0])) < limit:
        raise ObliqueSeriesError(f"{source}: in-plane axes are rotated (not along patient x/y)")
    return normal


def _check_frames(header: pydicom.Dataset, source: Path) -> None:
    """Orientation and frame positions of a multi-frame (enhanced) CT, checked as a series is."""
    shared = header.get("SharedFunctionalGroupsSequence", [pydicom.Dataset()])[0]
    orientations, positions = [], []
    for frame in header.PerFrameFunctionalGroupsSequence:
        plane = frame.get("PlaneOrientationSequence") or shared.get("PlaneOrientationSequence")
        position = frame.get("PlanePositionSequence") or shared.get("PlanePositionSequence")
        if not plane or not position:
            raise CorruptFileError(f"{source}: frame orientation or position missing in the multi-frame CT")
        orientations.append([float(v) for v in plane[0].ImageOrientationPatient])
        positions.append([float(v) for v in position[0].ImagePositionPatient])
    normal = _axial_normal(np.array(orientations), source)
    positions_array = np.array(positions)
    order = np.argsort(positions_array @ normal, kind="stable")
    measures = shared.get("PixelMeasuresSequence") or [pydicom.Dataset()]
    pixel = min(float(v) for v in measures[0].get("PixelSpacing", [1.0, 1.0]))
    _check_stack(
        source, positions_array[order], normal, pixel, lambda k: f"frames {order[k] + 1}, {order[k + 1] + 1}"
    )


def _check_stack(
    source: Path, positions: np.ndarray, normal: np.ndarray, pixel: float, pair: Callable[[int], str]
) -> None:
    """Refuse a sorted stack of slice positions with duplicates, in-plane drift (gantry tilt), gaps
    or uneven spacing. ``pair(k)`` names slices k and k + 1 in messages."""
    distance = positions @ normal
    gaps = np.diff(distance)
    if (gaps < 1e-3).any():
        k = int(np.argmax(gaps < 1e-3))
        raise MixedSeriesError(
            f"{source}: two slices at the same position {distance[k]:.2f} mm ({pair(k)}); "
            "several acquisitions mixed?"
        )
    in_plane = np.linalg.norm((positions - positions[0]) - np.outer(distance - distance[0], normal), axis=1)
    if in_plane.max() > pixel / 2:
        raise ObliqueSeriesError(
            f"{source}: slice positions drift {in_plane.max():.1f} mm in-plane along the stack (gantry "
            "tilt or sheared series); only stacks perpendicular to the slices are accepted"
        )
    step = float(np.median(gaps[gaps <= 1.5 * gaps.min()]))  # the regular gap, robust to a few gaps
    bad = np.abs(gaps - step) > max(SPACING_REL_TOL * step, 0.01)
    if bad.any():
        k = int(np.argmax(bad))
        ratio = gaps[k] / step
        if abs(ratio - round(ratio)) < SPACING_REL_TOL and round(ratio) >= 2:
            raise SliceSpacingError(
                f"{source}: {round(ratio) - 1} slice(s) missing between positions {distance[k]:.2f} "
                f"and {distance[k + 1]:.2f} mm (spacing {step:.2f} mm)"
            )
        raise SliceSpacingError(
            f"{source}: non-uniform slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm between "
            f"positions along the slice normal)"
        )


def _sort_and_check_series(folder: Path, slices: list[_Slice]) -> list[Path]:
    headers = [s.header for s in slices]
    for key in ("ImageOrientationPatient", "ImagePositionPatient", "Rows", "Columns"):
        missing = [s.path.name for s in slices if key not in s.header]
        if missing:
            raise CorruptFileError(f"{folder}: {key} missing in {', '.join(missing[:3])}")
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(sizes) > 1:
        raise MixedSeriesError(f"{folder}: slices of different sizes in one series: {sorted(sizes)}")
    _check_pixel_spacing(folder, slices)
    orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    normal = _axial_normal(orientations, folder)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    order = np.argsort(positions @ normal, kind="stable")
    pixel = min(float(v) for v in headers[0].get("PixelSpacing", [1.0, 1.0]))
    names = [slices[i].path.name for i in order]
    _check_stack(folder, positions[order], normal, pixel, lambda k: f"{names[k]}, {names[k + 1]}")
    return [slices[i].path for i in order]


def _check_pixel_spacing(folder: Path, slices: list[_Slice]) -> None:
    """Refuse a series whose slices state different PixelSpacing (the reader would resample them)."""
    spacings: dict[tuple[float, ...] | None, list[str]] = defaultdict(list)
    for s in slices:
        value = s.header.get("PixelSpacing")
        key = None if value is None else tuple(round(float(v), 4) for v in value)
        spacings[key].append(s.path.name)
    if set(spacings) == {None}:
        raise CorruptFileError(f"{folder}: PixelSpacing missing in every slice; the pixel size is unknown")
    if len(spacings) > 1:
        usual = max(spacings, key=lambda key: len(spacings[key]))
        odd = next(key for key in spacings if key != usual)
        word = "no PixelSpacing" if odd is None else f"PixelSpacing {_mm_pair(odd)} mm"
        raise MixedSeriesError(
            f"{folder}: slices with different pixel spacing in one series: {spacings[odd][0]} has {word}, "
            f"{len(spacings[usual])} other slices {'none' if usual is None else _mm_pair(usual) + ' mm'}"
        )


def _mm_pair(values: tuple[float, ...]) -> str:
    return " x ".join(f"{v:g}" for v in values)
