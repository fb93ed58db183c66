"""Input validation shared by every interface (CLI, Slicer module, viewer), run before the models load.

Two kinds of outcome (the rules are listed in ``docs/input-validation.md``):

- **refused**: an :mod:`jcs.errors` exception naming the file and the problem. The data cannot be
  trusted (a truncated file, NaN/inf stored in the voxels, contradictory voxel sizes in the header,
  slices of different pixel spacing) or the image cannot be a chest CT (a few pixels, a field of view
  of a few centimetres, a colour photograph).
- **read with a caution**: the reading goes on and a sentence is added to ``CTVolume.notes``; the
  engine copies it into ``results.json["notes"]``, which the CLI prints and the Slicer module and the
  viewer show. Used where the data are sound but the reading is less reliable than on a whole-chest CT
  (small field of view, few or thick slices, a small 2-D image).

Raw-file checks (:func:`check_raw_file`) look at the bytes as stored, because the image reader hides
some faults: ITK's NIfTI reader zero-fills a truncated file and turns stored NaN into 0. Geometry and
content checks (:func:`check_geometry`, :func:`check_2d_image`) look at the image as read.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from jcs.errors import CorruptFileError, EmptyImageError, InputError, NotCTError

MIN_MATRIX_PX = 32
"""Fewest pixels along a side of a slice (volume or 2-D image) that are read at all."""
SMALL_MATRIX_PX = 128
"""Fewer pixels along a side than this: read with a caution (the models take 224 and 512 px slices)."""
MAX_MATRIX_PX = 4096
"""More pixels along a side of a slice than this: refused as implausible for CT."""
MAX_SLICES = 4000
"""More slices than this: refused as implausible for one CT series."""
MIN_FOV_MM = 50.0
"""Smallest in-plane field of view (mm) read at all: a chest is 250-450 mm wide."""
SMALL_FOV_MM = 200.0
"""In-plane field of view (mm) below which the reading carries a caution (not the whole chest)."""
LARGE_FOV_MM = 700.0
"""In-plane field of view (mm) above which the reading carries a caution (spacing in the header wrong?)."""
MAX_FOV_MM = 1500.0
"""In-plane field of view (mm) above which the image is refused: no body is that wide."""
MIN_COVERAGE_MM = 100.0
"""Cranio-caudal coverage (mm) below which a volume's reading carries a caution (lungs are ~250 mm)."""
THICK_SLICE_MM = 10.0
"""Slice spacing (mm) above which a volume's reading carries a caution."""
COLOUR_CHROMA = 24
"""A pixel is coloured when its channels differ by more than this (8-bit levels)."""
MAX_COLOUR_FRACTION = 0.02
"""A 2-D image with more coloured pixels than this fraction is not a CT slice (CT is grey)."""
SPACING_REL_TOL = 0.01
"""Relative difference between NIfTI pixdim and the sform's voxel size still taken as equal."""

_NIFTI_DTYPES = {
    2: "u1",
    4: "i2",
    8: "i4",
    16: "f4",
    64: "f8",
    256: "i1",
    512: "u2",
    768: "u4",
    1024: "i8",
    1280: "u8",
}
_CHUNK = 1 << 24


# ----------------------------------------------------------------------------------------------
# raw files


@dataclass(frozen=True)
class RawFileInfo:
    """What the raw-file checks found that later steps need.

    ``spacing_stated``: False for a NRRD/MetaImage header without a voxel size (ITK reads 1 mm).
    NIfTI: ``sform_spacing`` the sform's voxel size (x, y, z) or None, ``pixdim_ok`` whether pixdim
    is a valid voxel size, ``pixdim`` its values.
    """

    spacing_stated: bool = True
    sform_spacing: tuple[float, ...] | None = None
    pixdim_ok: bool = True
    pixdim: tuple[float, ...] = ()


@dataclass(frozen=True)
class _NiftiHeader:
    """The NIfTI-1 header fields the checks read."""

    endian: str  # "<" or ">"
    shape: tuple[int, ...]
    datatype: int
    bitpix: int
    pixdim: tuple[float, ...]
    vox_offset: float
    scl_slope: float
    sform_code: int
    srow: np.ndarray  # (3, 4)


def check_raw_file(path: Path) -> RawFileInfo:
    """Integrity of a NIfTI-1 or MetaImage file as stored; refuses truncation and stored NaN/inf.

    Returns what later checks need (NIfTI: the sform's and pixdim's voxel sizes; NRRD and MetaImage:
    whether the header states a voxel size, as ITK reads a header without one as 1 mm). ITK's NRRD
    reader refuses truncation itself and NaN in NRRD/MHA survives reading, where
    :func:`jcs.io.read_ct` refuses it.
    """
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return _check_nifti(path)
    if name.endswith(".mha"):
        _check_metaimage(path)
    if name.endswith((".nrrd", ".nhdr")):
        fields = _text_header(path, separator=":", stop=b"")
        stated = any(key in fields for key in ("space directions", "spacings"))
        return RawFileInfo(spacing_stated=stated)
    if name.endswith((".mha", ".mhd")):
        fields = _text_header(path, separator="=", stop=b"ElementDataFile")
        return RawFileInfo(spacing_stated="ElementSpacing" in fields or "ElementSize" in fields)
    return RawFileInfo()


def _text_header(path: Path, *, separator: str, stop: bytes) -> dict[str, str]:
    """``key -> value`` of a text header (NRRD up to its blank line, MetaImage up to ElementDataFile)."""
    fields: dict[str, str] = {}
    with open(path, "rb") as handle:
        for _ in range(256):
            line = handle.readline(8192)
            if not line or (stop == b"" and not line.strip()):
                break
            key, sep, value = line.decode("latin-1").partition(separator)
            if sep:
                fields[key.strip()] = value.strip()
            if stop and line.startswith(stop):
                break
    return fields


def spacing_caution(info: RawFileInfo) -> str | None:
    """The caution for a NRRD/MetaImage header that states no voxel size (read as 1 mm), else None."""
    if info.spacing_stated:
        return None
    return "the file states no voxel size, so 1 mm was assumed: volumes, areas and distances may be wrong"


def _nifti_header(raw: bytes, path: Path) -> _NiftiHeader | None:
    """Fields of a NIfTI-1 header (None for NIfTI-2 or anything else, left to the reader)."""
    if len(raw) < 348:
        raise CorruptFileError(f"{path}: truncated NIfTI file (header of {len(raw)} of 348 bytes)")
    for endian in "<>":
        if struct.unpack_from(f"{endian}i", raw, 0)[0] == 348:
            break
    else:
        return None
    dims = struct.unpack_from(f"{endian}8h", raw, 40)
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise CorruptFileError(f"{path}: damaged NIfTI header (dim[0] = {ndim})")
    srow = np.array(struct.unpack_from(f"{endian}12f", raw, 280), dtype=float).reshape(3, 4)
    return _NiftiHeader(
        endian=endian,
        shape=tuple(int(d) for d in dims[1 : ndim + 1]),
        datatype=struct.unpack_from(f"{endian}h", raw, 70)[0],
        bitpix=struct.unpack_from(f"{endian}h", raw, 72)[0],
        pixdim=struct.unpack_from(f"{endian}3f", raw, 80),
        vox_offset=struct.unpack_from(f"{endian}f", raw, 108)[0],
        scl_slope=struct.unpack_from(f"{endian}f", raw, 112)[0],
        sform_code=struct.unpack_from(f"{endian}h", raw, 254)[0],
        srow=srow,
    )


def _nifti_chunks(path: Path, offset: int) -> Iterator[bytes]:
    """The bytes after ``offset`` of a (possibly gzip-compressed) NIfTI file, in chunks."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            handle.read(offset)
            while chunk := handle.read(_CHUNK):
                yield chunk
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise CorruptFileError(f"{path}: truncated or damaged compressed file ({exc})") from exc


def _check_nifti(path: Path) -> RawFileInfo:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            head = handle.read(352)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError):
        return RawFileInfo()  # not readable as NIfTI at all: the reader's own error names it
    header = _nifti_header(head, path)
    if header is None:
        return RawFileInfo()
    expected = math.prod(header.shape) * header.bitpix // 8
    offset = max(int(header.vox_offset), 348)
    dtype = _NIFTI_DTYPES.get(header.datatype)
    is_float = dtype is not None and dtype.startswith("f")
    scl = header.scl_slope
    if not math.isfinite(scl):
        raise EmptyImageError(f"{path}: the NIfTI scaling slope scl_slope is {scl}")
    found, bad = 0, 0
    item = np.dtype(dtype).itemsize if is_float else 1
    for chunk in _nifti_chunks(path, offset):  # whole chunks (a multiple of 8 bytes) until the end
        if is_float and found < expected:
            data = chunk[: expected - found]
            values = np.frombuffer(
                data[: len(data) - len(data) % item],
                dtype=np.dtype(dtype).newbyteorder("<" if header.endian == "<" else ">"),
            )
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
        found += len(chunk)
    if found < expected:
        raise CorruptFileError(
            f"{path}: truncated NIfTI file (voxel data has {found} of the {expected} bytes its header "
            f"describes, {100 * found / max(expected, 1):.0f} %)"
        )
    if bad:
        raise EmptyImageError(f"{path}: the image stores {bad} NaN or infinite voxel values")
    return _nifti_spacing(header, path)


def _nifti_spacing(header: _NiftiHeader, path: Path) -> RawFileInfo:
    """Compare pixdim with the sform's voxel size; refuse two valid but different sizes."""
    n = min(3, len(header.shape))
    pixdim = [float(v) for v in header.pixdim][:n]
    pixdim_ok = all(math.isfinite(v) and v > 0 for v in pixdim)
    sform = None
    if header.sform_code > 0:
        norms = np.linalg.norm(header.srow[:, :3], axis=0)[:n]
        if np.isfinite(norms).all() and (norms > 0).all():
            sform = tuple(float(v) for v in norms)
    if sform is None and not pixdim_ok:
        raise InputError(
            f"{path}: the voxel size is unknown (pixdim {_mm(pixdim)} and no valid sform); fix the header"
        )
    if sform is not None and pixdim_ok:
        if any(abs(p - s) > SPACING_REL_TOL * s for p, s in zip(pixdim, sform, strict=True)):
            raise InputError(
                f"{path}: the NIfTI header contradicts itself: pixdim gives voxels of {_mm(pixdim)} mm "
                f"but the sform {_mm(sform)} mm; fix the header (volumes and distances depend on it)"
            )
    return RawFileInfo(sform_spacing=sform, pixdim_ok=pixdim_ok, pixdim=tuple(pixdim))


def _mm(values: Sequence[float]) -> str:
    return " x ".join(f"{float(v):g}" for v in values)


def apply_nifti_spacing(image: sitk.Image, info: RawFileInfo, path: Path) -> tuple[sitk.Image, str | None]:
    """The image with the sform's voxel size where ITK took an invalid pixdim (it reads 0 as 1 mm),
    checked against the sform's mapping; returns (image, caution or None)."""
    sform = info.sform_spacing
    if info.pixdim_ok or sform is None:
        return image, None
    spacing = sform + tuple(image.GetSpacing()[len(sform) :])
    image.SetSpacing(spacing[: image.GetDimension()])
    return image, (
        f"the NIfTI pixdim gives voxels of {_mm(info.pixdim)} mm (invalid); the voxel size "
        f"{_mm(sform)} mm of its sform was used"
    )


def _check_metaimage(path: Path) -> None:
    """Refuse a MetaImage (.mha) whose uncompressed local voxel data are shorter than its header says."""
    types = {
        "MET_UCHAR": 1,
        "MET_CHAR": 1,
        "MET_USHORT": 2,
        "MET_SHORT": 2,
        "MET_UINT": 4,
        "MET_INT": 4,
        "MET_FLOAT": 4,
        "MET_DOUBLE": 8,
        "MET_LONG": 8,
        "MET_ULONG": 8,
    }
    fields: dict[str, str] = {}
    size = path.stat().st_size
    with open(path, "rb") as handle:
        for _ in range(64):
            line = handle.readline(4096)
            if not line or b"=" not in line:
                return
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
        header_bytes = handle.tell()
    if fields.get("ElementDataFile") != "LOCAL" or fields.get("CompressedData", "False").lower() == "true":
        return
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
        item = types[fields["ElementType"]] * int(fields.get("ElementNumberOfChannels", "1"))
    except (KeyError, ValueError):
        return
    expected = math.prod(dims) * item
    if size - header_bytes < expected:
        raise CorruptFileError(
            f"{path}: truncated MetaImage file (voxel data has {size - header_bytes} of the {expected} "
            "bytes its header describes)"
        )


# ----------------------------------------------------------------------------------------------
# geometry and content


def check_geometry(image: sitk.Image, path: Path, *, is_hu: bool) -> list[str]:
    """Refuse implausible sizes and fields of view; return cautions for a less reliable reading.

    ``image`` is the CT as read (2-D or 3-D). Spacing-based rules apply to HU images only (8-bit
    PNG/JPG slices have no known pixel size).
    """
    size = image.GetSize()
    spacing = image.GetSpacing()
    axial = sitk.DICOMOrient(image if image.GetDimension() == 3 else sitk.JoinSeries(image), "LPS")
    nx, ny, nz = axial.GetSize()
    sx, sy, sz = axial.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{path}: invalid voxel size {_mm(spacing)} mm")
    if min(nx, ny) < MIN_MATRIX_PX:
        raise NotCTError(
            f"{path}: slices of {nx} x {ny} pixels are too small to be CT (at least {MIN_MATRIX_PX} per "
            "side; chest CT has 512 x 512)"
        )
    if max(nx, ny) > MAX_MATRIX_PX or nz > MAX_SLICES:
        raise NotCTError(f"{path}: implausible size for one CT ({' x '.join(map(str, size))} voxels)")
    notes = []
    if min(nx, ny) < SMALL_MATRIX_PX:
        notes.append(
            f"small slices ({nx} x {ny} pixels; chest CT has 512 x 512): the models see them enlarged, "
            "the reading is less reliable"
        )
    if not is_hu:
        return notes
    fov = (nx * sx, ny * sy)
    if min(fov) < MIN_FOV_MM:
        raise NotCTError(
            f"{path}: a field of view of {fov[0]:.0f} x {fov[1]:.0f} mm cannot hold a chest (at least "
            f"{MIN_FOV_MM:g} mm; chest CT is 300-500 mm); is the pixel spacing ({sx:g} x {sy:g} mm) right?"
        )
    if max(fov) > MAX_FOV_MM:
        raise NotCTError(
            f"{path}: a field of view of {fov[0]:.0f} x {fov[1]:.0f} mm is wider than any body (at most "
            f"{MAX_FOV_MM:g} mm); is the pixel spacing ({sx:g} x {sy:g} mm) right?"
        )
    if min(fov) < SMALL_FOV_MM or max(fov) > LARGE_FOV_MM:
        notes.append(
            f"field of view {fov[0]:.0f} x {fov[1]:.0f} mm (a chest CT is 300-500 mm): not a whole-chest "
            "slice or a wrong pixel spacing; the reading is less reliable"
        )
    if nz > 1:
        coverage = nz * sz
        if coverage < MIN_COVERAGE_MM:
            notes.append(
                f"the volume covers {coverage:.0f} mm cranio-caudally ({nz} slices; lungs span about "
                "250 mm): the positive-slice count and its threshold assume the whole chest"
            )
        if sz > THICK_SLICE_MM:
            notes.append(f"slice spacing {sz:g} mm (thick slices): small lesions may be missed")
    return notes


def check_2d_colour(rgb: np.ndarray, path: Path) -> None:
    """Refuse a colour picture given as a 2-D slice: a CT slice saved as RGB has equal channels."""
    channels = rgb[..., :3].astype(np.int16)
    chroma = channels.max(axis=-1) - channels.min(axis=-1)
    coloured = float(np.count_nonzero(chroma > COLOUR_CHROMA)) / max(chroma.size, 1)
    if coloured > MAX_COLOUR_FRACTION:
        raise NotCTError(
            f"{path}: a colour image ({100 * coloured:.0f} % of its pixels are coloured); a CT slice is grey "
            "(give the slice without overlays, or the CT itself)"
        )
