"""Tests of jcs.io: every input format, the axial grid and its inverse, and every refused input."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_writer import IDENTITY, rotate_direction, write_ct_series
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
from jcs.io import read_ct
from phantoms import make_chest_phantom

SHAPE = (34, 72, 96)  # (Z, Y, X): distinct sizes so a swapped axis cannot go unnoticed; a field of
# view (72 x 58 mm, 68 mm along z for sagittal and coronal stacks) above jcs.validate.MIN_FOV_MM
SPACING_XYZ = (0.75, 0.8, 2.0)
ORIGIN = (-12.5, -30.0, 40.0)
# Signed permutations (row-major, as SimpleITK): LPS, RAS (NIfTI-like), a superior-to-inferior stack,
# sagittal and coronal stacks.
DIRECTIONS = {
    "LPS": IDENTITY,
    "RAS": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
    "LPI": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, -1.0, 0.0),
}


@pytest.fixture(scope="module")
def phantom_hu() -> np.ndarray:
    """A small chest phantom in HU, (Z, Y, X) int16."""
    phantom = make_chest_phantom(shape=SHAPE, spacing=(2.0, 0.8, 0.75), lesions=[], n_vessels=5, seed=1)
    return sitk.GetArrayFromImage(phantom.image).astype(np.int16)


def _image(array: np.ndarray, direction=IDENTITY, spacing=SPACING_XYZ, origin=ORIGIN) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


# ---------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_volume_formats_keep_values_and_geometry(tmp_path: Path, phantom_hu: np.ndarray, suffix: str) -> None:
    path = tmp_path / f"ct{suffix}"
    original = _image(phantom_hu)
    sitk.WriteImage(original, str(path), useCompression=suffix != ".nii")
    ct = read_ct(path)
    assert ct.is_hu and ct.path == path and ct.dicom_files is None and not ct.is_2d
    _assert_same_geometry(ct.image, original)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ct.image), phantom_hu)
    axial = ct.axial_array()
    assert axial.dtype == np.float32 and axial.shape == SHAPE
    np.testing.assert_array_equal(axial, phantom_hu)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_axial_grid_and_from_axial_round_trip(tmp_path: Path, phantom_hu: np.ndarray, name: str) -> None:
    """Any axis-aligned orientation is reoriented to LPS and maps back voxel for voxel."""
    path = tmp_path / "ct.nrrd"
    original = _image(phantom_hu, DIRECTIONS[name])
    sitk.WriteImage(original, str(path))
    ct = read_ct(path)
    axial = ct.axial_image()
    np.testing.assert_allclose(axial.GetDirection(), IDENTITY, atol=1e-9)
    # The same physical point holds the same value in both grids.
    rng = np.random.default_rng(0)
    for index in zip(*(rng.integers(0, n, 20) for n in original.GetSize()), strict=True):
        index = tuple(int(i) for i in index)
        point = original.TransformIndexToPhysicalPoint(index)
        assert axial[axial.TransformPhysicalPointToIndex(point)] == original[index]
    back = ct.from_axial(ct.axial_array())
    _assert_same_geometry(back, ct.image)
    assert back.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), phantom_hu)
    labels = ct.from_axial(ct.axial_array() > -500)  # bool arrays come back as uint8
    assert labels.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(labels), phantom_hu > -500)


def test_axial_array_orientation_ras(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    """A RAS volume (x to the patient's right, y anterior) comes out flipped in x and y."""
    path = tmp_path / "ras.nii.gz"
    sitk.WriteImage(_image(phantom_hu, DIRECTIONS["RAS"]), str(path))
    np.testing.assert_array_equal(read_ct(path).axial_array(), phantom_hu[:, ::-1, ::-1])


def test_from_axial_refuses_wrong_shape(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    path = tmp_path / "ct.mha"
    sitk.WriteImage(_image(phantom_hu), str(path))
    with pytest.raises(InputError, match="does not match the axial grid"):
        read_ct(path).from_axial(np.zeros((2, 3, 4), np.uint8))


def test_png_grey_and_rgb(tmp_path: Path) -> None:
    grey = (np.arange(40 * 50).reshape(40, 50) % 251).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "grey.png"))
    ct = read_ct(tmp_path / "grey.png")
    assert not ct.is_hu and ct.is_2d and ct.image.GetDimension() == 2
    axial = ct.axial_array()
    assert axial.dtype == np.uint8 and axial.shape == (1, 40, 50)
    np.testing.assert_array_equal(axial[0], grey)
    back = ct.from_axial(axial)
    assert back.GetDimension() == 2
    _assert_same_geometry(back, ct.image)

    # A grey slice saved as RGB (channels within a few levels): converted with the luma weights.
    rgb = np.stack([grey, np.clip(grey.astype(int) + 3, 0, 255).astype(np.uint8), grey], axis=-1)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.png"))
    expected = np.rint(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
    np.testing.assert_array_equal(read_ct(tmp_path / "rgb.png").axial_array()[0], expected)
    # A colour picture is not a CT slice.
    colour = np.stack([grey, 255 - grey, np.full_like(grey, 7)], axis=-1)
    sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(tmp_path / "colour.png"))
    with pytest.raises(NotCTError, match=r"colour.png: a colour image \(\d+ % of its pixels"):
        read_ct(tmp_path / "colour.png")


def test_jpeg_reads_as_8bit(tmp_path: Path) -> None:
    grey = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "slice.jpg"))
    ct = read_ct(tmp_path / "slice.jpg")
    assert not ct.is_hu and ct.axial_array().shape == (1, 48, 64)
    assert np.abs(ct.axial_array()[0].astype(int) - grey).max() <= 8  # lossy, but the same picture


# ---------------------------------------------------------------------------------------------- DICOM


def test_dicom_series_reads_with_geometry_and_file_order(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    files = write_ct_series(phantom_hu, SPACING_XYZ, ORIGIN, IDENTITY, tmp_path / "series")
    (tmp_path / "series" / "notes.txt").write_text("not DICOM, ignored")
    ct = read_ct(tmp_path / "series", allow_2d=False)
    assert ct.is_hu and ct.image.GetPixelID() == sitk.sitkInt16
    _assert_same_geometry(ct.image, _image(phantom_hu))
    np.testing.assert_array_equal(ct.axial_array(), phantom_hu)
    assert ct.dicom_files == files
    assert ct.series_instance_uid == pydicom.dcmread(files[0]).SeriesInstanceUID
    assert ct.skipped_series == []


def test_dicom_series_superior_to_inferior(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    """Slices stored top-down with flipped rows: axial slice 0 is the most inferior file."""
    direction = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0)
    write_ct_series(phantom_hu, SPACING_XYZ, ORIGIN, direction, tmp_path)
    ct = read_ct(tmp_path)
    np.testing.assert_array_equal(ct.axial_array(), phantom_hu[::-1, ::-1, :])
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in ct.dicom_files]
    assert z == sorted(z) and len(z) == SHAPE[0]
    axial = ct.axial_image()
    for k, zk in enumerate(z):
        assert axial.TransformIndexToPhysicalPoint((0, 0, k))[2] == pytest.approx(zk)


def test_dicom_picks_largest_ct_series(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    big = write_ct_series(phantom_hu, SPACING_XYZ, ORIGIN, IDENTITY, tmp_path / "a", uid_seed="big")
    write_ct_series(phantom_hu[:4], SPACING_XYZ, ORIGIN, IDENTITY, tmp_path / "b", uid_seed="small",
                    series_number=2, series_description="thin part")  # fmt: skip
    write_ct_series(phantom_hu, SPACING_XYZ, ORIGIN, IDENTITY, tmp_path / "c", uid_seed="mr",
                    series_number=3, modality="MR")  # fmt: skip
    ct = read_ct(tmp_path)
    assert ct.dicom_files == big
    assert len(ct.skipped_series) == 2
    assert any("CT 'thin part', 4 files" in s for s in ct.skipped_series)
    assert any("(MR" in s for s in ct.skipped_series)


def test_dicom_writer_output_passes_dciodvfy(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    files = write_ct_series(phantom_hu[:2], SPACING_XYZ, ORIGIN, IDENTITY, tmp_path)
    result = subprocess.run([dciodvfy, str(files[0])], capture_output=True, text=True, timeout=60)
    report = result.stdout + result.stderr
    assert "CTImage" in report
    assert "Error" not in report, report


def test_single_dicom_file(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    files = write_ct_series(phantom_hu, SPACING_XYZ, ORIGIN, IDENTITY, tmp_path)
    ct = read_ct(files[3])
    assert ct.is_hu and ct.is_2d and ct.dicom_files == [files[3]]
    np.testing.assert_array_equal(ct.axial_array()[0], phantom_hu[3])
    with pytest.raises(NotVolumeError, match="single slice"):
        read_ct(files[3], allow_2d=False)


def test_dicom_without_preamble_or_suffix(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    """Old exports: extensionless files holding implicit-VR data sets without the DICM preamble."""
    files = write_ct_series(phantom_hu, SPACING_XYZ, ORIGIN, IDENTITY, tmp_path / "part10")
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for k, file in enumerate(reversed(files)):
        ds = pydicom.dcmread(file)
        del ds.file_meta
        ds.preamble = None
        ds.save_as(raw_dir / f"IM{k}", enforce_file_format=False, implicit_vr=True, little_endian=True)
    (raw_dir / "LICENSE").write_text("plain text beside the images")
    ct = read_ct(raw_dir)
    np.testing.assert_array_equal(ct.axial_array(), phantom_hu)
    assert [p.name for p in ct.dicom_files] == [f"IM{k}" for k in reversed(range(SHAPE[0]))]


def _multiframe(tmp_path: Path, phantom_hu: np.ndarray, **knobs) -> Path:
    """An Enhanced (legacy converted) multi-frame CT of the phantom, built with highdicom."""
    highdicom = pytest.importorskip("highdicom")
    files = write_ct_series(phantom_hu, SPACING_XYZ, ORIGIN, IDENTITY, tmp_path / "frames", **knobs)
    image = highdicom.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in files], series_instance_uid=highdicom.UID(), series_number=7,
        sop_instance_uid=highdicom.UID(), instance_number=1,
    )  # fmt: skip
    path = tmp_path / "multiframe" / "enhanced.dcm"
    path.parent.mkdir()
    image.save_as(path)
    return path


def test_multiframe_ct(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    path = _multiframe(tmp_path, phantom_hu)
    for source in (path, path.parent):
        ct = read_ct(source, allow_2d=False)
        assert not ct.is_2d and ct.dicom_files == [path] and ct.path == source
        np.testing.assert_array_equal(ct.axial_array(), phantom_hu)
        np.testing.assert_allclose(ct.axial_image().GetOrigin(), ORIGIN)


def test_multiframe_ct_with_a_gap(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    with pytest.raises(SliceSpacingError, match="enhanced.dcm: 1 slice\\(s\\) missing"):
        read_ct(_multiframe(tmp_path, phantom_hu, drop_slices=[5]))


def test_dicom_folder_with_one_slice_or_only_localizers(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    write_ct_series(phantom_hu[:1], SPACING_XYZ, ORIGIN, IDENTITY, tmp_path / "one")
    ct = read_ct(tmp_path / "one")
    assert ct.is_2d and ct.path == tmp_path / "one" and len(ct.dicom_files) == 1
    with pytest.raises(NotVolumeError, match="one: a single slice"):
        read_ct(tmp_path / "one", allow_2d=False)
    write_ct_series(phantom_hu[:3], SPACING_XYZ, ORIGIN, IDENTITY, tmp_path / "scout",
                    image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))  # fmt: skip
    with pytest.raises(NotVolumeError, match="only localizer"):
        read_ct(tmp_path / "scout")


TILTED = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.2, 0.98)  # stack axis not perpendicular to the slices


@pytest.mark.parametrize(
    ("knobs", "error", "message"),
    [
        ({"drop_slices": [4]}, SliceSpacingError, "1 slice\\(s\\) missing between positions"),
        ({"position_offsets_mm": {4: 0.6}}, SliceSpacingError, "non-uniform slice spacing"),
        ({"direction": rotate_direction(IDENTITY, 12.0)}, ObliqueSeriesError, "oblique series"),
        ({"direction": rotate_direction(IDENTITY, 90.0)}, ObliqueSeriesError, "coronal series"),
        ({"direction": rotate_direction(IDENTITY, 90.0, "y")}, ObliqueSeriesError, "sagittal series"),
        ({"direction": TILTED}, ObliqueSeriesError, "gantry tilt"),
        ({"modality": "MR"}, NotCTError, "no CT series.*MR"),
        ({"resize_slices": [2]}, MixedSeriesError, "different sizes"),
        ({"truncate_slices": [5]}, CorruptFileError, "CT001_0005.dcm: truncated"),
    ],
)
def test_bad_dicom_series_are_refused(tmp_path: Path, phantom_hu: np.ndarray, knobs, error, message) -> None:
    direction = knobs.pop("direction", IDENTITY)
    write_ct_series(phantom_hu, SPACING_XYZ, ORIGIN, direction, tmp_path, **knobs)
    with pytest.raises(error, match=message):
        read_ct(tmp_path)


def test_duplicate_positions_are_mixed(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    write_ct_series(phantom_hu, SPACING_XYZ, ORIGIN, IDENTITY, tmp_path, file_prefix="A")
    write_ct_series(phantom_hu, SPACING_XYZ, ORIGIN, IDENTITY, tmp_path, file_prefix="B")
    with pytest.raises(MixedSeriesError, match="same position"):
        read_ct(tmp_path)


def test_truncated_header_and_garbage_dicom(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    files = write_ct_series(phantom_hu[:3], SPACING_XYZ, ORIGIN, IDENTITY, tmp_path / "series")
    files[1].write_bytes(files[1].read_bytes()[:400])
    with pytest.raises(CorruptFileError, match="CT001_0001.dcm"):
        read_ct(tmp_path / "series")
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 50)
    with pytest.raises(CorruptFileError, match="junk.dcm"):
        read_ct(tmp_path / "junk.dcm")


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(InputError, match="no DICOM image files"):
        read_ct(tmp_path)


# ---------------------------------------------------------------------------------------------- bad files


def _write(tmp_path: Path, array: np.ndarray, name: str = "ct.nrrd", direction=IDENTITY) -> Path:
    path = tmp_path / name
    sitk.WriteImage(_image(array, direction), str(path))
    return path


def test_nan_inf_constant_and_empty(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    with_nan = phantom_hu.astype(np.float32)
    with_nan[2, 3, 4] = np.nan
    with pytest.raises(EmptyImageError, match="NaN or infinite"):
        read_ct(_write(tmp_path, with_nan, "nan.nrrd"))
    with_inf = phantom_hu.astype(np.float32)
    with_inf[0, 0, 0] = np.inf
    with pytest.raises(EmptyImageError, match="NaN or infinite"):
        read_ct(_write(tmp_path, with_inf, "inf.nrrd"))
    with pytest.raises(EmptyImageError, match="constant"):
        read_ct(_write(tmp_path, np.full(SHAPE, -1000, np.int16), "flat.nrrd"))


@pytest.mark.parametrize(
    "make",
    [
        lambda hu: (hu + 1024).astype(np.uint16),  # stored values without rescale: air = 0
        lambda hu: np.clip(hu + 1000, 0, 3000).astype(np.float32) / 3,  # MR-like positive intensities
        lambda hu: (hu.astype(np.float32) * 40),  # 99th percentile far above bone
    ],
)
def test_implausible_hu_range_is_not_ct(tmp_path: Path, phantom_hu: np.ndarray, make) -> None:
    with pytest.raises(NotCTError, match="do not look like CT Hounsfield units"):
        read_ct(_write(tmp_path, make(phantom_hu)))


def test_oblique_volume_file(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    path = _write(tmp_path, phantom_hu, "oblique.nii.gz", rotate_direction(IDENTITY, 20.0, "z"))
    with pytest.raises(ObliqueSeriesError, match="oblique.*20.0 degrees"):
        read_ct(path)
    slight = _write(tmp_path, phantom_hu, "slight.nii.gz", rotate_direction(IDENTITY, 0.3, "z"))
    ct = read_ct(slight)  # within MAX_OBLIQUE_DEG: kept as is, still maps back voxel for voxel
    _assert_same_geometry(ct.from_axial(ct.axial_array()), ct.image)


def test_2d_where_3d_needed(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    single = _write(tmp_path, phantom_hu[4:5], "one.nrrd")
    assert read_ct(single).is_2d
    with pytest.raises(NotVolumeError, match="one.nrrd: a single slice"):
        read_ct(single, allow_2d=False)
    png = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(64, dtype=np.uint8).reshape(8, 8)), str(png))
    with pytest.raises(NotVolumeError, match="slice.png: a 2-D image"):
        read_ct(png, allow_2d=False)


def test_corrupt_truncated_and_unsupported_files(tmp_path: Path, phantom_hu: np.ndarray) -> None:
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not an image" * 10)
    with pytest.raises(CorruptFileError, match="garbage.nii.gz: cannot read"):
        read_ct(garbage)
    path = _write(tmp_path, phantom_hu, "cut.mha")
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(CorruptFileError, match="cut.mha"):
        read_ct(path)
    with pytest.raises(CorruptFileError, match="no such file"):
        read_ct(tmp_path / "missing.nrrd")
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="table.csv: unsupported file type"):
        read_ct(tmp_path / "table.csv")
    sixteen = tmp_path / "sixteen.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000), str(sixteen))
    with pytest.raises(InputError, match="only 8-bit images"):
        read_ct(sixteen)
    four_d = sitk.JoinSeries([_image(phantom_hu), _image(phantom_hu)])
    sitk.WriteImage(four_d, str(tmp_path / "4d.nrrd"))
    with pytest.raises(NotVolumeError, match="4-D image"):
        read_ct(tmp_path / "4d.nrrd")


# ---------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def p001(shared_data: Path):
    """The real COVID-CT-MD P001 series, read once for this module."""
    return read_ct(shared_data / "covid-ct-md" / "P001", allow_2d=False)


def test_real_dicom_series_p001(shared_data: Path, p001) -> None:
    ct = p001
    assert ct.image.GetSize() == (512, 512, 148)
    np.testing.assert_allclose(ct.image.GetSpacing(), (0.748046875, 0.748046875, 2.0), atol=1e-6)
    hu = sitk.GetArrayViewFromImage(ct.image)
    assert hu.min() == -1024 and 1000 < hu.max() < 3100
    lung_fraction = float(((hu > -950) & (hu < -700)).mean())
    assert 0.03 < lung_fraction < 0.4
    assert len(ct.dicom_files) == 148 == len(set(ct.dicom_files))
    assert ct.series_instance_uid == "1.3.12.2.1107.5.1.4.93005.30000020030507333373200012427"
    # slice_labels.csv numbers slices superior to inferior; the axial grid runs inferior to superior.
    with open(shared_data / "covid-ct-md" / "slice_labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["patient"] == "P001"]
    by_index = {int(r["slice_index_sup_to_inf"]): r["file"] for r in rows}
    assert [f"P001/{p.name}" for p in ct.dicom_files] == [by_index[147 - k] for k in range(148)]


def test_real_ct100_png_is_2d_8bit(shared_data: Path) -> None:
    path = shared_data / "covid19-ct100" / "images" / "ct100_0000.png"
    ct = read_ct(path)
    assert not ct.is_hu and ct.is_2d and ct.image.GetDimension() == 2
    assert ct.image.GetPixelID() == sitk.sitkUInt8
    assert ct.axial_array().shape == (1, 512, 512)
    with pytest.raises(NotVolumeError, match="2-D image"):
        read_ct(path, allow_2d=False)


# ---------------------------------------------------------------------------------------------- sample


def test_bundled_sample_reads_as_ct() -> None:
    from jcs.sample import sample_labels_path, sample_path

    ct = read_ct(sample_path(), allow_2d=False)
    assert ct.image.GetSize() == (512, 368, 48)
    np.testing.assert_allclose(ct.image.GetSpacing(), (0.748046875, 0.748046875, 2.0), atol=1e-6)
    np.testing.assert_allclose(ct.image.GetOrigin(), (-172.1259765625, -283.9912109375, -272.1), atol=1e-6)
    hu = sitk.GetArrayViewFromImage(ct.image)
    assert hu.min() == -1024 and 1000 < hu.max() < 3100
    assert [p.name for p in ct.dicom_files] == [f"P001_{k:03d}.dcm" for k in range(48)]
    assert sum(p.stat().st_size for p in ct.dicom_files) < 8.5e6
    with open(sample_labels_path(), newline="") as handle:
        labels = [int(r["infected_slice_label"]) for r in csv.DictReader(handle)]
    assert len(labels) == 48 and sum(labels) == 38


def test_bundled_sample_keeps_source_hu_and_geometry(p001) -> None:
    """Inside the body the sample equals the source voxels at the same physical positions."""
    from jcs.sample import sample_path

    sample = read_ct(sample_path()).image
    source = p001.image
    start = source.TransformPhysicalPointToIndex(sample.GetOrigin())
    assert start == (0, 59, 37)
    region = sitk.GetArrayViewFromImage(source)[37:85, 59:427, :]
    kept = sitk.GetArrayViewFromImage(sample)
    body = kept != -1024
    assert body.mean() > 0.5
    np.testing.assert_array_equal(kept[body], region[body])
