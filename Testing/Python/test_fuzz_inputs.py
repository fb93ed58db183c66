"""Generated broken, odd and hostile inputs against `jcs diagnose`, `jcs quantify` and `jcs weights`.

Every case states its exact outcome: a refusal (exit code, the words that name the problem, no
traceback, and every file that existed before byte-identical afterwards, nothing added), or a reading
that carries its caution in results.json's notes and on stdout. The rules are those of
docs/input-validation.md (jcs.validate, jcs.outputs, jcs.quantify's mask rules). Almost every refusal
happens before the models load; the few readings run the tiny test weights on small volumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from dicom_writer import IDENTITY, write_ct_series
from jcs import weights
from jcs.cli import main
from jcs.errors import OutputError
from jcs.outputs import INCOMPLETE_MARKER, FolderLock, staged_folder
from phantoms import make_chest_phantom

SPACING_ZYX = (2.5, 1.5, 1.5)


@pytest.fixture(scope="module")
def chest() -> np.ndarray:
    """A small chest phantom in HU, (Z, Y, X) int16, read-only (every case builds its own files)."""
    phantom = make_chest_phantom(shape=(12, 96, 96), spacing=SPACING_ZYX, seed=6)
    array = sitk.GetArrayFromImage(phantom.image).astype(np.int16)
    array.flags.writeable = False
    return array


def _image(array: np.ndarray, spacing_zyx: tuple[float, ...] = SPACING_ZYX) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(reversed(spacing_zyx)))
    return image


def _write(path: Path, array: np.ndarray, spacing_zyx: tuple[float, ...] = SPACING_ZYX) -> Path:
    sitk.WriteImage(_image(array, spacing_zyx), str(path))
    return path


def _patch(path: Path, offset: int, fmt: str, *values: float) -> Path:
    """Overwrite fields of a NIfTI-1 header in place (little-endian, as SimpleITK writes)."""
    data = bytearray(path.read_bytes())
    struct.pack_into(f"<{fmt}", data, offset, *values)
    path.write_bytes(bytes(data))
    return path


def _truncate(path: Path, share: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])
    return path


def _png(path: Path, array: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=array.ndim == 3), str(path))
    return path


def _snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root`` (hidden lock files included)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``jcs ARGV`` in-process: (exit code, stdout, stderr); argparse's exits count as exit codes."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage error
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Refusal:
    """A bad input: ``build(tmp_path, chest)`` makes the files and returns the arguments after `jcs`."""

    build: Callable[[Path, np.ndarray], list[str]]
    pattern: str  # a regular expression the one-line error must match
    code: int = 2


def _diagnose(source: Path | str, tmp: Path, *extra: str) -> list[str]:
    return [
        "diagnose",
        str(source),
        "--out",
        str(tmp / "out"),
        "--quiet",
        "--precision",
        "fp32",
        "--classifier",
        "tiny-classifier",
        "--segmenter",
        "tiny-segmenter",
        *extra,
    ]


def _nifti_header_case(
    pixdim: float, sform_code: int, sform_mm: float
) -> Callable[[Path, np.ndarray], list[str]]:
    def build(tmp: Path, chest: np.ndarray) -> list[str]:
        path = _write(tmp / "ct.nii", chest.astype(np.float32))
        _patch(path, 80, "3f", pixdim, pixdim, pixdim)
        _patch(path, 254, "h", sform_code)
        _patch(path, 280, "12f", -sform_mm, 0, 0, 0, 0, -sform_mm, 0, 0, 0, 0, sform_mm, 0)
        return _diagnose(path, tmp)

    return build


def _with_nonfinite(value: float, suffix: str) -> Callable[[Path, np.ndarray], list[str]]:
    def build(tmp: Path, chest: np.ndarray) -> list[str]:
        array = chest.astype(np.float32)
        array[6, 40, 40] = value
        return _diagnose(_write(tmp / f"ct{suffix}", array), tmp)

    return build


def _truncated(suffix: str, share: float = 0.6) -> Callable[[Path, np.ndarray], list[str]]:
    return lambda tmp, chest: _diagnose(_truncate(_write(tmp / f"ct{suffix}", chest), share), tmp)


def _dicom_pixel_spacing(tmp: Path, chest: np.ndarray) -> list[str]:
    files = write_ct_series(chest, (1.5, 1.5, 2.5), (0.0, 0.0, 0.0), IDENTITY, tmp / "series")
    ds = pydicom.dcmread(files[5])
    ds.PixelSpacing = [0.7, 0.7]
    ds.save_as(files[5])
    return _diagnose(tmp / "series", tmp)


def _dicom_without_pixel_spacing(tmp: Path, chest: np.ndarray) -> list[str]:
    files = write_ct_series(chest, (1.5, 1.5, 2.5), (0.0, 0.0, 0.0), IDENTITY, tmp / "series")
    for file in files:
        ds = pydicom.dcmread(file)
        del ds.PixelSpacing
        ds.save_as(file)
    return _diagnose(tmp / "series", tmp)


def _nrrd_without_spacing(path: Path, array: np.ndarray) -> Path:
    """A NRRD whose header states no voxel size (no 'space directions', no 'spacings')."""
    z, y, x = array.shape
    header = f"NRRD0004\ntype: short\ndimension: 3\nsizes: {x} {y} {z}\nencoding: raw\nendian: little\n\n"
    path.write_bytes(header.encode() + array.astype("<i2").tobytes())
    return path


def _dicom_truncated(tmp: Path, chest: np.ndarray) -> list[str]:
    files = write_ct_series(chest, (1.5, 1.5, 2.5), (0.0, 0.0, 0.0), IDENTITY, tmp / "series")
    _truncate(files[3], 0.5)
    return _diagnose(tmp / "series", tmp)


def _colour_photo(tmp: Path, chest: np.ndarray) -> list[str]:
    rng = np.random.default_rng(1)
    sky = np.zeros((240, 320, 3), np.uint8)
    sky[:120] = (90, 150, 230)  # blue sky over a yellow beach, with noise
    sky[120:] = (230, 200, 120)
    photo = np.clip(sky + rng.integers(-20, 20, sky.shape), 0, 255).astype(np.uint8)
    return _diagnose(_png(tmp / "holiday.jpg", photo), tmp)


def _out_with(files: dict[str, bytes]) -> Callable[[Path, np.ndarray], list[str]]:
    """A valid CT and an --out that already holds ``files``."""

    def build(tmp: Path, chest: np.ndarray) -> list[str]:
        (tmp / "out").mkdir()
        for name, data in files.items():
            (tmp / "out" / name).write_bytes(data)
        return _diagnose(_write(tmp / "ct.nrrd", chest), tmp)

    return build


def _out_is_file(tmp: Path, chest: np.ndarray) -> list[str]:
    (tmp / "out").write_text("my notes\n")
    return _diagnose(_write(tmp / "ct.nrrd", chest), tmp)


def _out_under_file(tmp: Path, chest: np.ndarray) -> list[str]:
    (tmp / "report.txt").write_text("mine\n")
    args = _diagnose(_write(tmp / "ct.nrrd", chest), tmp)
    args[args.index("--out") + 1] = str(tmp / "report.txt" / "out")
    return args


def _out_locked(tmp: Path, chest: np.ndarray) -> list[str]:
    (tmp / ".out.jcs-lock").write_text(f"{os.getppid()} {os.uname().nodename} 2026-01-01T00:00:00\n")
    return _diagnose(_write(tmp / "ct.nrrd", chest), tmp)


def _cohort_labels(content: bytes) -> Callable[[Path, np.ndarray], list[str]]:
    def build(tmp: Path, chest: np.ndarray) -> list[str]:
        sources = [_write(tmp / f"{name}.nrrd", chest) for name in ("café", "b")]
        (tmp / "labels.csv").write_bytes(content)
        return [
            "diagnose",
            *map(str, sources),
            "--out",
            str(tmp / "out"),
            "--labels",
            str(tmp / "labels.csv"),
        ]

    return build


def _with_arg(*extra: str) -> Callable[[Path, np.ndarray], list[str]]:
    return lambda tmp, chest: _diagnose(_write(tmp / "ct.nrrd", chest), tmp, *extra)


def _volume(
    array_of: Callable[[np.ndarray], np.ndarray],
    name: str = "ct.nrrd",
    spacing_zyx: tuple[float, ...] = SPACING_ZYX,
) -> Callable[[Path, np.ndarray], list[str]]:
    return lambda tmp, chest: _diagnose(_write(tmp / name, array_of(chest), spacing_zyx), tmp)


# quantify: the CT is the phantom (NRRD), the mask is built from its lesion-free geometry
def _quantify(tmp: Path, chest: np.ndarray, mask: sitk.Image, *extra: str) -> list[str]:
    ct = _write(tmp / "ct.nrrd", chest)
    sitk.WriteImage(mask, str(tmp / "mask.nrrd"))
    return ["quantify", str(ct), str(tmp / "mask.nrrd"), "--out", str(tmp / "q"), *extra]


def _mask(
    values: Callable[[np.ndarray], np.ndarray],
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Callable[[Path, np.ndarray], list[str]]:
    def build(tmp: Path, chest: np.ndarray) -> list[str]:
        array = np.zeros(chest.shape, np.uint8)
        array[5:8, 40:50, 20:30] = 1
        image = _image(values(array))
        image.SetOrigin(origin)
        return _quantify(tmp, chest, image)

    return build


def _rgb_mask(tmp: Path, chest: np.ndarray) -> list[str]:
    array = np.zeros((*chest.shape, 3), np.uint8)
    array[5:8, 40:50, 20:30, 0] = 1
    array[5:8, 40:50, 60:70, 1] = 1
    image = sitk.GetImageFromArray(array, isVector=True)
    image.SetSpacing(tuple(reversed(SPACING_ZYX)))
    return _quantify(tmp, chest, image)


def _lung_labels(labels: tuple[int, ...]) -> Callable[[Path, np.ndarray], list[str]]:
    def build(tmp: Path, chest: np.ndarray) -> list[str]:
        mask = np.zeros(chest.shape, np.uint8)
        mask[5:8, 40:50, 20:30] = 1
        lungs = np.zeros(chest.shape, np.uint8)
        for k, label in enumerate(labels):
            lungs[:, 30:60, 10 + 25 * k : 30 + 25 * k] = label
        sitk.WriteImage(_image(lungs), str(tmp / "lungs.nrrd"))
        return _quantify(tmp, chest, _image(mask), "--lungs", str(tmp / "lungs.nrrd"))

    return build


def _quantify_into_reading(tmp: Path, chest: np.ndarray) -> list[str]:
    (tmp / "q").mkdir()
    (tmp / "q" / "results.json").write_text('{"case": {"positive": true}}\n')
    (tmp / "q" / "lesions.nrrd").write_bytes(b"an earlier reading's lesions")
    mask = np.zeros(chest.shape, np.uint8)
    mask[5:8, 40:50, 20:30] = 1
    return _quantify(tmp, chest, _image(mask))


def _import_existing(tmp: Path, chest: np.ndarray) -> list[str]:
    (tmp / "checkpoint.pth").write_bytes(b"never read: the name is refused first")
    return ["weights", "import-official", str(tmp / "checkpoint.pth"), "--name", "tiny-classifier"]


def _import_misshaped(tmp: Path, chest: np.ndarray) -> list[str]:
    from jcs.models.checkpoint import OFFICIAL_FORMATS, expected_shapes

    kind, arch = OFFICIAL_FORMATS["classifier_res2net50_v1b_26w_4s_fc2"]
    state = {key: torch.zeros(shape) for key, shape in expected_shapes(kind, **arch).items()}
    state["fc.weight"] = torch.zeros(3, state["fc.weight"].shape[1])  # three classes instead of two
    torch.save(state, tmp / "official.pth")
    return ["weights", "import-official", str(tmp / "official.pth"), "--name", "mine"]


class _Payload:
    """Unpickling this object would create a file: the weights loader must never run it."""

    target = ""

    def __reduce__(self) -> tuple:
        return (open, (self.target, "w"))


def _import_pickle(tmp: Path, chest: np.ndarray) -> list[str]:
    _Payload.target = str(tmp / "pwned")
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "hook": _Payload()}, tmp / "evil.pth")
    return ["weights", "import-official", str(tmp / "evil.pth"), "--name", "evil"]


REFUSALS: dict[str, Refusal] = {
    # raw-file integrity
    "nifti-cut-to-60-percent": Refusal(
        _truncated(".nii"), r"ct.nii: truncated NIfTI file \(voxel data has \d+ of"
    ),
    "nifti-gz-cut-to-60-percent": Refusal(
        _truncated(".nii.gz"), r"ct.nii.gz: truncated or damaged compressed file"
    ),
    "nifti-gz-cut-to-3-percent": Refusal(_truncated(".nii.gz", 0.03), r"ct.nii.gz: truncated"),
    "nifti-nan-voxel": Refusal(
        _with_nonfinite(np.nan, ".nii"), r"ct.nii: the image stores 1 NaN or infinite"
    ),
    "nifti-inf-voxel": Refusal(
        _with_nonfinite(np.inf, ".nii"), r"ct.nii: the image stores 1 NaN or infinite"
    ),
    "nifti-gz-minus-inf-voxel": Refusal(_with_nonfinite(-np.inf, ".nii.gz"), r"stores 1 NaN or infinite"),
    "nrrd-nan-voxel": Refusal(
        _with_nonfinite(np.nan, ".nrrd"), r"ct.nrrd: the image contains NaN or infinite"
    ),
    "mha-inf-voxel": Refusal(_with_nonfinite(np.inf, ".mha"), r"ct.mha: the image contains NaN or infinite"),
    "nifti-pixdim-1-sform-2mm": Refusal(
        _nifti_header_case(1.0, 1, 2.0),
        r"header contradicts itself: pixdim gives voxels of 1 x 1 x 1 mm but "
        r"the sform 2 x 2 x 2 mm",
    ),
    "nifti-pixdim-0-no-sform": Refusal(
        _nifti_header_case(0.0, 0, 2.0), r"the voxel size is unknown \(pixdim 0"
    ),
    "mha-truncated": Refusal(_truncated(".mha", 0.7), r"ct.mha: truncated MetaImage file"),
    "nrrd-truncated": Refusal(_truncated(".nrrd", 0.7), r"ct.nrrd: cannot read the file"),
    "dicom-no-pixel-spacing": Refusal(_dicom_without_pixel_spacing, r"PixelSpacing missing in every slice"),
    "fov-4800mm-50mm-pixels": Refusal(
        _volume(lambda c: c, spacing_zyx=(2.5, 50.0, 50.0)),
        r"a field of view of 4800 x 4800 mm is wider than any",
    ),
    "dicom-slice-truncated": Refusal(_dicom_truncated, r"truncated DICOM file"),
    "dicom-slice-other-pixel-spacing": Refusal(
        _dicom_pixel_spacing,
        r"slices with different pixel spacing in one series: .* has PixelSpacing 0.7 x 0.7",
    ),
    "empty-file": Refusal(
        lambda tmp, chest: _diagnose(_touch(tmp / "ct.nii.gz"), tmp),
        r"ct.nii.gz: the file is empty \(0 bytes\)",
    ),
    "text-named-nifti": Refusal(
        lambda tmp, chest: _diagnose(_text(tmp / "ct.nii", "hello " * 200), tmp),
        r"ct.nii: (cannot read|truncated)",
    ),
    # implausible images
    "volume-8x8x8": Refusal(
        _volume(lambda c: c[:8, 44:52, 44:52]), r"slices of 8 x 8 pixels are too small to be CT"
    ),
    "fov-13mm-0.1mm-pixels": Refusal(
        _volume(
            lambda c: np.pad(c, ((0, 0), (16, 16), (16, 16)), constant_values=-1000),
            spacing_zyx=(2.5, 0.1, 0.1),
        ),
        r"field of view of 13 x 13 mm cannot hold a chest",
    ),
    "constant-volume": Refusal(_volume(lambda c: np.full_like(c, -1000)), r"the image is constant"),
    "mr-like-values": Refusal(_volume(lambda c: (c + 1024) * 3), r"do not look like CT Hounsfield units"),
    "colour-holiday-photo": Refusal(_colour_photo, r"holiday.jpg: a colour image \(\d+ % of its pixels"),
    "thumbnail-16x16": Refusal(
        lambda tmp, chest: _diagnose(
            _png(tmp / "thumb.png", np.linspace(0, 255, 256).astype(np.uint8).reshape(16, 16)), tmp
        ),
        r"thumb.png: slices of 16 x 16 pixels are too small to be CT",
    ),
    "png-16-bit": Refusal(
        lambda tmp, chest: _diagnose(
            _png(tmp / "deep.png", (np.arange(96 * 96, dtype=np.uint16) * 7).reshape(96, 96)), tmp
        ),
        r"deep.png: 16-bit unsigned integer pixels; only 8-bit images",
    ),
    "folder-without-dicom": Refusal(
        lambda tmp, chest: _diagnose(_text(tmp / "folder" / "readme.txt", "no images").parent, tmp),
        r"folder: no DICOM image files found",
    ),
    "missing-input": Refusal(
        lambda tmp, chest: _diagnose(tmp / "absent.nii.gz", tmp), r"absent.nii.gz: no such file"
    ),
    # arguments
    "lesion-margin-nan": Refusal(
        _with_arg("--lesion-margin-mm", "nan"), r"--lesion-margin-mm: must be a finite"
    ),
    "lesion-margin-inf": Refusal(
        _with_arg("--lesion-margin-mm=-inf"), r"--lesion-margin-mm: must be a finite"
    ),
    "lesion-margin-word": Refusal(
        _with_arg("--lesion-margin-mm", "ten"), r"--lesion-margin-mm: not a number"
    ),
    "threshold-negative": Refusal(_with_arg("--threshold", "-1"), r"--threshold: must be at least 0, not -1"),
    "batch-size-zero": Refusal(_with_arg("--batch-size", "0"), r"--batch-size: must be at least 1, not 0"),
    "device-unknown": Refusal(_with_arg("--device", "tpu"), r"--device: invalid choice: 'tpu'"),
    "labels-windows-1252-decoded": Refusal(
        _cohort_labels("case,label\ncafé,peut-être\n".encode("cp1252")),
        r"label 'peut-être' of case 'café' is not 1/0/positive/negative",
    ),
    "labels-binary-nul": Refusal(
        _cohort_labels(b"case,label\n\0\0\0\x89PNG"), r"labels.csv: not a text CSV file"
    ),
    "labels-conflicting": Refusal(
        _cohort_labels(b"case,label\nb,1\nb,negative\n"), r"case 'b' is listed with two different labels"
    ),
    "labels-no-columns": Refusal(
        _cohort_labels(b"name;diagnosis\nb;1\n"), r"needs the columns 'case' and 'label'"
    ),
    # outputs
    "out-holds-earlier-reading": Refusal(
        _out_with({"results.json": b'{"case": {"positive": false}}', "heatmap.nrrd": b"earlier"}),
        r"--out .*out is not empty \(it holds an earlier reading \(results.json\)\); give a new folder, "
        r"or pass --overwrite",
    ),
    "out-holds-user-files": Refusal(
        _out_with({"thesis.docx": b"my thesis", "notes.txt": b"mine"}),
        r"is not empty \(it holds 2 entries: notes.txt",
    ),
    "out-is-a-file": Refusal(_out_is_file, r"--out .*out is a file, not a folder"),
    "out-under-a-file": Refusal(_out_under_file, r"report.txt is a file, so the folder cannot be created"),
    "out-locked-by-running-jcs": Refusal(_out_locked, r"out is in use by another jcs run \(process \d+"),
    # quantify: mask semantics and outputs
    "mask-origin-shifted": Refusal(
        _mask(lambda a: a, origin=(-40.0, 0.0, 0.0)),
        r"mask.nrrd: 210 of its 300 lesion voxels lie outside the CT's grid \(origin -40, 0, 0 mm",
    ),
    "mask-far-away": Refusal(
        _mask(lambda a: a, origin=(5000.0, 0.0, 0.0)), r"does not overlap the CT .* all 300"
    ),
    "mask-probability-map": Refusal(
        _mask(lambda a: a.astype(np.float32) * 0.8 + 0.05),
        r"holds fractional values \(\d+ voxels, e.g. 0.05\)",
    ),
    "mask-multi-label": Refusal(
        _mask(lambda a: a * np.arange(a.shape[2], dtype=np.uint8)[None, None, :] % 4),
        r"holds several labels \(1, 2, 3\); jcs quantify takes one lesion label",
    ),
    "mask-negative": Refusal(_mask(lambda a: -a.astype(np.int16)), r"holds negative values \(-1\)"),
    "mask-nan": Refusal(
        _mask(lambda a: np.where(a > 0, np.nan, 0).astype(np.float32)), r"mask.nrrd holds NaN or infinite"
    ),
    "mask-two-different-channels": Refusal(_rgb_mask, r"has 3 different channels \(layers\)"),
    "lungs-with-extra-label-3": Refusal(_lung_labels((1, 2, 3)), r"holds labels 3 besides the lungs' 1, 2"),
    "lungs-with-extra-label-7": Refusal(_lung_labels((2, 1, 7)), r"holds labels 7 besides the lungs' 1, 2"),
    "lungs-three-of-five-lobes": Refusal(_lung_labels((3, 4, 5)), r"holds labels 3, 4, 5: a lung labelmap"),
    "quantify-into-diagnosis-folder": Refusal(
        _quantify_into_reading, r"--out .*q is not empty \(it holds an earlier"
    ),
    # weights
    "import-existing-name": Refusal(
        _import_existing, r"weights named 'tiny-classifier' already exist in .*; choose"
    ),
    "import-misshaped-tensor": Refusal(
        _import_misshaped,
        r"closest is 'classifier_res2net50_v1b_26w_4s_fc2': mis-shaped fc.weight \(3, 2048\)",
    ),
    "import-pickle-payload": Refusal(
        _import_pickle, r"evil.pth: refused to load: the file holds Python objects other than tensors"
    ),
    "import-invalid-name": Refusal(
        lambda tmp, chest: ["weights", "import-official", str(_touch(tmp / "c.pth")), "--name", "../escape"],
        r"invalid weights name '../escape'",
    ),
}


def _touch(path: Path) -> Path:
    path.touch()
    return path


def _text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", list(REFUSALS))
@pytest.mark.usefixtures("tiny_weights")
def test_bad_input_is_refused_and_nothing_changes(
    name: str,
    chest: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = REFUSALS[name]
    argv = case.build(tmp_path, chest)
    registry = Path(os.environ["JCS_WEIGHTS_DIR"])
    before, registry_before = _snapshot(tmp_path), _snapshot(registry)
    code, stdout, stderr = _run(argv, capsys)
    assert code == case.code, (stdout, stderr)
    errors = [line for line in stderr.splitlines() if re.match(r"jcs [\w-]+: error: ", line)]
    assert len(errors) == 1 and re.search(case.pattern, errors[0]), stderr
    assert _snapshot(tmp_path) == before  # nothing changed, nothing added (no outputs, no lock left)
    assert _snapshot(registry) == registry_before
    assert not (tmp_path / "pwned").exists()  # no pickle payload ran


# ---------------------------------------------------------------------------------------------- readings


def _reading(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert not list(out.parent.glob(f"{out.name}.incomplete-*")) and not (out / INCOMPLETE_MARKER).exists()
    return results


@pytest.mark.usefixtures("tiny_weights")
def test_nifti_without_pixdim_is_read_at_its_sform_spacing_with_a_caution(
    chest: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pixdim 0 (invalid) and an sform of 2 mm voxels: read at 2 mm, and the reading says so."""
    argv = _nifti_header_case(0.0, 1, 2.0)(tmp_path, chest)
    code, stdout, stderr = _run(argv, capsys)
    assert code == 0, stderr
    results = _reading(tmp_path / "out")
    assert results["input"]["spacing_mm"] == [2.0, 2.0, 2.0]
    caution = "the voxel size 2 x 2 x 2 mm of its sform was used"
    assert any(caution in note for note in results["notes"]) and caution in stdout
    # field of view 192 mm and 24 mm of coverage: cautions, not refusals
    assert any("field of view 192 x 192 mm" in note for note in results["notes"])
    assert any("covers 24 mm cranio-caudally" in note for note in results["notes"])


@pytest.mark.usefixtures("tiny_weights")
def test_small_grey_png_is_read_with_a_caution(
    chest: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    grey = np.clip((chest[6].astype(np.float32) + 1350) / 1500 * 255, 0, 255).astype(np.uint8)
    code, stdout, stderr = _run(_diagnose(_png(tmp_path / "slice.png", grey), tmp_path), capsys)
    assert code == 0, stderr
    notes = _reading(tmp_path / "out")["notes"]
    assert any(note.startswith("small slices (96 x 96 pixels") for note in notes)
    assert "note: small slices (96 x 96 pixels" in stdout


@pytest.mark.usefixtures("tiny_weights")
def test_overwrite_replaces_only_jcs_outputs(
    chest: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--overwrite into a folder with an earlier reading: jcs's files replaced (a stale DICOM-SEG of the
    earlier run removed), the user's own file byte-identical."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"old": true}')
    (out / "lesions.seg.dcm").write_bytes(b"an earlier run's SEG")
    (out / "my-notes.txt").write_text("mine, keep")
    code, _, stderr = _run(_diagnose(_write(tmp_path / "ct.nrrd", chest), tmp_path, "--overwrite"), capsys)
    assert code == 0, stderr
    assert "old" not in _reading(out) and not (out / "lesions.seg.dcm").exists()
    assert (out / "my-notes.txt").read_text() == "mine, keep"
    assert not (tmp_path / ".out.jcs-lock").exists()


@pytest.mark.usefixtures("tiny_weights")
def test_interrupted_diagnosis_leaves_no_outputs(
    chest: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C while the outputs are written: exit 130, --out does not exist, no staging folder, no lock."""
    from jcs.pipeline import CaseResult

    def interrupted(*args: object, **kwargs: object) -> None:
        (args[1] / "heatmap.nrrd").write_bytes(b"half")  # the staging folder  # type: ignore[operator]
        raise KeyboardInterrupt

    monkeypatch.setattr(CaseResult, "write_outputs", interrupted)
    code, _, stderr = _run(_diagnose(_write(tmp_path / "ct.nrrd", chest), tmp_path), capsys)
    assert code == 130 and "interrupted" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd"]


def test_killed_run_leaves_a_folder_named_incomplete(tmp_path: Path) -> None:
    """A run killed outright (no clean-up possible) leaves OUT.incomplete-* holding INCOMPLETE.txt, never
    a folder named OUT."""
    script = (
        "import os, sys\nfrom pathlib import Path\nfrom jcs.outputs import staged_folder\n"
        "with staged_folder(Path(sys.argv[1]), overwrite=False) as staging:\n"
        "    (staging / 'heatmap.nrrd').write_bytes(b'half')\n    os._exit(9)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], env=env, check=False)
    assert result.returncode == 9
    (staging,) = tmp_path.iterdir()
    assert staging.name.startswith("out.incomplete-")
    assert "incomplete" in (staging / INCOMPLETE_MARKER).read_text()


def test_overwrite_interrupted_midway_marks_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("earlier")
    calls = []
    real_replace = os.replace

    def failing_replace(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt), staged_folder(out, overwrite=True) as staging:
        for name in ("heatmap.nrrd", "lesions.nrrd", "results.json"):
            (staging / name).write_text("new")
    assert (out / INCOMPLETE_MARKER).is_file()  # the folder says it is incomplete
    assert (out / "results.json").read_text() == "earlier"  # results.json is moved in last


def test_second_run_into_a_locked_folder_is_refused(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "out"), pytest.raises(OutputError, match="in use by another jcs run"):
        FolderLock(tmp_path / "out").acquire()
    stale = tmp_path / ".out.jcs-lock"
    stale.write_text(f"999999999 {os.uname().nodename} 2026-01-01T00:00:00\n")  # that process is gone
    with FolderLock(tmp_path / "out"):
        assert str(os.getpid()) in stale.read_text()
    assert not stale.exists()


def test_quantify_accepts_one_label_of_any_value_and_resamples_inside_masks(
    chest: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0/255 mask (one label) is read as lesion; a 0.0/1.0 float mask too; a mask on a finer grid
    lying inside the CT is resampled with a note that gives the voxel counts."""
    mask = np.zeros(chest.shape, np.uint8)
    mask[5:8, 40:50, 20:30] = 255
    argv = _quantify(tmp_path, chest, _image(mask))
    code, stdout, stderr = _run(argv, capsys)
    assert code == 0, stderr
    assert json.loads((tmp_path / "q" / "results.json").read_text())["summary"]["lesion_count"] == 1
    fine = sitk.Resample(
        _image((mask > 0).astype(np.float32)),
        [96, 96, 24],
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        (0.0, 0.0, 0.0),
        (1.5, 1.5, 1.25),
        IDENTITY,
        0.0,
    )
    sitk.WriteImage(fine, str(tmp_path / "fine.nrrd"))
    code, stdout, stderr = _run(
        ["quantify", str(tmp_path / "ct.nrrd"), str(tmp_path / "fine.nrrd"), "--out", str(tmp_path / "q2")],
        capsys,
    )
    assert code == 0, stderr
    notes = json.loads((tmp_path / "q2" / "results.json").read_text())["notes"]
    (resampled,) = [note for note in notes if note.startswith("lesion mask resampled")]
    assert "600 lesion voxels became 300" in resampled and "note: lesion mask resampled" in stdout


@pytest.mark.usefixtures("tiny_weights")
def test_weights_registry_copy_and_long_names(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """JCS_WEIGHTS_DIR holding a copy of the bundled registry: its default is still found (not 'none are
    bundled'); `weights list` keeps its columns aligned with long names."""
    bundled, copy = tmp_path / "bundled", tmp_path / "copy"
    shutil.copytree(Path(os.environ["JCS_WEIGHTS_DIR"]), bundled)  # the tiny registry
    for card_path in bundled.glob("*.json"):
        card = json.loads(card_path.read_text())
        card_path.write_text(json.dumps({**card, "default": True}))
    shutil.copytree(bundled, copy)
    monkeypatch.setattr(weights, "BUNDLED_DIR", bundled)
    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(copy))
    assert weights.default_weights("classifier") == "tiny-classifier"
    assert weights.default_weights("segmenter") == "tiny-segmenter"
    long_name = "a-very-long-weights-name-from-a-fine-tuning-run-v2"
    for suffix in (".json", ".safetensors"):
        shutil.copy(copy / f"tiny-classifier{suffix}", copy / f"{long_name}{suffix}")
    card = json.loads((copy / f"{long_name}.json").read_text())
    (copy / f"{long_name}.json").write_text(json.dumps({**card, "name": long_name, "default": False}))
    code, stdout, _ = _run(["weights", "list"], capsys)
    assert code == 0
    header, *rows = stdout.splitlines()
    assert len(rows) == 3 and any(long_name in row for row in rows)
    assert {
        row.index(" classifier ") if " classifier " in row else row.index(" segmenter ") for row in rows
    } == {header.index(" kind ")}


def test_unwritable_out_is_found_before_any_work(
    chest: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder the user may not write into (simulated: tests may run as root, who may write anywhere)."""
    locked = tmp_path / "readonly"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    source = _write(tmp_path / "ct.nrrd", chest)
    code, _, stderr = _run(["diagnose", str(source), "--out", str(locked / "out")], capsys)
    assert code == 2 and f"--out {locked / 'out'}: cannot write into {locked} (permission denied)" in stderr
    code, _, stderr = _run(["quantify", str(source), str(source), "--out", str(locked / "q")], capsys)
    assert code == 2 and "cannot write into" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd", "readonly"] and not any(locked.iterdir())


def test_nrrd_without_voxel_size_is_read_with_a_caution(chest: np.ndarray, tmp_path: Path) -> None:
    from jcs.io import read_ct

    ct = read_ct(_nrrd_without_spacing(tmp_path / "ct.nrrd", chest))
    assert ct.image.GetSpacing() == (1.0, 1.0, 1.0)
    assert ct.notes[0].startswith("the file states no voxel size, so 1 mm was assumed")
