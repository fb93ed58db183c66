"""Lesion quantification: the case summary, lesion and slice tables a radiologist reads.

Inputs are arrays on the axial grid (axes Z, Y, X; DICOM LPS: +x patient left, +y posterior, +z
superior) with the geometry of `reference` (the CT's `axial_image()`). Patient coordinates are **LPS**
millimetres, as DICOM and ITK use. Every field name carries its unit (`_ml`, `_mm`, `_mm2`, `_hu`,
`_percent`, `_px`) or is a `_fraction` (0-1), a count, a score, a label or a flag. A field that cannot be
measured is None (null in JSON, empty in CSV), never 0:

- HU fields when the input is 8-bit without HU (`hu=None`);
- volumes (and zones, zone scores) for a single slice, which has no cranio-caudal extent;
- millimetre fields when the pixel spacing is unknown (8-bit PNG/JPG); `_px` fields are always given;
- lobe fields when no lobe labelmap is given; the classifier probability / Grad-CAM peak when absent.

Definitions (the paper's JCS reports lesion count, area and location; the severity scores follow
radiology practice):

- lesion: 3-D connected component of the lesion mask, 26-connectivity, at least `min_lesion_voxels`;
- lung side, zone and lobe of a lesion: the label holding most of its voxels ("outside" if none);
- zones (`jcs.lung.lung_zones`): upper/middle/lower thirds of each lung's cranio-caudal extent;
- 6-zone severity score: each zone 0 (0 %), 1 (< 25 %), 2 (25-50 %), 3 (50-75 %), 4 (> 75 %), sum 0-24;
- 5-lobe CT severity score: each lobe 0 (0 %), 1 (< 5 %), 2 (5-25 %), 3 (25-50 %), 4 (50-75 %),
  5 (> 75 %), sum 0-25 (upper bounds inclusive: 25 % scores 2);
- peripheral: within `peripheral_mm` (default 10 mm) of the lung surface, measured as the Euclidean
  distance from a voxel centre to the nearest voxel centre outside the lungs (image borders do not
  count as surface); a lesion is peripheral when most of its volume is;
- HU composition: ground glass -750 <= HU < -300, consolidation -300 <= HU <= 100 (`GGO_HU`,
  `CONSOLIDATION_HU`); fractions of lesion volume, the rest (< -750 or > 100 HU) is neither;
- opacified lung fraction of a slice: its lesion pixels inside the lungs over its lung pixels (0 without
  lung), the evidence of the segmenter decision rule (`jcs.decision`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from jcs.decision import slice_lung_fraction
from jcs.errors import CorruptFileError, InputError
from jcs.io import read_ct
from jcs.lung import (
    LABEL_CONVENTIONS,
    LEFT_LUNG,
    LOBE_NAMES,
    LUNG_NAMES,
    RIGHT_LUNG,
    ZONE_NAMES,
    _convention_from_segment_names,
    lobes_to_lungs,
    lung_zones,
    read_lung_labelmap,
    segment_lungs,
)
from jcs.outputs import FolderLock, check_out_dir, staged_folder, write_records_csv, write_summary_csv

GGO_HU = (-750.0, -300.0)            # [low, high)
CONSOLIDATION_HU = (-300.0, 100.0)   # [low, high]
PERIPHERAL_MM = 10.0
LESION_CONNECTIVITY = 26

LESION_FIELDS = (
    "lesion_id", "volume_ml", "voxel_count", "largest_axial_area_mm2", "largest_axial_area_px",
    "bbox_size_x_mm", "bbox_size_y_mm", "bbox_size_z_mm", "centroid_lps_x_mm", "centroid_lps_y_mm",
    "centroid_lps_z_mm", "lung_side", "zone", "lobe", "peripheral_fraction", "location", "mean_hu",
    "median_hu", "ground_glass_fraction", "consolidation_fraction", "first_slice", "last_slice",
    "peak_gradcam",
)
SLICE_FIELDS = ("slice_index", "position_z_mm", "classifier_probability", "opacification_area_mm2",
                "lung_area_mm2", "opacification_area_px", "lung_area_px", "opacified_lung_fraction")


def _key(name: str) -> str:
    return name.replace(" ", "_")


ZONE_KEYS = {label: _key(name) for label, name in ZONE_NAMES.items()}
LOBE_KEYS = {label: _key(name) + "_lobe" for label, name in LOBE_NAMES.items()}


@dataclass
class Quantification:
    """Case summary (one dict), lesion rows and slice rows; see the module docstring for fields."""

    summary: dict[str, Any]
    lesions: list[dict[str, Any]] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with keys summary, lesions, slices (numpy scalars converted)."""
        return {"summary": _plain(self.summary), "lesions": [_plain(r) for r in self.lesions],
                "slices": [_plain(r) for r in self.slices]}


def zone_score(percent: float | None) -> int | None:
    """6-zone severity of one zone: 0 (0 %), 1 (< 25), 2 (25-50), 3 (50-75), 4 (> 75); bounds inclusive."""
    if percent is None:
        return None
    if percent <= 0:
        return 0
    if percent < 25.0:
        return 1
    return 2 + sum(percent > bound for bound in (50.0, 75.0))


def lobe_score(percent: float | None) -> int | None:
    """5-lobe CT severity of one lobe: 0 (0 %), 1 (< 5), 2 (5-25), 3 (25-50), 4 (50-75), 5 (> 75)."""
    if percent is None:
        return None
    if percent <= 0:
        return 0
    if percent < 5.0:
        return 1
    return 2 + sum(percent > bound for bound in (25.0, 50.0, 75.0))


class _Geometry:
    """Unit conversions of the axial grid."""

    def __init__(self, reference: sitk.Image, shape: tuple[int, int, int], spacing_known: bool) -> None:
        ref = reference if reference.GetDimension() == 3 else sitk.JoinSeries(reference)
        expected = tuple(reversed(ref.GetSize()))
        if expected != shape:
            raise InputError(f"quantify: arrays of shape {shape} do not match the reference grid {expected}")
        self.ref = ref
        sx, sy, sz = ref.GetSpacing()
        self.spacing_zyx = (sz, sy, sx)
        self.spacing_known = spacing_known
        self.volumetric = shape[0] > 1
        self.pixel_mm2 = sx * sy
        self.voxel_ml = sx * sy * sz / 1000.0

    def ml(self, count: float) -> float | None:
        return float(count) * self.voxel_ml if self.volumetric and self.spacing_known else None

    def mm2(self, count: float) -> float | None:
        return float(count) * self.pixel_mm2 if self.spacing_known else None

    def mm(self, value: float) -> float | None:
        return float(value) if self.spacing_known else None

    def lps(self, index_zyx: tuple[float, float, float]) -> tuple[float, float, float] | None:
        if not self.spacing_known:
            return None
        z, y, x = (float(v) for v in index_zyx)
        return self.ref.TransformContinuousIndexToPhysicalPoint((x, y, z))


def _percent(part: float, whole: float) -> float | None:
    return 100.0 * part / whole if whole > 0 else None


def quantify(
    lesion_mask: np.ndarray,
    lungs: np.ndarray,
    reference: sitk.Image,
    *,
    hu: np.ndarray | None = None,
    slice_probabilities: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
    lobes: np.ndarray | None = None,
    spacing_known: bool = True,
    min_lesion_voxels: int = 1,
    peripheral_mm: float = PERIPHERAL_MM,
) -> Quantification:
    """Quantify a lesion mask within lungs (1 right, 2 left) on the axial grid of `reference`.

    `hu` (float HU, same grid) enables the HU fields; `slice_probabilities` (Z,) fills the slice
    table's classifier probability; `heatmap` (Z, Y, X, Grad-CAM in [0, 1]) the lesions' peak value;
    `lobes` (1-5, `jcs.lung.LOBE_NAMES`) the lobe fields. `spacing_known=False` (8-bit PNG/JPG) turns
    millimetre fields into None.
    """
    lesion = np.asarray(lesion_mask)
    lungs = np.asarray(lungs)
    if lesion.ndim == 2:
        lesion, lungs = lesion[None], lungs[None] if lungs.ndim == 2 else lungs
    if lesion.ndim != 3 or lesion.shape != lungs.shape:
        raise InputError(f"quantify: lesion mask {lesion.shape} and lungs {lungs.shape} must have the "
                         "same (Z, Y, X) shape")
    shape = lesion.shape
    geo = _Geometry(reference, shape, spacing_known)
    lesion = lesion > 0
    if lungs.dtype.kind not in "biu" or (lungs.size and (lungs.min() < 0 or lungs.max() > LEFT_LUNG)):
        raise InputError("quantify: lungs must be labelled 0 outside, 1 right, 2 left")
    extras = {"hu": hu, "heatmap": heatmap, "lobes": lobes}
    for name, arr in extras.items():
        if arr is not None and np.shape(arr) not in (shape, shape[1:] if shape[0] == 1 else shape):
            raise InputError(f"quantify: {name} of shape {np.shape(arr)} does not match {shape}")
    hu = None if hu is None else np.asarray(hu, dtype=np.float32).reshape(shape)
    heatmap = None if heatmap is None else np.asarray(heatmap, dtype=np.float32).reshape(shape)
    lungs = lungs.astype(np.uint8)
    lobes = None if lobes is None else np.asarray(lobes).reshape(shape).astype(np.uint8)
    if slice_probabilities is not None and len(slice_probabilities) != shape[0]:
        raise InputError(f"quantify: {len(slice_probabilities)} slice probabilities for {shape[0]} slices")

    zones = lung_zones(lungs) if geo.volumetric else None
    peripheral = _peripheral(lesion, lungs > 0, geo.spacing_zyx, peripheral_mm) if geo.spacing_known else None

    rows: list[dict[str, Any]] = []
    bbox = ndi.find_objects(lesion.astype(np.uint8))   # labelling only the lesions' bounding box
    crop = bbox[0] if bbox else (slice(0, 1),) * 3
    components, _ = ndi.label(lesion[crop], structure=np.ones((3, 3, 3), dtype=bool))
    for index, local in enumerate(ndi.find_objects(components), start=1):
        comp = components[local] == index
        box = tuple(slice(c.start + s.start, c.start + s.stop) for c, s in zip(crop, local, strict=True))
        if comp.sum() < min_lesion_voxels:
            continue
        rows.append(_lesion_row(len(rows) + 1, box, comp, geo, lungs, zones, lobes, hu, heatmap, peripheral))

    summary = _summary(lesion, lungs, zones, lobes, hu, peripheral, geo, len(rows), min_lesion_voxels,
                       peripheral_mm)
    slices = _slice_rows(lesion, lungs, slice_probabilities, geo)
    return Quantification(summary=summary, lesions=rows, slices=slices)


def _peripheral(lesion: np.ndarray, lung: np.ndarray, spacing_zyx: tuple[float, float, float],
                distance_mm: float, chunk: int = 16) -> np.ndarray:
    """Lesion voxels within `distance_mm` of the lung surface (Euclidean distance transform).

    Computed in blocks of `chunk` slices cropped to the lesions plus a margin beyond `distance_mm`, so
    memory stays bounded on 512x512x300 volumes; a voxel whose nearest surface lies outside its block
    is farther than the margin and therefore not peripheral, as in the full transform.
    """
    out = np.zeros_like(lesion)
    if not lesion.any():
        return out
    margin = [int(math.ceil(distance_mm / s)) + 1 for s in spacing_zyx]
    zs_lesion = np.flatnonzero(lesion.any(axis=(1, 2)))
    for z0 in range(zs_lesion[0], zs_lesion[-1] + 1, chunk):
        z1 = min(lesion.shape[0], z0 + chunk)
        part = lesion[z0:z1]
        if not part.any():
            continue
        ys, xs = (np.flatnonzero(part.any(axis=a)) for a in ((0, 2), (0, 1)))
        y0, y1 = max(0, ys[0] - margin[1]), min(lesion.shape[1], ys[-1] + margin[1] + 1)
        x0, x1 = max(0, xs[0] - margin[2]), min(lesion.shape[2], xs[-1] + margin[2] + 1)
        zs, ze = max(0, z0 - margin[0]), min(lesion.shape[0], z1 + margin[0])
        block = lung[zs:ze, y0:y1, x0:x1]
        if block.all():   # no surface within reach: nothing here is peripheral
            continue
        dist = ndi.distance_transform_edt(block, sampling=spacing_zyx)
        core = dist[z0 - zs : z1 - zs] <= distance_mm
        out[z0:z1, y0:y1, x0:x1] = lesion[z0:z1, y0:y1, x0:x1] & core
    return out


def _hu_fields(values: np.ndarray | None) -> dict[str, float | None]:
    """Mean/median HU and ground-glass/consolidation fractions of lesion voxel values."""
    if values is None or values.size == 0:
        return dict.fromkeys(("mean_hu", "median_hu", "ground_glass_fraction", "consolidation_fraction"))
    ggo = np.count_nonzero((values >= GGO_HU[0]) & (values < GGO_HU[1]))
    cons = np.count_nonzero((values >= CONSOLIDATION_HU[0]) & (values <= CONSOLIDATION_HU[1]))
    return {"mean_hu": float(values.mean()), "median_hu": float(np.median(values)),
            "ground_glass_fraction": ggo / values.size, "consolidation_fraction": cons / values.size}


def _majority(labels: np.ndarray, names: dict[int, str], outside: str | None) -> str | None:
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=max(names) + 1)
    counts[0] = 0
    if counts.sum() == 0:
        return outside
    return names[int(np.argmax(counts))]


def _lesion_row(lesion_id: int, box: tuple[slice, ...], comp: np.ndarray, geo: _Geometry, lungs: np.ndarray,
                zones: np.ndarray | None, lobes: np.ndarray | None, hu: np.ndarray | None,
                heatmap: np.ndarray | None, peripheral: np.ndarray | None) -> dict[str, Any]:
    count = int(comp.sum())
    offset = np.array([s.start for s in box], dtype=float)
    centroid = np.array(ndi.center_of_mass(comp)) + offset
    extent = [s.stop - s.start for s in box]
    sz, sy, sx = geo.spacing_zyx
    areas = comp.reshape(comp.shape[0], -1).sum(axis=1)
    lps = geo.lps(tuple(centroid))
    periph_fraction = None if peripheral is None else float(peripheral[box][comp].sum()) / count
    row: dict[str, Any] = {
        "lesion_id": lesion_id,
        "volume_ml": geo.ml(count),
        "voxel_count": count,
        "largest_axial_area_mm2": geo.mm2(areas.max()),
        "largest_axial_area_px": int(areas.max()),
        "bbox_size_x_mm": geo.mm(extent[2] * sx),
        "bbox_size_y_mm": geo.mm(extent[1] * sy),
        "bbox_size_z_mm": geo.mm(extent[0] * sz) if geo.volumetric else None,
        "centroid_lps_x_mm": None if lps is None else lps[0],
        "centroid_lps_y_mm": None if lps is None else lps[1],
        "centroid_lps_z_mm": None if lps is None else lps[2],
        "lung_side": _majority(lungs[box][comp], LUNG_NAMES, "outside"),
        "zone": None if zones is None else _majority(zones[box][comp], ZONE_NAMES, "outside"),
        "lobe": None if lobes is None else _majority(lobes[box][comp], LOBE_NAMES, "outside"),
        "peripheral_fraction": periph_fraction,
        "location": (None if periph_fraction is None
                     else "peripheral" if periph_fraction > 0.5 else "central"),
    }
    for name, value in _hu_fields(None if hu is None else hu[box][comp]).items():
        row[name] = value
    row["first_slice"] = int(box[0].start)
    row["last_slice"] = int(box[0].stop - 1)
    row["peak_gradcam"] = None if heatmap is None else float(heatmap[box][comp].max())
    return row


def _region_summary(s: dict[str, Any], regions: np.ndarray | None, lesion: np.ndarray, keys: dict[int, str],
                    score: Callable[[float | None], int | None], total_key: str, geo: _Geometry) -> None:
    """Per-region (zone or lobe) lung volume, opacification and severity score, and their total score.

    Every field is None when the regions are unknown; the total is None unless every region scored.
    """
    if regions is not None:
        lung_n = np.bincount(regions.ravel(), minlength=len(keys) + 1)
        lesion_n = np.bincount(regions[lesion], minlength=len(keys) + 1)
    scores = []
    for label, key in keys.items():
        pct = None if regions is None else _percent(lesion_n[label], lung_n[label])
        s[f"lung_volume_ml_{key}"] = None if regions is None else geo.ml(lung_n[label])
        s[f"opacification_volume_ml_{key}"] = None if regions is None else geo.ml(lesion_n[label])
        s[f"opacification_percent_{key}"] = pct
        s[f"severity_score_{key}"] = score(pct)
        scores.append(s[f"severity_score_{key}"])
    s[total_key] = sum(scores) if all(v is not None for v in scores) else None


def _summary(lesion: np.ndarray, lungs: np.ndarray, zones: np.ndarray | None, lobes: np.ndarray | None,
             hu: np.ndarray | None, peripheral: np.ndarray | None, geo: _Geometry, lesion_count: int,
             min_lesion_voxels: int, peripheral_mm: float) -> dict[str, Any]:
    lung_counts = np.bincount(lungs.ravel(), minlength=3)        # one count per label: 0, right, left
    les_counts = np.bincount(lungs[lesion], minlength=3)
    lung_n = int(lung_counts[1:].sum())
    les_in = int(les_counts[1:].sum())
    s: dict[str, Any] = {
        "slice_count": lesion.shape[0],
        "hu_available": hu is not None,
        "spacing_known": geo.spacing_known,
        "voxel_volume_ml": geo.voxel_ml if geo.volumetric and geo.spacing_known else None,
        "lung_volume_ml": geo.ml(lung_n),
        "lung_voxel_count": lung_n,
    }
    for side, name in LUNG_NAMES.items():
        s[f"lung_volume_ml_{name}"] = geo.ml(lung_counts[side])
    s["opacification_volume_ml"] = geo.ml(les_in)
    for side, name in LUNG_NAMES.items():
        s[f"opacification_volume_ml_{name}"] = geo.ml(les_counts[side])
    s["opacification_volume_ml_outside_lungs"] = geo.ml(les_counts[0])
    s["opacification_voxel_count"] = les_in
    s["opacification_percent"] = _percent(les_in, lung_n)
    for side, name in LUNG_NAMES.items():
        s[f"opacification_percent_{name}"] = _percent(les_counts[side], lung_counts[side])
    s["infection_ratio_fraction"] = les_in / lung_n if lung_n else None
    s["bilateral"] = bool(les_counts[RIGHT_LUNG] > 0 and les_counts[LEFT_LUNG] > 0)

    _region_summary(s, zones, lesion, ZONE_KEYS, zone_score, "severity_score_6zone", geo)
    _region_summary(s, lobes, lesion, LOBE_KEYS, lobe_score, "severity_score_5lobe", geo)

    s["lesion_count"] = lesion_count
    s["lesion_connectivity"] = LESION_CONNECTIVITY
    s["min_lesion_voxels"] = min_lesion_voxels
    s["peripheral_distance_mm"] = peripheral_mm if peripheral is not None else None
    total = int(lesion.sum())
    s["peripheral_lesion_fraction"] = (float(peripheral.sum()) / total if peripheral is not None and total
                                       else None)
    hu_fields = _hu_fields(None if hu is None or total == 0 else hu[lesion])
    s["lesion_mean_hu"] = hu_fields["mean_hu"]
    s["lesion_median_hu"] = hu_fields["median_hu"]
    s["ground_glass_fraction"] = hu_fields["ground_glass_fraction"]
    s["consolidation_fraction"] = hu_fields["consolidation_fraction"]
    s["ground_glass_range_hu"] = f"[{GGO_HU[0]:g}, {GGO_HU[1]:g})" if hu is not None else None
    s["consolidation_range_hu"] = (f"[{CONSOLIDATION_HU[0]:g}, {CONSOLIDATION_HU[1]:g}]"
                                   if hu is not None else None)
    s["coordinate_system"] = "LPS"
    return s


def _slice_rows(lesion: np.ndarray, lungs: np.ndarray, probabilities: np.ndarray | None,
                geo: _Geometry) -> list[dict[str, Any]]:
    les_px = lesion.reshape(lesion.shape[0], -1).sum(axis=1)
    lung_px = (lungs > 0).reshape(lungs.shape[0], -1).sum(axis=1)
    opacified = slice_lung_fraction(lesion, lungs)  # the segmenter rule's evidence (jcs.decision)
    rows = []
    for z in range(lesion.shape[0]):
        pos = geo.ref.TransformIndexToPhysicalPoint((0, 0, z))[2] if geo.spacing_known else None
        rows.append({
            "slice_index": z,
            "position_z_mm": pos,
            "classifier_probability": None if probabilities is None else float(probabilities[z]),
            "opacification_area_mm2": geo.mm2(les_px[z]),
            "lung_area_mm2": geo.mm2(lung_px[z]),
            "opacification_area_px": int(les_px[z]),
            "lung_area_px": int(lung_px[z]),
            "opacified_lung_fraction": float(opacified[z]),
        })
    return rows


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN to None, tuples to lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_tables(quantification: Quantification, out_dir: str | Path) -> dict[str, Any]:
    """Write summary.csv (``quantity,value,unit`` rows), lesions.csv and slices.csv (one row each) into
    `out_dir`, in the table format of `jcs diagnose` (:mod:`jcs.outputs`).

    Returns the JSON-ready dict ({"summary", "lesions", "slices"}) for results.json; the CSVs carry the
    same field names (empty cell = unavailable).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = quantification.to_dict()
    write_summary_csv(out / "summary.csv", data["summary"])
    write_records_csv(out / "lesions.csv", LESION_FIELDS, data["lesions"])
    write_records_csv(out / "slices.csv", SLICE_FIELDS, data["slices"])
    return data


def run_quantify(ct_path: str | Path, mask_path: str | Path, out_dir: str | Path,
                 lungs_path: str | Path | None = None, *, lung_convention: str = "auto",
                 dicom_seg: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """`jcs quantify CT LESION_MASK [--lungs LABELMAP] --out DIR [--dicom-seg]`: quantify a (user-edited)
    lesion mask.

    The mask must lie on the CT's grid (any axis order); one on another grid is resampled (nearest
    neighbour, with a note) only when all its lesion voxels lie inside the CT, see `mask_on_grid` for
    the value rules. Lungs come from `lungs_path` (see `check_lung_labels` and
    `jcs.lung.read_lung_labelmap`) or `jcs.lung.segment_lungs`. Writes summary.csv, lesions.csv,
    slices.csv and results.json ({"case", "summary", "lesions", "slices", "notes"}) into `out_dir`,
    which must be new or empty unless `overwrite` (`jcs.outputs`: staged, then renamed into place,
    under a lock); returns that dict. With `dicom_seg` (the CT a DICOM series, checked first) also the
    mask as a semi-automatic DICOM-SEG and an SR of its measurements (`jcs.dicomseg`).
    """
    out = Path(out_dir)
    named = (("CT", ct_path), ("lesion mask", mask_path), ("lung labelmap", lungs_path))
    for what, path in named:
        if path is not None and not Path(path).exists():
            raise CorruptFileError(f"cannot read {what} {path}: no such file or folder")
    check_out_dir(out, overwrite=overwrite)
    with FolderLock(out):
        ct = read_ct(ct_path)
        if dicom_seg:
            from jcs.dicomseg import check_source_series

            check_source_series(ct)
        axial = ct.axial_image()
        array = ct.axial_array()
        notes = list(ct.notes)
        try:
            mask_image = sitk.ReadImage(str(mask_path))
        except RuntimeError as exc:
            reason = str(exc).splitlines()[-1]
            raise CorruptFileError(f"cannot read lesion mask {mask_path}: {reason}") from exc
        lesion = mask_on_grid(mask_image, axial, mask_path, notes)
        lobes = None
        if lungs_path is not None:
            lung_image = _read_lung_image(lungs_path)
            check_lung_labels(lung_image, lungs_path, lung_convention, notes)
            lungs, lobes = read_lung_labelmap(lung_image, axial, lung_convention)
        else:
            sx, sy, sz = axial.GetSpacing()
            lungs = segment_lungs(array, (sz, sy, sx), is_hu=ct.is_hu)
        result = quantify(lesion, lungs if lobes is None else lobes_to_lungs(lobes), axial,
                          hu=array if ct.is_hu else None, lobes=lobes, spacing_known=ct.is_hu)
        with staged_folder(out, overwrite=overwrite) as staging:
            payload = _write_quantify_outputs(ct, lesion, result, staging, notes, dicom_seg,
                                              mask_path, lungs_path)
    return payload


def _write_quantify_outputs(ct: Any, lesion: np.ndarray, result: Quantification, staging: Path,
                            notes: list[str], dicom_seg: bool, mask_path: str | Path,
                            lungs_path: str | Path | None) -> dict[str, Any]:
    data = write_tables(result, staging)
    payload = {"case": {"ct": str(ct.path), "lesion_mask": str(mask_path),
                        "lungs": None if lungs_path is None else str(lungs_path),
                        "lung_source": "labelmap" if lungs_path is not None else "jcs.lung.segment_lungs"},
               **data, "notes": notes}
    if dicom_seg:
        from jcs import __version__
        from jcs.dicomseg import ReportValues, export_seg_and_report

        exported = export_seg_and_report(
            mask=ct.from_axial(lesion), source_files=list(ct.dicom_files or []), output_dir=staging,
            engine={"engine_version": __version__}, edited=True,
            values=ReportValues.from_summary(data.get("summary", {})),
        )
        payload["outputs"] = {"dicom_seg": exported.seg_path.name, "dicom_sr": exported.sr_path.name}
    with open(staging / "results.json", "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    return payload


def _read_lung_image(path: str | Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CorruptFileError(f"cannot read lung labelmap {path}: {str(exc).splitlines()[-1]}") from exc


def _labels_present(array: np.ndarray) -> list[int]:
    values = array[array != 0]
    return sorted(int(v) for v in np.unique(values)) if values.size else []


def check_lung_labels(image: sitk.Image, source: str | Path, convention: str, notes: list[str]) -> None:
    """Refuse a lung labelmap whose labels are ambiguous, naming the labels.

    Rule (label values only, ``convention="auto"``): {1, 2} or a part of it is a lung labelmap (1 right,
    2 left); exactly {1, 2, 3, 4, 5} a lobe labelmap; values within 10..14 TotalSegmentator's lobes;
    anything else (a lung labelmap with an extra label, three of five lobes, ...) is refused. With a
    named convention every label must belong to it. With Slicer segment names, labels whose names are
    not lungs or lobes are left out with a note.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        return  # read_lung_labelmap words this one
    array = np.asarray(sitk.GetArrayViewFromImage(image))
    if array.dtype.kind == "f" and (not np.isfinite(array).all() or (array != np.round(array)).any()):
        raise InputError(f"lung labelmap {source} holds fractional values; a labelmap holds whole numbers")
    present = _labels_present(array)
    if any(v < 0 for v in present):
        negative = _listed(v for v in present if v < 0)
        raise InputError(f"lung labelmap {source} holds negative labels ({negative})")
    named = convention == "auto"
    known = _convention_from_segment_names(image) if named else LABEL_CONVENTIONS.get(convention)
    if known:
        extra = [v for v in present if v not in known]
        if extra and convention != "auto":
            raise InputError(f"lung labelmap {source}: labels {_listed(extra)} are not part of the "
                             f"{convention!r} convention ({_listed(sorted(known))})")
        if extra:
            notes.append(f"lung labelmap: labels {_listed(extra)} are not lungs or lobes by their segment "
                         "names and were left out")
        return
    values = set(present)
    if values <= {1, 2} or values == set(range(1, 6)) or values <= set(range(10, 15)):
        return
    lungs = [v for v in present if v in (1, 2)]
    extra = [v for v in present if v not in (1, 2)]
    besides = f" besides the lungs' {_listed(lungs)}" if lungs else ""
    raise InputError(
        f"lung labelmap {source} holds labels {_listed(extra)}{besides}: a lung labelmap has 1 (right) and "
        "2 (left) only, a lobe labelmap all five lobes 1-5 (or TotalSegmentator's 10-14); remove the other "
        "labels or give all five lobes"
    )


def _listed(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def mask_on_grid(mask: sitk.Image, axial: sitk.Image, source: str | Path, notes: list[str]) -> np.ndarray:
    """Binary lesion mask (uint8) on the axial grid, under the rules stated in `jcs quantify --help`.

    Values: every non-zero voxel is lesion when the mask holds a single non-zero value (1, 255, ...);
    several labels, negative values, NaN or fractional values (a probability map) are refused. A
    multi-channel image is accepted only when its channels are equal (a grey mask saved as RGB).
    Geometry: a mask on the CT's grid (any axis order) is reoriented voxel for voxel; on another grid
    it is resampled (nearest neighbour) with a note, and refused when any of its lesion voxels lies
    outside the CT (their count is given).
    """
    mask = _binary_mask(mask, source)
    if mask.GetDimension() == 2:
        mask = sitk.JoinSeries(mask)
    if mask.GetDimension() != 3:
        raise InputError(f"lesion mask {source}: {mask.GetDimension()}-D image; expected 2-D or 3-D")
    lps = sitk.DICOMOrient(mask, "LPS")
    same = (lps.GetSize() == axial.GetSize()
            and np.allclose(lps.GetOrigin(), axial.GetOrigin(), atol=1e-3)
            and np.allclose(lps.GetSpacing(), axial.GetSpacing(), atol=1e-4)
            and np.allclose(lps.GetDirection(), axial.GetDirection(), atol=1e-4))
    if same:
        return sitk.GetArrayFromImage(lps)
    total, outside = _voxels_outside(mask, axial)
    if total and outside == total:
        raise InputError(f"lesion mask {source} does not overlap the CT (different geometry?): all {total} "
                         "lesion voxels lie outside the CT's grid")
    if outside:
        raise InputError(
            f"lesion mask {source}: {outside} of its {total} lesion voxels lie outside the CT's grid (origin "
            f"{_xyz(mask.GetOrigin())} mm vs the CT's {_xyz(axial.GetOrigin())} mm); the mask must lie on "
            "the CT's grid"
        )
    resampled = sitk.Resample(mask, axial, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    notes.append(
        f"lesion mask resampled (nearest neighbour) from its grid ({'x'.join(map(str, mask.GetSize()))} "
        "voxels "
        f"of {_xyz(mask.GetSpacing())} mm) onto the CT's ({'x'.join(map(str, axial.GetSize()))} of "
        f"{_xyz(axial.GetSpacing())} mm); {total} lesion voxels became "
        f"{int(sitk.GetArrayViewFromImage(resampled).sum())}"
    )
    return sitk.GetArrayFromImage(resampled)


def _xyz(values: Any) -> str:
    return ", ".join(f"{float(v):g}" for v in values)


def _binary_mask(mask: sitk.Image, source: str | Path) -> sitk.Image:
    """The mask as 0/1 uint8 with its geometry, or InputError naming what is ambiguous in its values."""
    array = sitk.GetArrayViewFromImage(mask)
    if mask.GetNumberOfComponentsPerPixel() > 1:
        first = array[..., 0]
        if any((array[..., k] != first).any() for k in range(1, array.shape[-1])):
            raise InputError(
                f"lesion mask {source} has {mask.GetNumberOfComponentsPerPixel()} different channels "
                "(layers) "
                "per voxel; export the lesion segment as one labelmap"
            )
        array = first
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InputError(f"lesion mask {source} holds NaN or infinite values")
        fractional = array[array != np.round(array)]
        if fractional.size:
            raise InputError(
                f"lesion mask {source} holds fractional values ({fractional.size} voxels, e.g. "
                f"{float(fractional.flat[0]):.3g}): a probability map? Threshold it first (e.g. > 0.5) and "
                "save 0 and 1"
            )
    labels = _labels_present(np.asarray(array))
    if any(v < 0 for v in labels):
        negative = _listed(v for v in labels if v < 0)
        raise InputError(f"lesion mask {source} holds negative values ({negative})")
    if len(labels) > 1:
        raise InputError(
            f"lesion mask {source} holds several labels ({_listed(labels[:10])}); jcs quantify takes one "
            "lesion label: merge them (any non-zero voxel a lesion) or give the lesion label alone"
        )
    binary = sitk.GetImageFromArray((np.asarray(array) != 0).astype(np.uint8))
    binary.SetOrigin(mask.GetOrigin())
    binary.SetSpacing(mask.GetSpacing())
    binary.SetDirection(mask.GetDirection())
    return binary


def _voxels_outside(mask: sitk.Image, axial: sitk.Image) -> tuple[int, int]:
    """(lesion voxels of ``mask``, how many of them lie outside the grid of ``axial``)."""
    zyx = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
    if not len(zyx):
        return 0, 0
    index = zyx[:, ::-1].astype(float)  # x, y, z
    to_world = np.asarray(mask.GetDirection()).reshape(3, 3) * np.asarray(mask.GetSpacing())
    world = index @ to_world.T + np.asarray(mask.GetOrigin())
    to_index = np.linalg.inv(np.asarray(axial.GetDirection()).reshape(3, 3) * np.asarray(axial.GetSpacing()))
    ct_index = (world - np.asarray(axial.GetOrigin())) @ to_index.T
    size = np.asarray(axial.GetSize())
    inside = ((ct_index > -0.5) & (ct_index < size - 0.5)).all(axis=1)
    return len(zyx), int(len(zyx) - inside.sum())
