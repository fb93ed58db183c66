"""Lung masks without learned weights: right/left lungs from HU (or 8-bit lung-window) images, external
lung/lobe labelmaps, and cranio-caudal zones.

All arrays are in the *axial grid* of `jcs.io.CTVolume.axial_image()`: axes (Z, Y, X), DICOM LPS, so
+x points to the patient's left (the right lung lies at small x), +y posterior, +z superior.

Label conventions used throughout the engine:

- lungs:  0 outside, 1 right lung, 2 left lung (`RIGHT_LUNG`, `LEFT_LUNG`).
- lobes:  0 outside, 1 right upper, 2 right middle, 3 right lower, 4 left upper, 5 left lower (`LOBE_NAMES`).
- zones:  0 outside, 1 right upper, 2 right middle, 3 right lower, 4 left upper, 5 left middle,
          6 left lower (`ZONE_NAMES`): equal thirds of each lung's cranio-caudal extent in slices.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull

from jcs.errors import CorruptFileError, InputError

RIGHT_LUNG = 1
LEFT_LUNG = 2
LUNG_NAMES = {RIGHT_LUNG: "right", LEFT_LUNG: "left"}
LOBE_NAMES = {1: "right upper", 2: "right middle", 3: "right lower", 4: "left upper", 5: "left lower"}
LOBE_SIDE = {1: RIGHT_LUNG, 2: RIGHT_LUNG, 3: RIGHT_LUNG, 4: LEFT_LUNG, 5: LEFT_LUNG}
ZONE_NAMES = {1: "right upper", 2: "right middle", 3: "right lower",
              4: "left upper", 5: "left middle", 6: "left lower"}

# HU thresholds: lung parenchyma < -400 HU (after Hu, Hoffman & Reinhardt, IEEE TMI 2001); airway lumen:
# 3x3 in-plane mean < -900 HU (real tracheal air reads about -950 +- 40 HU, aerated lung about -850).
LUNG_MAX_HU = -400.0
AIRWAY_MAX_HU = -900.0

# External labelmap conventions: label value -> our lobe label (0 = ignore) or, for lung-only maps, lung side.
LABEL_CONVENTIONS: dict[str, dict[int, tuple[str, int]]] = {
    # ours: 1 right lung, 2 left lung
    "jcs-lungs": {1: ("lung", RIGHT_LUNG), 2: ("lung", LEFT_LUNG)},
    # ours: 1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL
    "jcs-lobes": {k: ("lobe", k) for k in LOBE_NAMES},
    # TotalSegmentator v2 "total" task
    "totalsegmentator": {10: ("lobe", 4), 11: ("lobe", 5), 12: ("lobe", 1), 13: ("lobe", 2), 14: ("lobe", 3)},
    # lungmask LTRCLobes / R231: 1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL
    "lungmask-lobes": {1: ("lobe", 4), 2: ("lobe", 5), 3: ("lobe", 1), 4: ("lobe", 2), 5: ("lobe", 3)},
}

# 8-bit images: lung candidates are darker than this fraction of the way from the dark class (air, lung)
# to the bright class (soft tissue) of Otsu's split, so ground glass counts as lung but fat/muscle do not.
EIGHT_BIT_LEVEL = 0.75

_MAX_WORK_PIXELS = 288  # in-plane size of the working grid (speed: 512x512x300 in a few seconds)


def segment_lungs(image: np.ndarray, spacing_zyx: tuple[float, float, float], *, is_hu: bool = True,
                  close_mm: float = 8.0) -> np.ndarray:
    """Right/left lung labels (0 outside, 1 right, 2 left) of an axial-grid image.

    `image` is (Z, Y, X) HU, or 8-bit pre-windowed (`is_hu=False`: threshold `EIGHT_BIT_LEVEL` of the
    way between the classes of Otsu's method), or a single 2-D slice (Y, X), returned 2-D.

    Steps (after Hu, Hoffman & Reinhardt, IEEE TMI 2001): low-density candidates (< -400 HU); removal
    of air outside the body (per slice: components running along the border, the air ring of a
    circular field of view, air not enclosed by the body, e.g. under the table); removal of the trachea
    and main bronchi (HU volumes only: lumen, 3x3 mean < -900 HU, tracked caudally from the top slices
    until it opens into the lung); 3-D components under 20 % of the largest dropped; each slice's components
    assigned to a side by their centroid relative to the midline (a component crossing it, i.e. lungs
    touching, is cut at its narrowest column); per lung and slice a closing (square of `close_mm`),
    hole filling and filling of chest-wall concavities so vessels and dense lesions count as lung.
    Computed on a grid of at most ~288 pixels in-plane, then refined at full resolution.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        return segment_lungs(arr[None], spacing_zyx if len(spacing_zyx) == 3 else (1.0, *spacing_zyx),
                             is_hu=is_hu, close_mm=close_mm)[0]
    if arr.ndim != 3 or min(arr.shape) < 1 or arr.shape[1] < 16 or arr.shape[2] < 16:
        raise InputError(f"segment_lungs needs a (Z, Y, X) or (Y, X) image of at least 16x16, "
                         f"got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError("segment_lungs: the image contains NaN or infinite values")
    if len(spacing_zyx) != 3 or min(spacing_zyx) <= 0:
        raise InputError(f"segment_lungs: spacing must be three positive mm values (z, y, x), "
                         f"got {spacing_zyx}")

    air_thr, aw_thr = _thresholds(arr, is_hu)
    step = max(1, math.ceil(max(arr.shape[1:]) / _MAX_WORK_PIXELS))
    work = arr[:, ::step, ::step]
    spacing = (float(spacing_zyx[0]), float(spacing_zyx[1]) * step, float(spacing_zyx[2]) * step)

    air = work < air_thr
    cand = air & ~_outside_air(air)
    if aw_thr is not None and cand.shape[0] > 1:
        cand &= ~_track_airways(cand, work, aw_thr, spacing)
    cand = _keep_large_components(cand)
    labels = _assign_sides(cand)
    labels = _close_and_fill(labels, close_mm, spacing)
    if step == 1:
        return labels
    return _refine(labels, arr, air_thr, step)


def _thresholds(arr: np.ndarray, is_hu: bool) -> tuple[float, float | None]:
    """(lung candidate threshold, airway lumen threshold or None)."""
    if is_hu:
        return LUNG_MAX_HU, AIRWAY_MAX_HU
    values = arr[:, ::2, ::2].astype(np.float32).ravel()
    if float(values.max()) - float(values.min()) < 1:
        raise InputError("segment_lungs: the image is constant")
    otsu = _otsu(values)
    dark, bright = float(np.median(values[values < otsu])), float(np.median(values[values >= otsu]))
    return dark + EIGHT_BIT_LEVEL * (bright - dark), None


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of 8-bit-range values (between-class variance maximum over 256 bins)."""
    hist, edges = np.histogram(values, bins=256, range=(float(values.min()), float(values.max()) + 1e-3))
    p = hist.astype(np.float64) / hist.sum()
    w0 = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        sb = (mu[-1] * w0 - mu) ** 2 / (w0 * (1 - w0))
    k = int(np.nanargmax(sb))
    return float(edges[k + 1])


def _slice_structure() -> np.ndarray:
    """4-connectivity within each axial slice, none across slices."""
    s = np.zeros((3, 3, 3), dtype=bool)
    s[1] = ndi.generate_binary_structure(2, 1)
    return s


def _border_components(lab: np.ndarray, n: int) -> np.ndarray:
    """Per label: True when it runs along the slice border, i.e. touches it over at least sqrt(area)
    pixels (a lung cut briefly by a tight field of view does not; the air around the body does)."""
    contact = np.zeros(n + 1, dtype=np.int64)
    for border in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        contact += np.bincount(border.ravel(), minlength=n + 1)
    area = np.bincount(lab.ravel(), minlength=n + 1)
    along = (contact > 0) & (contact >= np.sqrt(area))
    along[0] = False
    return along


def _body(air: np.ndarray) -> np.ndarray:
    """Per slice, the largest non-air component with everything it encloses (the body; the CT table
    and other objects apart from it are left out)."""
    lab, n = ndi.label(~air, structure=_slice_structure())
    body = np.zeros_like(air)
    if n == 0:
        return body
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    z_of = np.array([box[0].start for box in ndi.find_objects(lab)])
    order = np.lexsort((sizes[1:], z_of))           # by slice, then size: the last of each slice wins
    last = np.r_[z_of[order][1:] != z_of[order][:-1], True]
    keep = np.zeros(n + 1, dtype=bool)
    keep[order[last] + 1] = True
    core = keep[lab]
    holes, m = ndi.label(~core, structure=_slice_structure())
    enclosed = ~_border_components(holes, m)
    enclosed[0] = False
    return core | enclosed[holes]


def _outside_air(air: np.ndarray) -> np.ndarray:
    """Air outside the body: per slice, air components along the border, around the slice centre (the
    air ring inside a circular field of view) or not enclosed by the body (e.g. under the table)."""
    lab, n = ndi.label(air, structure=_slice_structure())
    if n == 0:
        return np.zeros_like(air)
    outside = _border_components(lab, n)
    # ring test: a component that encloses the centre pixel of its slice (checked on the candidates that
    # lie left of, right of, above and below the centre) is the air ring inside a circular field of view
    nz, ny, nx = air.shape
    cy, cx = ny // 2, nx // 2
    for z in range(nz):
        sl = lab[z]
        ids = set(np.unique(sl[cy, :cx])) & set(np.unique(sl[cy, cx + 1 :])) & set(np.unique(sl[:cy, cx]))
        ids &= set(np.unique(sl[cy + 1 :, cx]))
        for i in ids - {0, sl[cy, cx]}:
            if not outside[i] and ndi.binary_fill_holes(sl == i)[cy, cx]:
                outside[i] = True
    return outside[lab] | (air & ~_body(air))


def _track_airways(cand: np.ndarray, work: np.ndarray, threshold: float,
                   spacing: tuple[float, float, float]) -> np.ndarray:
    """Trachea and main bronchi: lumen (3x3 in-plane mean below `threshold`, robust to noise) found as
    a small round midline component in the top slices, followed caudally slice by slice while each
    followed component stays small (a component more than twice the area it continues, or larger than
    1000 mm^2, has reached the lung and is not taken). Returned grown by one pixel in-plane to take the
    partial-volume rim of the lumen too."""
    nz = cand.shape[0]
    px_mm2 = spacing[1] * spacing[2]
    zs = np.flatnonzero(cand.any(axis=(1, 2)))
    if len(zs) < 2:
        return np.zeros_like(cand)
    xs = np.flatnonzero(cand.any(axis=(0, 1)))
    x_mid, half_w = (xs[0] + xs[-1]) / 2, (xs[-1] - xs[0]) / 2
    cache: dict[int, np.ndarray] = {}

    def lumen_at(z: int) -> np.ndarray:
        if z not in cache:
            cache[z] = (ndi.uniform_filter(work[z].astype(np.float32), 3) < threshold) & cand[z]
        return cache[z]

    s2 = ndi.generate_binary_structure(2, 1)
    airway = np.zeros_like(cand)
    top, first = zs[-1], zs[0]
    seed = None
    for z in range(top, top - max(2, (top - first) // 3), -1):
        lab, n = ndi.label(lumen_at(z), structure=s2)
        for i in range(1, n + 1):
            comp = lab == i
            area = comp.sum() * px_mm2
            yy, xx = np.nonzero(comp)
            box = (np.ptp(yy) + 1) * (np.ptp(xx) + 1)
            if 20 <= area <= 700 and abs(xx.mean() - x_mid) < 0.2 * half_w and comp.sum() / box > 0.5:
                seed = (z, comp)
                break
        if seed is not None:
            break
    if seed is None:
        return airway
    z0, comp = seed
    airway[z0] = comp
    for z in range(z0 + 1, nz):  # above the seed: everything connected to it in the lumen
        lab, _ = ndi.label(lumen_at(z), structure=s2)
        ids = np.unique(lab[airway[z - 1] & (lab > 0)])
        if len(ids) == 0:
            break
        airway[z] = np.isin(lab, ids)
    for z in range(z0 - 1, -1, -1):
        lab, _ = ndi.label(lumen_at(z), structure=s2)
        prev_lab, prev_n = ndi.label(airway[z + 1], structure=s2)
        kept = np.zeros(cand.shape[1:], dtype=bool)
        for j in range(1, prev_n + 1):
            prev = prev_lab == j
            for i in np.unique(lab[prev & (lab > 0)]):
                comp = lab == i
                area = comp.sum()
                if area <= 2.0 * prev.sum() + 4 and area * px_mm2 <= 1000:
                    kept |= comp
        if not kept.any():
            break
        airway[z] = kept
    return ndi.binary_dilation(airway, structure=_slice_structure()) & cand


def _keep_large_components(cand: np.ndarray) -> np.ndarray:
    """Keep 3-D components (6-connectivity) of at least 20 % of the largest one's volume."""
    lab, n = ndi.label(cand)
    if n == 0:
        return cand
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = sizes >= 0.2 * sizes.max()
    keep[0] = False
    return keep[lab]


def _assign_sides(lung: np.ndarray) -> np.ndarray:
    """Per slice, label each lung component right (1, x < midline) or left (2) by its centroid; a
    component with a substantial part on both sides (touching lungs) is cut at its narrowest column
    near the midline. The midline is the centre of the lungs' overall x extent."""
    labels = np.zeros(lung.shape, dtype=np.uint8)
    xs = np.flatnonzero(lung.any(axis=(0, 1)))
    if len(xs) == 0:
        return labels
    x_mid = (xs[0] + xs[-1]) / 2
    half_w = max(2.0, (xs[-1] - xs[0]) / 2)
    s2 = ndi.generate_binary_structure(2, 1)
    nx = lung.shape[2]
    cols = np.arange(nx)
    for z in np.flatnonzero(lung.any(axis=(1, 2))):
        lab, n = ndi.label(lung[z], structure=s2)
        for i in range(1, n + 1):
            comp = lab == i
            count = comp.sum(axis=0)
            left_part = count[cols >= x_mid].sum()
            right_part = count[cols < x_mid].sum()
            if min(left_part, right_part) > 0.15 * count.sum():
                lo, hi = int(max(0, x_mid - 0.3 * half_w)), int(min(nx - 1, x_mid + 0.3 * half_w))
                window = count[lo : hi + 1]
                at_min = np.flatnonzero(window == window.min()) + lo
                cut = (at_min[0] + at_min[-1]) / 2  # centre of the narrowest plateau
                labels[z][comp & (cols[None, :] <= cut)] = RIGHT_LUNG
                labels[z][comp & (cols[None, :] > cut)] = LEFT_LUNG
            else:
                labels[z][comp] = RIGHT_LUNG if left_part < right_part else LEFT_LUNG
    return labels


def _close_and_fill(labels: np.ndarray, close_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Per lung and slice: closing with a square of about `close_mm` and hole filling (vessels, lesions)."""
    out = np.zeros_like(labels)
    ry = max(1, int(round(close_mm / spacing[1])))
    rx = max(1, int(round(close_mm / spacing[2])))
    for side in (RIGHT_LUNG, LEFT_LUNG):
        mask = labels == side
        if not mask.any():
            continue
        zs, ys, xs = (np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
        box = (slice(zs[0], zs[-1] + 1), slice(max(0, ys[0] - ry - 1), ys[-1] + ry + 2),
               slice(max(0, xs[0] - rx - 1), xs[-1] + rx + 2))
        sub = np.pad(mask[box], ((0, 0), (ry + 1, ry + 1), (rx + 1, rx + 1))).astype(np.uint8)
        for axis, r in ((1, ry), (2, rx)):
            sub = ndi.maximum_filter1d(sub, 2 * r + 1, axis=axis)
        for axis, r in ((1, ry), (2, rx)):
            sub = ndi.minimum_filter1d(sub, 2 * r + 1, axis=axis)
        sub = sub[:, ry + 1 : -(ry + 1), rx + 1 : -(rx + 1)].astype(bool) | mask[box]
        sub = _fill_slices(sub)
        for z in range(sub.shape[0]):
            if sub[z].any():
                sub[z] |= _outer_concavities(sub[z], side, spacing[1] * spacing[2])
        region = out[box]
        region[sub & (region == 0)] = side
    return out


def _outer_concavities(mask: np.ndarray, side: int, px_mm2: float) -> np.ndarray:
    """Concavities of one lung slice facing the chest wall, where dense dependent or subpleural
    consolidation excluded by the density threshold sits: components (>= 20 mm^2, at most 40 % of the lung
    slice) of its convex hull minus the lung whose centroid lies lateral of the lung's centroid, or
    posterior to it and outside the lung's medial quarter. Medial concavities (heart, hilum, spine) are
    left out."""
    out = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    crop = mask[box]
    lab, n = ndi.label(_convex_hull(crop) & ~crop)
    if n == 0:
        return out
    cy, cx = ys.mean() - ys.min(), xs.mean() - xs.min()
    width = float(np.ptp(xs))
    medial_quarter = width * 0.75 if side == RIGHT_LUNG else width * 0.25
    flat = lab.ravel()
    rows, cols = np.indices(lab.shape)
    areas = np.bincount(flat, minlength=n + 1).astype(float)
    mean_y = np.bincount(flat, rows.ravel(), minlength=n + 1) / np.maximum(areas, 1)
    mean_x = np.bincount(flat, cols.ravel(), minlength=n + 1) / np.maximum(areas, 1)
    lateral = mean_x < cx if side == RIGHT_LUNG else mean_x > cx
    not_medial = mean_x < medial_quarter if side == RIGHT_LUNG else mean_x > medial_quarter
    keep = (areas * px_mm2 >= 20) & (areas <= 0.4 * len(ys)) & (lateral | ((mean_y > cy) & not_medial))
    keep[0] = False
    out[box] = keep[lab]
    return out


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """Pixels whose centres lie inside the convex hull of the mask's pixel centres (row-wise scan of
    the hull's edges; the mask itself is included)."""
    edge = mask & ~ndi.binary_erosion(mask)
    points = np.argwhere(edge).astype(np.float64)
    if len(points) < 3 or np.linalg.matrix_rank(points - points[0]) < 2:
        return mask.copy()
    vertices = points[ConvexHull(points).vertices]
    ny = mask.shape[0]
    lo = np.full(ny, np.inf)
    hi = np.full(ny, -np.inf)
    for (y0, x0), (y1, x1) in zip(vertices, np.roll(vertices, -1, axis=0), strict=True):
        rows = np.arange(math.ceil(min(y0, y1) - 1e-9), math.floor(max(y0, y1) + 1e-9) + 1)
        xs = np.full(rows.shape, x0) if y1 == y0 else x0 + (rows - y0) * (x1 - x0) / (y1 - y0)
        if y1 == y0:
            xs = np.concatenate([xs, np.full(rows.shape, x1)])
            rows = np.concatenate([rows, rows])
        np.minimum.at(lo, rows.astype(np.int64), xs)
        np.maximum.at(hi, rows.astype(np.int64), xs)
    cols = np.arange(mask.shape[1])
    hull = (cols[None, :] >= lo[:, None] - 1e-6) & (cols[None, :] <= hi[:, None] + 1e-6)
    return hull | mask


def _fill_slices(mask: np.ndarray) -> np.ndarray:
    """2-D hole filling of every axial slice (background components not touching the slice border)."""
    lab, n = ndi.label(~mask, structure=_slice_structure())
    border = np.zeros(n + 1, dtype=bool)
    for edge in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        border[np.unique(edge)] = True
    border[0] = True  # label 0 is the mask itself
    return mask | ~border[lab]


def _refine(labels: np.ndarray, image: np.ndarray, air_threshold: float, step: int) -> np.ndarray:
    """Upsample working-grid labels; at the lung border keep only full-resolution low-density voxels.
    Only the lungs' bounding box is touched."""
    out = np.zeros(image.shape, dtype=np.uint8)
    boxes = ndi.find_objects((labels > 0).astype(np.uint8))
    if not boxes:
        return out
    zb, yb, xb = boxes[0]
    sub = labels[zb, max(0, yb.start - 1) : yb.stop + 1, max(0, xb.start - 1) : xb.stop + 1]
    y0, x0 = max(0, yb.start - 1) * step, max(0, xb.start - 1) * step
    y1, x1 = min(image.shape[1], (yb.stop + 1) * step), min(image.shape[2], (xb.stop + 1) * step)
    interior = ndi.minimum_filter(sub, size=(1, 3, 3)) == sub
    up = np.repeat(np.repeat(sub, step, axis=1), step, axis=2)[:, : y1 - y0, : x1 - x0]
    interior_up = np.repeat(np.repeat(interior, step, axis=1), step, axis=2)[:, : y1 - y0, : x1 - x0]
    keep = interior_up | (image[zb, y0:y1, x0:x1] < air_threshold)
    out[zb, y0:y1, x0:x1] = np.where(keep, up, 0)
    return out


def lung_zones(lungs: np.ndarray) -> np.ndarray:
    """Zone labels (`ZONE_NAMES`): upper, middle and lower thirds of each lung's cranio-caudal extent.

    A slice z of a lung spanning slices first..last (n slices, z increasing superiorly) is in third
    floor(3 (z - first) / n): 0 lower, 1 middle, 2 upper.
    """
    zones = np.zeros(lungs.shape, dtype=np.uint8)
    for side, base in ((RIGHT_LUNG, 0), (LEFT_LUNG, 3)):
        mask = lungs == side
        zs = np.flatnonzero(mask.any(axis=tuple(range(1, lungs.ndim))))
        if len(zs) == 0:
            continue
        first, n = zs[0], zs[-1] - zs[0] + 1
        third = np.clip((np.arange(lungs.shape[0]) - first) * 3 // n, 0, 2)
        zone_of_slice = (base + 3 - third).astype(np.uint8)  # third 2 (upper) -> base + 1
        zones[mask] = np.broadcast_to(zone_of_slice.reshape(-1, *([1] * (lungs.ndim - 1))), lungs.shape)[mask]
    return zones


def near_lungs(lungs: np.ndarray, spacing_zyx: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """Voxels within ``margin_mm`` (Euclidean, in mm) of any lung voxel, the lungs included.

    Opacities lie in the lungs; the margin keeps lesions the lung mask cuts at the pleura. The
    distance transform runs only in the lungs' bounding box grown by the margin.
    """
    near = np.zeros(lungs.shape, dtype=bool)
    inside = lungs > 0
    if not inside.any():
        return near
    sides = []
    for axis, step in enumerate(spacing_zyx):
        idx = np.flatnonzero(inside.any(axis=tuple(a for a in range(inside.ndim) if a != axis)))
        grow = math.ceil(margin_mm / step)
        sides.append(slice(max(int(idx[0]) - grow, 0), min(int(idx[-1]) + grow + 1, inside.shape[axis])))
    box = tuple(sides)
    near[box] = ndi.distance_transform_edt(~inside[box], sampling=spacing_zyx) <= margin_mm
    return near


def drop_far_lesions(
    lesion_mask: np.ndarray, lungs: np.ndarray, spacing_zyx: tuple[float, float, float], margin_mm: float
) -> int:
    """Clear, in place, lesion voxels farther than ``margin_mm`` from the lungs; returns how many."""
    if margin_mm < 0 or not lungs.any() or not lesion_mask.any():
        return 0
    far = (lesion_mask > 0) & ~near_lungs(lungs, spacing_zyx, margin_mm)
    lesion_mask[far] = 0
    return int(far.sum())


def lobes_to_lungs(lobes: np.ndarray) -> np.ndarray:
    """Lung labels (1 right, 2 left) from lobe labels (1-3 right, 4-5 left)."""
    lut = np.zeros(max(256, int(lobes.max()) + 1), dtype=np.uint8)
    for lobe, side in LOBE_SIDE.items():
        lut[lobe] = side
    return lut[lobes]


_NAME_PATTERNS = [  # Slicer segment names (TotalSegmentator, Lung CT Analyzer, ...) -> ("lobe"/"lung", label)
    (r"right.*upper|upper.*right|\brul\b", ("lobe", 1)),
    (r"right.*middle|middle.*right|\brml\b", ("lobe", 2)),
    (r"right.*lower|lower.*right|\brll\b", ("lobe", 3)),
    (r"left.*upper|upper.*left|\blul\b", ("lobe", 4)),
    (r"left.*lower|lower.*left|\blll\b", ("lobe", 5)),
    (r"right.*lung|lung.*right", ("lung", RIGHT_LUNG)), (r"left.*lung|lung.*left", ("lung", LEFT_LUNG)),
]


def _convention_from_segment_names(image: sitk.Image) -> dict[int, tuple[str, int]] | None:
    """Label mapping from Slicer .seg.nrrd segment metadata (SegmentN_Name / SegmentN_LabelValue)."""
    mapping: dict[int, tuple[str, int]] = {}
    for key in image.GetMetaDataKeys():
        m = re.fullmatch(r"Segment(\d+)_Name", key)
        if not m:
            continue
        name = image.GetMetaData(key).lower().replace("_", " ")
        value_key = f"Segment{m.group(1)}_LabelValue"
        value = int(image.GetMetaData(value_key)) if image.HasMetaDataKey(value_key) else int(m.group(1)) + 1
        for pattern, target in _NAME_PATTERNS:
            if re.search(pattern, name):
                mapping[value] = target
                break
    return mapping or None


def read_lung_labelmap(source: str | Path | sitk.Image, reference: sitk.Image,
                       convention: str = "auto") -> tuple[np.ndarray, np.ndarray | None]:
    """Read an external lung or lobe labelmap onto the axial grid of `reference`.

    `reference` is the CT's axial image (`CTVolume.axial_image()`); the labelmap may be stored in any
    orientation and is resampled (nearest neighbour) onto it. `convention` is a key of
    `LABEL_CONVENTIONS` or "auto": segment names of a Slicer .seg.nrrd when present, else label values
    {1, 2} -> "jcs-lungs", values within 10..14 -> "totalsegmentator", values within 1..5 -> "jcs-lobes"
    (this engine's convention: 1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL; pass "lungmask-lobes" for lungmask's).
    Returns (lungs, lobes or None). Raises InputError when the right lung does not lie on the patient's
    right of the left one (a convention mismatch) or nothing maps to a lung.
    """
    if isinstance(source, sitk.Image):
        image = source
    else:
        try:
            image = sitk.ReadImage(str(source))
        except RuntimeError as exc:
            raise CorruptFileError(f"cannot read lung labelmap {source}: {exc}") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"lung labelmap {source} has several components per voxel "
                         "(export a labelmap, not a multi-layer segmentation)")
    if image.GetDimension() == 2 and reference.GetDimension() == 3:
        image = sitk.JoinSeries(image)
    if convention == "auto":
        mapping = _convention_from_segment_names(image)
    elif convention in LABEL_CONVENTIONS:
        mapping = LABEL_CONVENTIONS[convention]
    else:
        raise InputError(f"unknown labelmap convention {convention!r}; "
                         f"use one of {sorted(LABEL_CONVENTIONS)} or 'auto'")
    resampled = sitk.Resample(sitk.Cast(image, sitk.sitkUInt16), reference, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    values = sitk.GetArrayFromImage(resampled)
    present = set(np.unique(values).tolist()) - {0}
    if mapping is None:
        if present <= {1, 2}:
            mapping = LABEL_CONVENTIONS["jcs-lungs"]
        elif present <= set(range(10, 15)):
            mapping = LABEL_CONVENTIONS["totalsegmentator"]
        elif present <= set(range(1, 6)):
            mapping = LABEL_CONVENTIONS["jcs-lobes"]
        else:
            raise InputError(f"lung labelmap {source}: cannot tell the label convention of values "
                             f"{sorted(present)[:10]}; pass one of {sorted(LABEL_CONVENTIONS)}")
    lut_lobe = np.zeros(int(values.max()) + 1, dtype=np.uint8)
    lut_lung = np.zeros(int(values.max()) + 1, dtype=np.uint8)
    has_lobes = False
    for value, (kind, label) in mapping.items():
        if value > values.max():
            continue
        if kind == "lobe":
            lut_lobe[value] = label
            lut_lung[value] = LOBE_SIDE[label]
            has_lobes = True
        else:
            lut_lung[value] = label
    lungs = lut_lung[values]
    if not lungs.any():
        raise InputError(f"lung labelmap {source}: no voxel maps to a lung on the CT grid "
                         "(wrong file, convention or geometry?)")
    _check_sides(lungs, f"lung labelmap {source}")
    lobes = lut_lobe[values] if has_lobes else None
    return lungs, lobes


def _check_sides(lungs: np.ndarray, what: str) -> None:
    """Raise when the right lung's centroid is not at smaller x (patient right in LPS) than the left's."""
    xs = {}
    for side in (RIGHT_LUNG, LEFT_LUNG):
        cols = np.nonzero(lungs == side)[-1]
        if len(cols):
            xs[side] = cols.mean()
    if len(xs) == 2 and xs[RIGHT_LUNG] >= xs[LEFT_LUNG]:
        raise InputError(f"{what}: the 'right' lung lies on the patient's left of the 'left' lung; "
                         "the label convention or orientation does not match")


class FoundLungs(NamedTuple):
    """Lung labels of a CT on its axial grid (0 outside, 1 right, 2 left) and why they are missing."""

    labels: np.ndarray
    problem: str | None = None


def find_lungs(ct: Any) -> FoundLungs:
    """The lungs of a :class:`jcs.io.CTVolume`: the one place a reading looks for them.

    When they are not found the labels are all zero and ``problem`` says why (``"lungs could not be
    segmented (...)"`` or ``"no lungs were found"``).
    """
    array = ct.axial_array()
    sx, sy, sz = (float(v) for v in ct.axial_image().GetSpacing())
    spacing_zyx = (sz, sy, sx)
    try:
        lungs = segment_lungs(array, spacing_zyx, is_hu=ct.is_hu)
    except InputError as exc:
        return FoundLungs(np.zeros(array.shape, dtype=np.uint8), f"lungs could not be segmented ({exc})")
    if not lungs.any():
        return FoundLungs(lungs, "no lungs were found")
    return FoundLungs(lungs)
