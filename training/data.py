"""Training data: JCS list files, CT volumes with labelmaps, slice-label CSVs, COVID-CS features.

Every source becomes a list of :class:`SliceRecord` (one axial slice, its lesion mask if any, its
slice label and its patient), so that splits are made by patient (§IV: never one patient on both
sides) whatever the source. HU volumes are windowed to 8 bits exactly like the engine
(``jcs.preprocess.window_to_uint8``, lung window by default).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from jcs.errors import JCSError
from jcs.io import CTVolume, read_ct
from jcs.preprocess import standardize_per_image
from PIL import Image, UnidentifiedImageError

from training import augment
from training.config import DataConfig


class DataError(JCSError, ValueError):
    """A training data file or list is missing, unreadable or inconsistent."""


@dataclass
class SliceRecord:
    """One axial slice: 8-bit image (or a COVID-CS feature file), optional mask, label, patient."""

    image: np.ndarray | None  # (H, W) uint8; None for feature-file records
    mask: np.ndarray | None  # (H, W) uint8 in {0, 1}; None when the slice has no pixel annotation
    label: int  # 1 = COVID-19 / lesion present, 0 = not
    patient: str
    source: str  # file (and slice index) for messages and reports
    features: Path | None = None  # COVID-CS .mat holding uint8 feature×20
    repeats: int = 1  # times the slice is drawn per training epoch (oversampling a small source)

    @property
    def has_mask(self) -> bool:
        return self.mask is not None


def read_grey_png(path: Path) -> np.ndarray:
    """An 8-bit PNG/JPG as a (H, W) uint8 array (colour converted to grey)."""
    if not path.is_file():
        raise DataError(f"image file {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P", "RGB", "RGBA", "LA", "1", "I;16", "I"):
                raise DataError(f"image file {path} has unsupported pixel mode {img.mode}")
            array = np.array(img.convert("L") if img.mode not in ("I;16", "I") else img)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"image file {path} is unreadable: {exc}") from exc
    if array.dtype != np.uint8:
        raise DataError(f"image file {path} is not 8-bit (dtype {array.dtype}); window it to 8 bits first")
    return array


def read_mask_png(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A lesion mask PNG (0/1 or 0/255) as uint8 {0, 1}; must have the image's size."""
    mask = read_grey_png(path)
    if mask.shape != shape:
        raise DataError(
            f"mask {path} is {mask.shape[1]}×{mask.shape[0]} but its image is {shape[1]}×{shape[0]}"
        )
    values = np.unique(mask)
    if not set(values.tolist()) <= {0, 1, 255}:
        raise DataError(f"mask {path} must hold only 0/1 or 0/255, found values {values[:8].tolist()}")
    return (mask > 0).astype(np.uint8)


def load_list_file(path: str | Path) -> list[SliceRecord]:
    """Records of a JCS list file: ``image mask [patient]`` per line, paths relative to the file.

    Without a patient column each slice is its own patient (as for COVID-19-CT100, whose file names
    do not identify patients).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"list file {path} does not exist")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) not in (2, 3):
            raise DataError(f"{path}:{number}: expected 'image mask [patient]', got {line!r}")
        image_path, mask_path = (path.parent / parts[0]), (path.parent / parts[1])
        if not mask_path.is_file():
            raise DataError(f"{path}:{number}: mask file {mask_path} does not exist")
        image = read_grey_png(image_path)
        mask = read_mask_png(mask_path, image.shape)
        patient = parts[2] if len(parts) == 3 else image_path.stem
        records.append(SliceRecord(image, mask, int(mask.any()), patient, str(image_path)))
    if not records:
        raise DataError(f"list file {path} lists no images")
    return records


def _window(hu: np.ndarray, config: DataConfig) -> np.ndarray:
    from jcs.preprocess import window_to_uint8

    return window_to_uint8(hu, config.window_level, config.window_width)


def load_volume_csv(path: str | Path, config: DataConfig) -> list[SliceRecord]:
    """Records of CT volumes with lesion labelmaps: CSV ``image,mask[,patient]`` (paths relative to it).

    The labelmap must share the CT's grid; it is brought into the engine's axial grid by
    nearest-neighbour resampling onto ``CTVolume.axial_image()``.
    """
    path = Path(path)
    rows = _read_csv(path, required=("image", "mask"))
    records = []
    for row in rows:
        image_path, mask_path = path.parent / row["image"], path.parent / row["mask"]
        if not mask_path.exists():
            raise DataError(f"{path}: labelmap {mask_path} does not exist")
        ct = read_ct(image_path, allow_2d=False)
        try:
            labelmap = sitk.ReadImage(str(mask_path))
        except RuntimeError as exc:
            raise DataError(f"{path}: labelmap {mask_path} is unreadable: {exc}") from exc
        if labelmap.GetSize() != ct.image.GetSize() or not np.allclose(
            labelmap.GetSpacing(), ct.image.GetSpacing(), rtol=1e-3
        ):
            raise DataError(
                f"{path}: labelmap {mask_path} (size {labelmap.GetSize()}) does not match CT {image_path} "
                f"(size {ct.image.GetSize()})"
            )
        labelmap.CopyInformation(ct.image)
        axial = sitk.Resample(labelmap, ct.axial_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        masks = (sitk.GetArrayFromImage(axial) > 0).astype(np.uint8)
        slices = _window(ct.axial_array(), config)
        patient = row.get("patient") or Path(row["image"]).name.split(".")[0]
        for z in range(slices.shape[0]):
            records.append(
                SliceRecord(slices[z], masks[z], int(masks[z].any()), patient, f"{image_path}[{z}]")
            )
    return records


def slice_label_series(path: str | Path) -> list[tuple[str, CTVolume, list[int]]]:
    """(patient, CT volume, label of each axial slice) of a slice-label CSV (COVID-CT-MD layout:
    ``patient,file,infected_slice_label``); each patient's files form one DICOM series."""
    path = Path(path)
    rows = _read_csv(path, required=("patient", "file", "infected_slice_label"))
    by_patient: dict[str, dict[Path, int]] = {}
    for row in rows:
        file = (path.parent / row["file"]).resolve()
        try:
            label = int(row["infected_slice_label"])
        except ValueError as exc:
            raise DataError(f"{path}: label {row['infected_slice_label']!r} of {file} is not 0/1") from exc
        if label not in (0, 1):
            raise DataError(f"{path}: label {label} of {file} is not 0/1")
        by_patient.setdefault(row["patient"], {})[file] = label
    series = []
    for patient, labels in by_patient.items():
        folders = {f.parent for f in labels}
        if len(folders) != 1:
            raise DataError(f"{path}: files of patient {patient} lie in several folders: {sorted(folders)}")
        folder = folders.pop()
        missing = [f for f in labels if not f.is_file()]
        if missing:
            raise DataError(
                f"{path}: {len(missing)} listed files of {patient} are missing, e.g. {missing[0]}"
            )
        ct = read_ct(folder, allow_2d=False)
        if ct.dicom_files is None:
            raise DataError(f"{path}: {folder} did not read as a DICOM series")
        order = [Path(f).resolve() for f in ct.dicom_files]
        unlabelled = [f for f in order if f not in labels]
        if unlabelled:
            raise DataError(
                f"{path}: {len(unlabelled)} slices of {folder} have no label, e.g. {unlabelled[0]}"
            )
        series.append((patient, ct, [labels[f] for f in order]))
    return series


def load_slice_labels(path: str | Path, config: DataConfig) -> list[SliceRecord]:
    """Records of a slice-label CSV (see :func:`slice_label_series`), windowed like the engine; the
    slices carry labels but no masks."""
    records = []
    for patient, ct, labels in slice_label_series(path):
        slices = _window(ct.axial_array(), config)
        for z, (file, label) in enumerate(zip(ct.dicom_files, labels, strict=True)):
            records.append(SliceRecord(slices[z], None, label, patient, str(Path(file).resolve())))
    return records


def load_feature_list(path: str | Path) -> list[SliceRecord]:
    """Records of the COVID-CS feature release: lines ``features.mat [mask.png|-] [label] [patient]``.

    The .mat files are read lazily (they are large); the label defaults to 1 when a mask is given.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"feature list {path} does not exist")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        features = path.parent / parts[0]
        if not features.is_file():
            raise DataError(f"{path}:{number}: feature file {features} does not exist")
        mask = None
        if len(parts) > 1 and parts[1] != "-":
            mask = (read_grey_png(path.parent / parts[1]) > 0).astype(np.uint8)
        label = int(parts[2]) if len(parts) > 2 else int(mask is not None and bool(mask.any()))
        patient = parts[3] if len(parts) > 3 else features.stem
        records.append(SliceRecord(None, mask, label, patient, str(features), features))
    if not records:
        raise DataError(f"feature list {path} lists no files")
    return records


def read_features(path: Path, key: str) -> torch.Tensor:
    """A COVID-CS feature map (C, H, W) float32 = stored uint8 / 20 (the release stores feature×20)."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(path), variable_names=[key])
    except (OSError, ValueError) as exc:
        raise DataError(f"feature file {path} is unreadable: {exc}") from exc
    if key not in content:
        raise DataError(f"feature file {path} has no {key!r} array")
    array = np.asarray(content[key])
    if array.dtype != np.uint8 or array.ndim != 3:
        raise DataError(f"{path}:{key} must be a uint8 (C, H, W) array, got {array.dtype} {array.shape}")
    return torch.from_numpy(array.astype(np.float32) / 20.0)


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"CSV file {path} lacks column(s) {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise DataError(f"CSV file {path} has no rows")
    return rows


def load_records(config: DataConfig) -> list[SliceRecord]:
    """All records of every source named in ``config``."""
    records: list[SliceRecord] = []
    sources = [*config.lists, *config.volumes, *config.slice_labels, *config.feature_lists]
    unknown = set(config.repeats) - set(sources)
    if unknown:
        raise DataError(f"data.repeats names sources that are not in the data: {', '.join(sorted(unknown))}")
    loaders = (
        [(item, load_list_file) for item in config.lists]
        + [(item, lambda path: load_volume_csv(path, config)) for item in config.volumes]
        + [(item, lambda path: load_slice_labels(path, config)) for item in config.slice_labels]
        + [(item, load_feature_list) for item in config.feature_lists]
    )
    for item, load in loaders:
        loaded = load(item)
        for record in loaded:
            record.repeats = int(config.repeats.get(item, 1))
        records += loaded
    if not records:
        raise DataError(
            "no training data: set data.lists, data.volumes, data.slice_labels or data.feature_lists"
        )
    return records


def expand_repeats(records: Sequence[SliceRecord]) -> list[SliceRecord]:
    """Training records with each slice listed ``record.repeats`` times (evaluation uses each once)."""
    return [record for record in records for _ in range(max(record.repeats, 1))]


def split_by_patient(
    records: Sequence[SliceRecord], val_patients: Iterable[str] = (), val_count: int = 0, seed: int = 0
) -> tuple[list[SliceRecord], list[SliceRecord]]:
    """(train, val) with no patient on both sides.

    ``val_patients`` names the held-out patients; otherwise ``val_count`` patients are drawn with
    ``numpy.random.default_rng(seed)`` from the sorted patient list (documented, reproducible).
    """
    patients = sorted({r.patient for r in records})
    chosen = set(val_patients)
    unknown = chosen - set(patients)
    if unknown:
        raise DataError(f"validation patients not in the data: {', '.join(sorted(unknown))}")
    if not chosen and val_count:
        if val_count >= len(patients):
            raise DataError(f"cannot hold out {val_count} of {len(patients)} patients")
        rng = np.random.default_rng(seed)
        chosen = set(rng.choice(patients, size=val_count, replace=False).tolist())
    train = [r for r in records if r.patient not in chosen]
    val = [r for r in records if r.patient in chosen]
    if not train:
        raise DataError("the split leaves no training data")
    return train, val


class SegmentationDataset(torch.utils.data.Dataset):
    """Slices with masks → (input (3,S,S), mask (1,S,S)); augmentation seeded by (seed, epoch, index).

    Slices are resized to ``size`` (the inference size); with ``crop`` < ``size`` each sample is a
    random ``crop``² window of it (full-resolution patch training, cheaper than whole slices).
    """

    def __init__(
        self,
        records: Sequence[SliceRecord],
        size: int,
        augment_mode: str | None,
        seed: int = 0,
        per_image_norm: bool = False,
        feature_key: str = "vgg_feats",
        crop: int = 0,
    ) -> None:
        missing = [r.source for r in records if r.mask is None]
        if missing:
            raise DataError(
                f"segmentation needs pixel masks; {len(missing)} slices have none, e.g. {missing[0]}"
            )
        if not records:
            raise DataError("segmentation dataset is empty")
        self.records = expand_repeats(records)
        self.size = size
        self.crop = crop if crop and crop < size else size
        self.augment_mode = augment_mode
        self.seed = seed
        self.epoch = 0
        self.per_image_norm = per_image_norm
        self.feature_key = feature_key

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        record = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        mask = torch.from_numpy(record.mask).float()[None]
        if record.features is not None:
            feats = read_features(record.features, self.feature_key)
            if self.augment_mode and rng.random() < 0.5:
                feats, mask = feats.flip(-1), mask.flip(-1)
            return feats, mask
        size = (self.size, self.size)
        image = augment.resize(torch.from_numpy(record.image).float()[None], size)
        mask = augment.resize(mask, size)
        view = self.crop / self.size
        if self.augment_mode:
            theta = augment.random_affine(rng, self.augment_mode, view=view)
        else:
            theta = augment.identity()
            theta[:, :2] *= view
        image, mask = augment.warp(image, mask, theta, (self.crop, self.crop))
        if self.augment_mode in augment.INTENSITY_MODES:
            image = augment.random_intensity(image, rng)
        x = augment.segmenter_normalize(augment.quantize(image))
        if self.per_image_norm:
            x = standardize_per_image(x)
        return x, (mask > 0.5).float()


class ClassificationDataset(torch.utils.data.Dataset):
    """Slices → (input (3,S,S), label, mask (1,S,S), has_mask), cropped as classifier_input does."""

    def __init__(
        self,
        records: Sequence[SliceRecord],
        size: int = 224,
        resize: int = 256,
        augment_mode: str | None = "paper",
        seed: int = 0,
        feature_key: str = "res2net_feats",
        per_image_norm: bool = False,
        whole_slice: bool = False,
        lesion_free_crops: float = 0.0,
    ) -> None:
        if not records:
            raise DataError("classification dataset is empty")
        if lesion_free_crops and not whole_slice:
            raise DataError("lesion_free_crops needs whole_slice: true (the windows are of the whole slice)")
        if not 0.0 <= lesion_free_crops <= 0.5:
            raise DataError(f"lesion_free_crops is a share in [0, 0.5], not {lesion_free_crops}")
        self.records = expand_repeats(records)
        self.size = size
        self.resize = resize
        self.crop_fraction = size / resize
        self.augment_mode = augment_mode
        self.seed = seed
        self.epoch = 0
        self.feature_key = feature_key
        self.per_image_norm = per_image_norm
        self.whole_slice = whole_slice
        self.lesion_free_crops = lesion_free_crops

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        record = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        label = torch.tensor(float(record.label))
        has_mask = torch.tensor(record.mask is not None)
        if record.features is not None:
            feats = read_features(record.features, self.feature_key)
            mask = (
                torch.zeros(1, *feats.shape[-2:])
                if record.mask is None
                else torch.from_numpy(record.mask).float()[None]
            )
            if mask.shape[-2:] != feats.shape[-2:]:
                mask = torch.nn.functional.interpolate(mask[None], size=feats.shape[-2:], mode="area")[0]
            if self.augment_mode and rng.random() < 0.5:
                feats, mask = feats.flip(-1), mask.flip(-1)
            return feats, label, mask, has_mask
        image = torch.from_numpy(record.image).float()[None]
        mask = torch.zeros_like(image) if record.mask is None else torch.from_numpy(record.mask).float()[None]
        if self.whole_slice:  # as jcs.preprocess.classifier_input(whole_slice=size)
            resized = (self.size, self.size)
            base = augment.identity()
            if record.mask is not None and record.label == 1 and rng.random() < 2 * self.lesion_free_crops:
                sample = self._zoomed_window(image, mask, rng)
                if sample is not None:
                    return sample
        else:
            resized = augment.shorter_side_size(*image.shape[-2:], self.resize)
            base = augment.centre_crop_theta(*resized, self.crop_fraction)
        image, mask = augment.resize(image, resized), augment.resize(mask, resized)
        image, mask = self._augmented(image, mask, base, rng)
        return self._normalized(image, rng), label, mask, has_mask

    def _augmented(
        self, image: torch.Tensor, mask: torch.Tensor, base: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment_mode:
            theta = augment.random_affine(rng, self.augment_mode, base=base, crop=not self.whole_slice)
        else:
            theta = base
        return augment.warp(image, mask, theta, (self.size, self.size))

    def _normalized(self, image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.augment_mode in augment.INTENSITY_MODES:
            clahe_p = augment.CLASSIFIER_CLAHE_P[self.augment_mode]
            image = augment.random_intensity(image, rng, clahe_p=clahe_p)
        x = augment.classifier_normalize(augment.quantize(image))
        return standardize_per_image(x) if self.per_image_norm else x

    def _zoomed_window(
        self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """A zoomed window of a masked COVID-19 slice, labelled by what it shows: half the time one
        without lesion pixels (label 0, a known lesion-free map for eq. 4), else one on a lesion
        (label 1). None when no such window is found or the augmented window cuts a lesion to a sliver.
        """
        resized = (self.size, self.size)
        image, mask = augment.resize(image, resized), augment.resize(mask, resized)
        base = zoom_window(image[0].numpy(), mask[0].numpy() > 0.5, rng, lesion_free=rng.random() < 0.5)
        if base is None:
            return None
        image, mask = self._augmented(image, mask, base, rng)
        lesion_pixels = int((mask > 0.5).sum())
        if 0 < lesion_pixels < MIN_WINDOW_LESION_PIXELS:
            return None
        label = torch.tensor(float(lesion_pixels > 0))
        return self._normalized(image, rng), label, mask, torch.tensor(True)


MIN_WINDOW_LESION_PIXELS = 8  # a window showing less of a lesion than this is neither class


def zoom_window(
    image: np.ndarray, lesion: np.ndarray, rng: np.random.Generator, lesion_free: bool, tries: int = 12
) -> torch.Tensor | None:
    """Affine theta (output → input, normalised coordinates) of a square window of 35–60 % of the
    slice's side: centred in the lungs (dark pixels inside the body) and clear of lesions by 4 px
    when ``lesion_free``, else centred near a lesion pixel. None when no window qualifies."""
    from scipy import ndimage

    height, width = lesion.shape
    if lesion_free:
        body = ndimage.binary_fill_holes(image > 100)
        candidates = np.argwhere(body & (image < 100))
        near = ndimage.binary_dilation(lesion, iterations=4)
    else:
        candidates = np.argwhere(lesion)
    if len(candidates) == 0:
        return None
    for _ in range(tries):
        side = rng.uniform(0.35, 0.6)
        half_h, half_w = side * height / 2, side * width / 2
        row, col = candidates[rng.integers(len(candidates))] + 0.5
        if not lesion_free:
            row += rng.uniform(-0.25, 0.25) * 2 * half_h
            col += rng.uniform(-0.25, 0.25) * 2 * half_w
        row, col = float(np.clip(row, half_h, height - half_h)), float(np.clip(col, half_w, width - half_w))
        if lesion_free:
            top, left = int(row - half_h), int(col - half_w)
            if near[top : int(np.ceil(row + half_h)), left : int(np.ceil(col + half_w))].any():
                continue
        return torch.tensor([[side, 0.0, 2 * col / width - 1], [0.0, side, 2 * row / height - 1]])
    return None
