"""Synthetic chest CT phantom with analytically known lungs and lesions, for the whole test suite.

Everything is built in the *axial grid*: array axes (Z, Y, X) with +x towards the patient's left,
+y posterior, +z superior (DICOM LPS, identity direction), which is the grid of
`jcs.io.CTVolume.axial_image()`. The returned `Phantom.image` may be stored in another orientation
(`direction=`); `Phantom.axial_image` is the same voxels reoriented back to the axial grid, and every
truth array lines up voxel-for-voxel with it.

Contents (HU): outside air -1000, a CT table, body ellipse of soft tissue (40) with a fat rim (-100),
a spine (400), two ellipsoidal lungs (-850) with vessel-like dense dots (40), the trachea and both
main bronchi (air, -1000, with a soft-tissue wall) above the carina, and lesions: ground-glass
(default -450) or consolidation (default 20) spheres/ellipsoids. Gaussian noise (sigma 10 HU by
default) is added everywhere. Truth lung labels: 1 right lung, 2 left lung (vessels and lesions
included, airways outside the lungs excluded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

AIR_HU = -1000
LUNG_HU = -850
SOFT_TISSUE_HU = 40
FAT_HU = -100
BONE_HU = 400
TABLE_HU = 150
GGO_HU = -450
CONSOLIDATION_HU = 20

ZONES = ("lower", "middle", "upper")
SIDES = {"right": 1, "left": 2}


@dataclass
class LesionSpec:
    """One lesion to draw.

    Either give `center` (voxel indices z, y, x in the axial grid, may be fractional or lie outside the
    image to test clipping) or let the phantom place it from `side`, `zone` and `position`:
    "central" puts it at the lung's in-plane centre, "peripheral" at `depth_mm` inside the lateral
    lung surface, on the middle slice of the zone. `radius_mm` is a sphere radius or (rz, ry, rx).
    `kind` "ggo" or "consolidation" picks the default HU.
    """

    side: str = "right"
    zone: str = "middle"
    radius_mm: float | tuple[float, float, float] = 6.0
    kind: str = "ggo"
    hu: float | None = None
    position: str = "central"
    depth_mm: float = 6.0
    center: tuple[float, float, float] | None = None
    clip_to_lung: bool = True


@dataclass
class LesionTruth:
    """Truth of one drawn lesion (after clipping to the lung and the image)."""

    spec: LesionSpec
    label: int                      # value in Phantom.lesion_labels
    center_voxel: tuple[float, float, float]   # (z, y, x) axial grid
    radii_mm: tuple[float, float, float]       # (rz, ry, rx)
    side: str                      # lung holding the centre ("right"/"left"), from the truth lungs
    zone: str                      # zone of the centre slice within that lung's extent
    hu: float
    analytic_volume_ml: float      # 4/3 pi rz ry rx (before any clipping)
    voxel_volume_ml: float         # drawn voxels of this lesion x voxel volume (after clipping/overlaps)
    inside_image: bool             # the whole analytic ellipsoid lies inside the image


@dataclass
class Phantom:
    """A generated phantom. Arrays are (Z, Y, X) in the axial grid of `axial_image`."""

    image: sitk.Image               # HU int16, in the requested (possibly non-identity) geometry
    axial_image: sitk.Image         # the same voxels in the axial LPS grid
    lungs: np.ndarray               # uint8: 0 outside, 1 right lung, 2 left lung
    lesion_mask: np.ndarray         # uint8 0/1 union of all lesions
    lesion_labels: np.ndarray       # uint8: 0 or the LesionTruth.label that drew the voxel
    lesions: list[LesionTruth]
    body: np.ndarray                # bool body mask (table excluded)
    airways: np.ndarray             # bool trachea + main bronchi lumen
    spacing_zyx: tuple[float, float, float]
    lung_extent: dict[str, tuple[int, int]] = field(default_factory=dict)  # side -> (first, last) slice

    @property
    def hu(self) -> np.ndarray:
        """HU array (float32) in the axial grid."""
        return sitk.GetArrayFromImage(self.axial_image).astype(np.float32)

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL."""
        return float(np.prod(self.spacing_zyx)) / 1000.0


def zone_of_slice(z: float, first: int, last: int) -> str:
    """Zone of slice `z` in a lung spanning slices first..last: equal thirds of the extent."""
    n = last - first + 1
    third = int(np.clip(np.floor((z - first) * 3 / n), 0, 2))
    return ZONES[third]


def orientation_code(direction: tuple[float, ...]) -> str:
    """DICOM orientation code (e.g. "LPS", "RAS", "LIP") of a signed-permutation direction matrix."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    letters = ("RL", "AP", "IS")
    code = ""
    for j in range(3):
        i = int(np.argmax(np.abs(d[:, j])))
        if not np.isclose(abs(d[i, j]), 1.0) or np.count_nonzero(np.abs(d[:, j]) > 1e-6) != 1:
            raise ValueError(f"direction {direction} is not a signed permutation (oblique not supported)")
        code += letters[i][1] if d[i, j] > 0 else letters[i][0]
    return code


def _ellipsoid(shape: tuple[int, int, int], center: tuple[float, float, float],
               radii_vox: tuple[float, float, float]) -> np.ndarray:
    """Boolean ellipsoid of voxel centres within the given centre/radii (voxel units)."""
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (((zz - center[0]) / radii_vox[0]) ** 2 + ((yy - center[1]) / radii_vox[1]) ** 2
            + ((xx - center[2]) / radii_vox[2]) ** 2) <= 1.0


def make_chest_phantom(
    shape: tuple[int, int, int] = (48, 96, 96),
    spacing: tuple[float, float, float] = (2.5, 1.5, 1.5),
    lesions: list[LesionSpec] | None = None,
    seed: int = 0,
    direction: tuple[float, ...] | None = None,
    origin: tuple[float, float, float] | None = None,
    *,
    touching_lungs: bool = False,
    lung_z_range: tuple[float, float] = (0.06, 0.88),
    noise_hu: float = 10.0,
    n_vessels: int = 40,
    table: bool = True,
) -> Phantom:
    """Build a chest phantom.

    shape and spacing are (Z, Y, X) in voxels / mm of the axial grid. `lesions=None` draws two default
    lesions (right lower ground-glass, left upper consolidation); pass [] for none. `direction` is the
    stored image's 9-element signed-permutation direction (row-major, as SimpleITK); `origin` is the
    stored image's origin (mm, x y z). `touching_lungs` lets the lungs meet across the midline in front
    of the mediastinum. `lung_z_range` gives the lungs' first and last slice as fractions of Z (values
    outside 0..1 cut a lung at the image border).
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    sz, sy, sx = spacing
    zz, yy, xx = np.ogrid[:nz, :ny, :nx]

    # Body: ellipse (all slices), fat rim, spine; table below (posterior, +y) and apart from the body.
    cy, cx = ny * 0.47, nx * 0.5
    ry_b, rx_b = ny * 0.34, nx * 0.45
    r_body = ((yy - cy) / ry_b) ** 2 + ((xx - cx) / rx_b) ** 2
    body = np.broadcast_to(r_body <= 1.0, shape).copy()
    fat = np.broadcast_to((r_body <= 1.0) & (r_body > 0.85), shape)
    spine_y = cy + ry_b * 0.72
    spine = np.broadcast_to(((yy - spine_y) ** 2 + (xx - cx) ** 2) <= (nx * 0.06) ** 2, shape)

    hu = np.full(shape, float(AIR_HU), dtype=np.float32)
    hu[body] = SOFT_TISSUE_HU
    hu[fat] = FAT_HU
    hu[spine & body] = BONE_HU
    if table:
        ty = int(round(cy + ry_b + 3))
        if ty + 2 < ny:
            hu[:, ty : ty + 2, int(nx * 0.1) : int(nx * 0.9)] = TABLE_HU

    # Lungs: ellipsoids either side of the mediastinum; +x is patient left, so the right lung is at small x.
    z0, z1 = lung_z_range[0] * (nz - 1), lung_z_range[1] * (nz - 1)
    lz_c, lz_r = (z0 + z1) / 2, (z1 - z0) / 2
    ly_c, ly_r = cy - ny * 0.02, ry_b * 0.66
    lx_r = rx_b * 0.36
    gap = -0.25 * lx_r if touching_lungs else rx_b * 0.16
    centres = {"right": cx - gap / 2 - lx_r, "left": cx + gap / 2 + lx_r}
    lungs = np.zeros(shape, dtype=np.uint8)
    in_ellipsoid = np.zeros(shape, dtype=bool)
    for side, label in SIDES.items():
        ell = _ellipsoid(shape, (lz_c, ly_c, centres[side]), (lz_r, ly_r, lx_r)) & body
        in_ellipsoid |= ell
        half = (xx < cx) if side == "right" else (xx >= cx)
        lungs[ell & np.broadcast_to(half, shape)] = label
    # With touching lungs, the part where the ellipsoids overlap is split at the midline above.

    # Airways: trachea from the top slice down to the carina (it may cut through touching lungs), main
    # bronchi from the carina to each lung's hilum, ending open where they meet the lung.
    airways = np.zeros(shape, dtype=bool)
    walls = np.zeros(shape, dtype=bool)
    carina_z = lz_c + 0.45 * lz_r
    tr_y = ly_c - ly_r * 0.45
    lumen_r = max(1.2, 5.0 / sx)
    wall_r = lumen_r + max(1.0, 2.0 / sx)
    for z in range(nz):
        if z >= carina_z:
            pts = [(tr_y, cx)]
        else:
            # bronchi run caudally and laterally from the carina for ~1/4 of the lung's half height
            t = (carina_z - z) / (0.25 * lz_r)
            if t > 1.0:
                continue
            off = t * (gap / 2 + lx_r * 0.35)
            pts = [(tr_y, cx - off), (tr_y, cx + off)]
        for py, px in pts:
            d2 = (yy[0] - py) ** 2 + (xx[0] - px) ** 2
            wall = d2 <= wall_r**2
            lumen = d2 <= lumen_r**2
            if z < carina_z:
                wall &= ~in_ellipsoid[z]
                lumen &= ~in_ellipsoid[z]
            walls[z] |= wall
            airways[z] |= lumen
    lungs[walls] = 0
    hu[walls & body] = SOFT_TISSUE_HU
    lung_vox = lungs > 0
    hu[lung_vox] = LUNG_HU

    # Vessel-like dense dots (radius ~1.5 voxels) scattered inside the lungs, part of the lung truth.
    cand = np.argwhere(lung_vox)
    if len(cand) and n_vessels:
        for z, y, x in cand[rng.choice(len(cand), size=n_vessels, replace=False)]:
            sl = tuple(slice(max(0, c - 2), min(n, c + 3)) for c, n in zip((z, y, x), shape, strict=True))
            sub_z, sub_y, sub_x = np.ogrid[sl]
            d2 = ((sub_z - z) * sz) ** 2 + ((sub_y - y) * sy) ** 2 + ((sub_x - x) * sx) ** 2
            ball = d2 <= (1.5 * sx) ** 2
            region = hu[sl]
            region[ball & lung_vox[sl]] = SOFT_TISSUE_HU
    hu[airways] = AIR_HU

    extent = {}
    for side, label in SIDES.items():
        zs = np.flatnonzero((lungs == label).any(axis=(1, 2)))
        extent[side] = (int(zs[0]), int(zs[-1])) if len(zs) else (-1, -1)

    if lesions is None:
        lesions = [LesionSpec(side="right", zone="lower", radius_mm=7.0, kind="ggo"),
                   LesionSpec(side="left", zone="upper", radius_mm=5.0, kind="consolidation")]
    lesion_labels = np.zeros(shape, dtype=np.uint8)
    placed: list[tuple[LesionSpec, tuple[float, float, float], tuple[float, float, float], float]] = []
    for i, spec in enumerate(lesions, start=1):
        radii = (spec.radius_mm,) * 3 if np.isscalar(spec.radius_mm) else tuple(spec.radius_mm)
        center = spec.center if spec.center is not None else _place(spec, lungs, extent, radii,
                                                                     (lz_c, ly_c, centres), spacing)
        value = spec.hu if spec.hu is not None else (GGO_HU if spec.kind == "ggo" else CONSOLIDATION_HU)
        ell = _ellipsoid(shape, center, tuple(r / s for r, s in zip(radii, spacing, strict=True)))
        if spec.clip_to_lung:
            ell &= lung_vox
        lesion_labels[ell] = i
        placed.append((spec, center, radii, value))
    for i, (_spec, _c, _r, value) in enumerate(placed, start=1):
        hu[lesion_labels == i] = value

    hu += rng.normal(0.0, noise_hu, size=shape).astype(np.float32) if noise_hu > 0 else 0.0
    hu_i16 = np.clip(np.round(hu), -1024, 3071).astype(np.int16)

    voxel_ml = float(np.prod(spacing)) / 1000.0
    truths = []
    for i, (spec, center, radii, value) in enumerate(placed, start=1):
        ci = tuple(int(round(c)) for c in center)
        in_img = all(0 <= c < n for c, n in zip(ci, shape, strict=True))
        label = int(lungs[ci]) if in_img else 0
        side = {1: "right", 2: "left"}.get(label, spec.side)
        first, last = extent[side]
        lo = [c - r / s for c, r, s in zip(center, radii, spacing, strict=True)]
        hi = [c + r / s for c, r, s in zip(center, radii, spacing, strict=True)]
        truths.append(LesionTruth(
            spec=spec, label=i, center_voxel=tuple(float(c) for c in center), radii_mm=radii,
            side=side, zone=zone_of_slice(center[0], first, last), hu=float(value),
            analytic_volume_ml=4.0 / 3.0 * np.pi * float(np.prod(radii)) / 1000.0,
            voxel_volume_ml=float(np.count_nonzero(lesion_labels == i)) * voxel_ml,
            inside_image=all(a >= -0.5 and b <= n - 0.5 for a, b, n in zip(lo, hi, shape, strict=True)),
        ))

    axial = sitk.GetImageFromArray(hu_i16)
    axial.SetSpacing((sx, sy, sz))
    stored = axial if direction is None else sitk.DICOMOrient(axial, orientation_code(direction))
    if origin is not None:
        stored.SetOrigin(tuple(float(o) for o in origin))
    axial_img = sitk.DICOMOrient(stored, "LPS") if direction is not None else stored
    return Phantom(
        image=stored, axial_image=axial_img, lungs=lungs, lesion_mask=(lesion_labels > 0).astype(np.uint8),
        lesion_labels=lesion_labels, lesions=truths, body=body, airways=airways, spacing_zyx=tuple(spacing),
        lung_extent=extent,
    )


def _place(spec: LesionSpec, lungs: np.ndarray, extent: dict[str, tuple[int, int]],
           radii: tuple[float, float, float], lung_geom: tuple, spacing: tuple[float, float, float],
           ) -> tuple[float, float, float]:
    """Centre (z, y, x voxels) of a lesion placed by side/zone/position."""
    if spec.side not in SIDES or spec.zone not in ZONES:
        raise ValueError(f"bad lesion side/zone {spec.side!r}/{spec.zone!r}")
    first, last = extent[spec.side]
    n = last - first + 1
    k = ZONES.index(spec.zone)
    z = first + (k + 0.5) * n / 3.0 - 0.5
    z = float(np.round(z))
    _, ly_c, centres = lung_geom
    x_c = centres[spec.side]
    if spec.position == "central":
        return (z, float(ly_c), float(x_c))
    if spec.position != "peripheral":
        raise ValueError(f"bad lesion position {spec.position!r}")
    row = lungs[int(z), int(round(ly_c))] == SIDES[spec.side]
    xs = np.flatnonzero(row)
    # lateral edge: small x for the right lung, large x for the left lung (edge of the last voxel)
    if spec.side == "right":
        x = xs[0] - 0.5 + spec.depth_mm / spacing[2]
    else:
        x = xs[-1] + 0.5 - spec.depth_mm / spacing[2]
    return (z, float(ly_c), float(x))


def margin_case(seed: int = 5) -> tuple[Any, np.ndarray, tuple[int, int, int]]:
    """A 16-slice phantom CT (a ``jcs.io.CTVolume``) with two 3×3 predicted blobs on one slice: one in
    the right lung (its centre returned) and one in the body wall far below the lungs (for the
    lung-margin filter)."""
    from pathlib import Path

    from jcs.io import CTVolume

    phantom = make_chest_phantom(shape=(16, 96, 96), seed=seed)
    ct = CTVolume(image=phantom.image, is_hu=True, path=Path("phantom.nrrd"))
    lesion = np.zeros(phantom.lungs.shape, np.uint8)
    right = np.argwhere(phantom.lungs == 1)
    z, y, x = (int(v) for v in right[len(right) // 2])
    lesion[z, y - 1 : y + 2, x - 1 : x + 2] = 1
    lesion[z, 90:93, 45:48] = 1  # body wall, far below the lungs
    assert not phantom.lungs[z, 90:93, 45:48].any()
    return ct, lesion, (z, y, x)
