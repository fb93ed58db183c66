"""jcs.lung: lung masks from HU and 8-bit images, zones, external labelmaps (phantoms + real slices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from jcs.errors import InputError
from jcs.io import CTVolume, read_ct
from jcs.lung import (
    LEFT_LUNG,
    RIGHT_LUNG,
    lobes_to_lungs,
    lung_zones,
    near_lungs,
    read_lung_labelmap,
    segment_lungs,
)
from jcs.preprocess import window_to_uint8
from phantoms import LesionSpec, make_chest_phantom, orientation_code

# a coronal-stored, flipped direction (rows: x, y, z of each index axis' direction cosines)
PERMUTED = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def assert_lungs_match(labels: np.ndarray, truth: np.ndarray, minimum: float = 0.98) -> None:
    for side in (RIGHT_LUNG, LEFT_LUNG):
        assert dice(labels == side, truth == side) >= minimum, side
    # never swapped: the right lung (1) lies at smaller x (patient right in LPS)
    xr = np.nonzero(labels == RIGHT_LUNG)[-1].mean()
    xl = np.nonzero(labels == LEFT_LUNG)[-1].mean()
    assert xr < xl


def test_phantom_lungs_dice_and_sides() -> None:
    p = make_chest_phantom()
    labels = segment_lungs(p.hu, p.spacing_zyx)
    assert labels.dtype == np.uint8 and labels.shape == p.lungs.shape
    assert set(np.unique(labels)) == {0, 1, 2}
    assert_lungs_match(labels, p.lungs)
    assert not np.any(labels[~p.body])  # outside air and the table are not lung


def test_touching_lungs_are_split_at_the_junction() -> None:
    p = make_chest_phantom(touching_lungs=True)
    # the truth lungs do touch: some slice has right and left voxels in adjacent columns
    touching = np.any((p.lungs[:, :, :-1] == RIGHT_LUNG) & (p.lungs[:, :, 1:] == LEFT_LUNG))
    assert touching
    labels = segment_lungs(p.hu, p.spacing_zyx)
    assert_lungs_match(labels, p.lungs)


def test_airways_are_removed() -> None:
    p = make_chest_phantom()
    outside_lung_airway = p.airways
    assert not np.any(p.lungs[p.airways])
    labels = segment_lungs(p.hu, p.spacing_zyx)
    assert np.count_nonzero(labels[outside_lung_airway]) <= 0.05 * np.count_nonzero(outside_lung_airway)
    # the trachea above the lungs is never lung
    top = p.lung_extent["right"][1] + 1
    assert not labels[top:].any()


def test_vessels_and_dense_lesions_count_as_lung() -> None:
    lesions = [LesionSpec(side="right", zone="middle", radius_mm=8.0, kind="consolidation"),
               LesionSpec(side="left", zone="lower", radius_mm=6.0, kind="consolidation",
                          position="peripheral", depth_mm=5.0)]
    p = make_chest_phantom(lesions=lesions, n_vessels=80)
    labels = segment_lungs(p.hu, p.spacing_zyx)
    central = p.lesion_labels == 1
    assert np.all(labels[central] == RIGHT_LUNG)
    peripheral = p.lesion_labels == 2
    assert np.count_nonzero(labels[peripheral] == LEFT_LUNG) >= 0.95 * np.count_nonzero(peripheral)
    assert_lungs_match(labels, p.lungs)


def test_lungs_cut_at_the_image_border() -> None:
    p = make_chest_phantom(lung_z_range=(-0.1, 0.8))
    assert p.lungs[0].any()
    labels = segment_lungs(p.hu, p.spacing_zyx)
    assert_lungs_match(labels, p.lungs)


def test_anisotropic_non_identity_direction_through_ctvolume() -> None:
    p = make_chest_phantom(shape=(30, 112, 96), spacing=(4.0, 1.2, 1.6), direction=PERMUTED,
                           origin=(-40.0, 12.0, 300.0))
    assert orientation_code(p.image.GetDirection()) != "LPS"
    ct = CTVolume(image=p.image, is_hu=True, path=Path("phantom.nrrd"))
    sx, sy, sz = ct.axial_image().GetSpacing()
    labels = segment_lungs(ct.axial_array(), (sz, sy, sx))
    assert_lungs_match(labels, p.lungs)
    back = sitk.GetArrayFromImage(ct.from_axial(labels))
    truth_back = sitk.GetArrayFromImage(ct.from_axial(p.lungs))
    assert dice(back == RIGHT_LUNG, truth_back == RIGHT_LUNG) >= 0.98


def test_large_slices_use_the_working_grid_and_refine() -> None:
    p = make_chest_phantom(shape=(12, 320, 320), spacing=(5.0, 0.6, 0.6), n_vessels=20)
    labels = segment_lungs(p.hu, p.spacing_zyx)
    assert_lungs_match(labels, p.lungs, 0.985)


def test_8bit_single_slice() -> None:
    p = make_chest_phantom()
    z = (p.lung_extent["right"][0] + p.lung_extent["right"][1]) // 2
    img = window_to_uint8(p.hu[z])
    labels = segment_lungs(img, (1.5, 1.5), is_hu=False)
    assert labels.shape == img.shape
    assert_lungs_match(labels, p.lungs[z], 0.97)


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match="NaN"):
        segment_lungs(np.full((2, 32, 32), np.nan, dtype=np.float32), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="16x16"):
        segment_lungs(np.zeros((2, 8, 8), dtype=np.float32), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        segment_lungs(np.zeros((2, 32, 32), dtype=np.float32), (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="constant"):
        segment_lungs(np.zeros((32, 32), dtype=np.uint8), (1.0, 1.0), is_hu=False)


def test_no_lungs_gives_empty_labels() -> None:
    hu = np.full((4, 40, 40), 40.0, dtype=np.float32)
    hu[:, :, :3] = -1000.0
    assert not segment_lungs(hu, (1.0, 1.0, 1.0)).any()


def test_zones_are_thirds_of_each_lungs_extent() -> None:
    lungs = np.zeros((12, 4, 4), dtype=np.uint8)
    lungs[0:9, :, :2] = RIGHT_LUNG   # 9 slices: 0-2 lower, 3-5 middle, 6-8 upper
    lungs[3:9, :, 2:] = LEFT_LUNG    # 6 slices: 3-4 lower, 5-6 middle, 7-8 upper
    zones = lung_zones(lungs)
    assert zones[0:3, 0, 0].tolist() == [3, 3, 3]
    assert zones[3:6, 0, 0].tolist() == [2, 2, 2]
    assert zones[6:9, 0, 0].tolist() == [1, 1, 1]
    assert zones[3:9, 0, 3].tolist() == [6, 6, 5, 5, 4, 4]
    assert not zones[9:].any() and not zones[0:3, :, 2:].any()


def _lobe_phantom() -> tuple[sitk.Image, np.ndarray]:
    """Axial reference image and a lobe labelmap (ours) split in thirds/halves of each truth lung."""
    p = make_chest_phantom(lesions=[])
    lobes = np.zeros_like(p.lungs)
    zones = lung_zones(p.lungs)
    lobes[zones == 1], lobes[zones == 2], lobes[zones == 3] = 1, 2, 3
    lobes[(zones == 4) | (zones == 5)], lobes[zones == 6] = 4, 5
    return p.axial_image, lobes


def _image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def test_read_labelmap_conventions(tmp_path: Path) -> None:
    ref, lobes = _lobe_phantom()
    ts = np.zeros_like(lobes)
    for ours, theirs in {1: 12, 2: 13, 3: 14, 4: 10, 5: 11}.items():
        ts[lobes == ours] = theirs
    # stored in another orientation: read_lung_labelmap resamples onto the axial grid
    path = tmp_path / "ts.nii.gz"
    sitk.WriteImage(sitk.DICOMOrient(_image_like(ts, ref), orientation_code(PERMUTED)), str(path))
    lungs, got = read_lung_labelmap(path, ref)
    assert np.array_equal(got, lobes)
    assert np.array_equal(lungs, lobes_to_lungs(lobes))

    lungmask = np.zeros_like(lobes)
    for ours, theirs in {1: 3, 2: 4, 3: 5, 4: 1, 5: 2}.items():
        lungmask[lobes == ours] = theirs
    _, got = read_lung_labelmap(_image_like(lungmask, ref), ref, "lungmask-lobes")
    assert np.array_equal(got, lobes)
    _, got = read_lung_labelmap(_image_like(lobes, ref), ref)  # 1..5 defaults to ours
    assert np.array_equal(got, lobes)

    lungs, got = read_lung_labelmap(_image_like(lobes_to_lungs(lobes), ref), ref)
    assert got is None and np.array_equal(lungs, lobes_to_lungs(lobes))


def test_read_labelmap_slicer_segment_names(tmp_path: Path) -> None:
    ref, lobes = _lobe_phantom()
    values = {1: 7, 2: 3, 3: 9, 4: 1, 5: 5}   # arbitrary label values, meaning only from the names
    names = {1: "right upper lobe", 2: "Right middle lobe", 3: "lung_lower_lobe_right",
             4: "left upper lobe", 5: "Left lower lobe"}
    arr = np.zeros_like(lobes)
    for ours, value in values.items():
        arr[lobes == ours] = value
    data = _image_like(arr, ref)
    for i, (ours, value) in enumerate(values.items()):
        data.SetMetaData(f"Segment{i}_Name", names[ours])
        data.SetMetaData(f"Segment{i}_LabelValue", str(value))
    path = tmp_path / "lobes.seg.nrrd"
    sitk.WriteImage(data, str(path))
    _, got = read_lung_labelmap(path, ref)
    assert np.array_equal(got, lobes)


def test_read_labelmap_errors(tmp_path: Path) -> None:
    ref, lobes = _lobe_phantom()
    lungs = lobes_to_lungs(lobes)
    swapped = np.where(lungs == 1, 2, np.where(lungs == 2, 1, 0)).astype(np.uint8)
    with pytest.raises(InputError, match="patient's left"):
        read_lung_labelmap(_image_like(swapped, ref), ref)
    with pytest.raises(InputError, match="convention"):
        read_lung_labelmap(_image_like((lobes * 7).astype(np.uint8), ref), ref)
    with pytest.raises(InputError, match="unknown labelmap convention"):
        read_lung_labelmap(_image_like(lobes, ref), ref, "nonsense")
    with pytest.raises(InputError, match="no voxel"):
        read_lung_labelmap(_image_like(np.zeros_like(lobes), ref), ref)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        read_lung_labelmap(bad, ref)


def test_real_8bit_slices(shared_data: Path, artifacts_dir: Path) -> None:
    """Lung masks on real pre-windowed slices (every 8th of 80): both lungs found, lesions inside."""
    from skimage.io import imsave

    images = sorted((shared_data / "covid19-ct100" / "images").glob("*.png"))[::8]
    assert len(images) == 10
    inside = total = 0
    tiles = []
    for path in images:
        ct = read_ct(path)
        img = ct.axial_array()[0]
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(path.parent.parent / "masks" / path.name)))
        mask = (mask.max(axis=-1) if mask.ndim == 3 else mask) > 0
        labels = segment_lungs(img, (1.0, 1.0), is_hu=False)
        assert np.count_nonzero(labels == RIGHT_LUNG) > 0.002 * img.size, path.name
        assert np.count_nonzero(labels == LEFT_LUNG) > 0.002 * img.size, path.name
        inside += np.count_nonzero(mask & (labels > 0))
        total += np.count_nonzero(mask)
        rgb = np.repeat(img[..., None], 3, axis=-1).astype(np.float32)
        for side, colour in ((RIGHT_LUNG, (0, 0, 110)), (LEFT_LUNG, (0, 110, 0))):
            rgb[labels == side] = rgb[labels == side] * 0.6 + np.array(colour)
        rgb[mask & (labels == 0)] = (255, 0, 0)
        tiles.append(rgb[::2, ::2].clip(0, 255).astype(np.uint8))
    rows = [np.concatenate(tiles[i : i + 5], axis=1) for i in range(0, 10, 5)]
    imsave(artifacts_dir / "lung_masks_ct100.png", np.concatenate(rows, axis=0), check_contrast=False)
    print(f"lesion pixels inside the lung mask: {inside / total:.3f}")
    assert inside / total >= 0.75


@pytest.mark.slow
def test_real_ct_volume_airways_and_sides(shared_data: Path, artifacts_dir: Path) -> None:
    """COVID-CT-MD P001 (148 DICOM slices): plausible lung volumes, sides, trachea left out."""
    from scipy import ndimage as ndi
    from skimage.io import imsave

    ct = read_ct(shared_data / "covid-ct-md" / "P001")
    hu = ct.axial_array()
    sx, sy, sz = ct.axial_image().GetSpacing()
    labels = segment_lungs(hu, (sz, sy, sx))
    ml = sx * sy * sz / 1000.0
    for side in (RIGHT_LUNG, LEFT_LUNG):
        assert 2000 < np.count_nonzero(labels == side) * ml < 4500
    xs = {side: np.nonzero(labels == side)[2].mean() for side in (RIGHT_LUNG, LEFT_LUNG)}
    assert xs[RIGHT_LUNG] < xs[LEFT_LUNG]
    # midline air components of 150-600 mm^2 in the top slice
    top = hu.shape[0] - 1
    lumen, n = ndi.label(ndi.uniform_filter(hu[top], 3) < -900)
    sizes = np.bincount(lumen.ravel())
    centres = ndi.center_of_mass(np.ones_like(lumen), lumen, range(1, n + 1))
    candidates = [i for i in range(1, n + 1)
                  if 150 <= sizes[i] * sx * sy <= 600 and abs(centres[i - 1][1] - hu.shape[2] / 2) < 40]
    assert candidates   # the trachea (and the oesophagus when it holds air): none of it is lung
    yy, xx = np.ogrid[: hu.shape[1], : hu.shape[2]]
    for i in candidates:
        cy, cx = centres[i - 1]
        disc = ((yy - cy) * sy) ** 2 + ((xx - cx) * sx) ** 2 <= 8.0**2
        assert not labels[top - 9 :, disc].any()
    z = top - 20
    rgb = np.repeat(window_to_uint8(hu[z])[..., None], 3, axis=-1).astype(np.float32)
    for side, colour in ((RIGHT_LUNG, (0, 0, 110)), (LEFT_LUNG, (0, 110, 0))):
        rgb[labels[z] == side] = rgb[labels[z] == side] * 0.6 + np.array(colour)
    overlay = rgb.clip(0, 255).astype(np.uint8)
    imsave(artifacts_dir / "lung_mask_P001_upper.png", overlay, check_contrast=False)


def test_near_lungs_is_the_millimetre_distance_band() -> None:
    lungs = np.zeros((12, 40, 40), np.uint8)
    lungs[5:7, 18:22, 10:14] = 1
    spacing = (3.0, 0.8, 1.2)
    near = near_lungs(lungs, spacing, 6.0)
    z, y, x = np.indices(lungs.shape)
    points = np.argwhere(lungs > 0)
    distance = np.full(lungs.shape, np.inf)
    for pz, py, px in points:
        offsets = ((z - pz) * spacing[0], (y - py) * spacing[1], (x - px) * spacing[2])
        distance = np.minimum(distance, np.sqrt(sum(o**2 for o in offsets)))
    np.testing.assert_array_equal(near, distance <= 6.0)
    assert not near_lungs(np.zeros_like(lungs), spacing, 6.0).any()
