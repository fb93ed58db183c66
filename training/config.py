"""Training configurations as dataclasses; defaults are the paper's settings (§V-B).

A YAML file overrides any subset of fields, and ``--set key=value`` on the command line overrides the
file (values parsed as YAML scalars, e.g. ``--set iterations=100 --set lr=1e-3``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


@dataclass
class DataConfig:
    """Where the slices come from and how patients are split (§IV).

    Sources (any combination): ``lists`` JCS list files (``image mask`` per line, 8-bit PNG/JPG);
    ``volumes`` CSV files with columns ``image,mask[,patient]`` (CT volume + lesion labelmap);
    ``slice_labels`` CSVs like COVID-CT-MD's (``patient,file,infected_slice_label``; no masks);
    ``feature_lists`` lines ``features.mat [mask.png|-] [label]`` of the COVID-CS feature release.
    """

    lists: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    slice_labels: list[str] = field(default_factory=list)
    feature_lists: list[str] = field(default_factory=list)
    feature_key: str = "vgg_feats"
    repeats: dict[str, int] = field(default_factory=dict)  # source → times each training slice is drawn
    val_patients: list[str] = field(default_factory=list)
    val_count: int = 0
    split_seed: int = 0
    window_level: float = -600.0
    window_width: float = 1500.0


@dataclass
class SegmenterConfig:
    """Segmenter training (§III-B, §V-B): Adam 2.5e-5, poly 0.9, 21,000 iterations, batch 4, 512²."""

    data: DataConfig = field(default_factory=DataConfig)
    arch: str = "jcs"  # "jcs" (jcs.models.build_segmenter) or "unet" (training.unet baseline)
    joint: bool = False
    width_mult: float = 1.0
    unet_width: int = 16
    feature_input: bool = False
    classifier_checkpoint: str = ""  # joint mode: classifier weights for the Res2Net branch (§III-B4)
    init_from: str = ""  # fine-tune: start from a training checkpoint (.pt) or registry weights (a name)
    size: int = 512
    crop: int = 0  # > 0: train on random crop² windows of the size² slice (inference stays at size²)
    batch_size: int = 4
    iterations: int = 21000
    lr: float = 2.5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    poly_power: float = 0.9
    warmup_iterations: int = 0
    augment: str = "paper"  # "paper": flip + crop; "strong": + scale/rotation, windows, gamma, CLAHE, noise;
    # "robust": strong + right-angle rotations and flips
    per_image_norm: bool = False
    test_time_flip: bool = False  # inference: average with the mirrored slice's prediction
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    seed: int = 0
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda
    threads: int = 0  # torch intra-op threads; 0 = leave PyTorch's default
    workers: int = 0  # data-loader processes; 0 = prepare batches in the training process
    out_dir: str = "runs/segmenter"
    checkpoint_every: int = 1000
    keep_checkpoints: bool = False  # also keep iter_NNNNNN.pt next to last.pt
    eval_every: int = 0
    log_every: int = 10
    time_limit_min: float = 0.0  # stop (and checkpoint) after this many minutes; 0 = no limit
    schedule_by_time: bool = False  # poly decay over max(iteration, time) progress: ends decayed at the limit
    time_limit_clock: str = "wall"  # "wall" or "cpu" (this process's CPU time)


@dataclass
class ClassifierConfig:
    """Classifier training (§III-A, §V-B): SGD 0.1, ÷10 every 30 epochs, 100 epochs, batch 256, 224²."""

    data: DataConfig = field(default_factory=DataConfig)
    depth: int = 101
    width_mult: float = 1.0
    feature_input: bool = False
    init_from: str = ""  # fine-tune: start from a training checkpoint (.pt) or registry weights (a name)
    size: int = 224
    resize: int = 256
    batch_size: int = 256
    epochs: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    step_epochs: int = 30
    step_gamma: float = 0.1
    warmup_iterations: int = 0
    mixup: bool = True
    mixup_alpha: float = 0.5  # λ ~ Beta(α, α), eq. (3)
    attention_weight: float = 1.0  # weight of the activation-map loss, eq. (4)
    # "covid": the COVID-19 class map, ReLU, min-max (no gradient where the map is negative everywhere);
    # "log-odds": the (COVID-19 − other) map, min-max without ReLU: what the log-odds Grad-CAM shows
    attention_map: str = "covid"
    attention_balanced: bool = False  # eq. (4) with lesion and lesion-free cells weighted equally
    # Share of masked COVID-19 slices replaced by a zoomed window without lesion pixels, labelled
    # lesion-free (and as many by a zoomed window on a lesion, so zoom is no cue): negatives in every
    # look, so that only the lesions can tell the classes apart.
    lesion_free_crops: float = 0.0
    augment: str = "paper"  # "paper": flip + crop; "strong": + intensity/geometry augmentation
    per_image_norm: bool = False  # input standardised per image (jcs.preprocess.standardize_per_image)
    whole_slice: bool = False  # the whole slice resized to size² (no centre crop): Grad-CAM covers it all
    output_stride: int = 32  # 16: dilated last stage, a Grad-CAM grid twice as fine
    precision: str = "auto"
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    workers: int = 0
    out_dir: str = "runs/classifier"
    checkpoint_every_epochs: int = 10
    time_limit_clock: str = "wall"
    keep_checkpoints: bool = False
    log_every: int = 10
    time_limit_min: float = 0.0


def _coerce(value: Any, current: Any) -> Any:
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def apply_overrides(obj: Any, values: dict[str, Any], where: str = "config") -> None:
    """Set dataclass fields of ``obj`` (recursively) from a mapping; unknown keys are an error."""
    known = {f.name: f for f in fields(obj)}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {key!r} must be a mapping")
            apply_overrides(current, value, f"{where}.{key}")
        else:
            setattr(obj, key, _coerce(value, current))


def load_config(cls: type[T], path: str | Path | None = None, sets: list[str] | None = None) -> T:
    """Build ``cls`` from its defaults, a YAML file and ``key=value`` overrides (dotted keys allowed)."""
    config = cls()
    if path:
        text = Path(path).read_text(encoding="utf-8")
        values = yaml.safe_load(text) or {}
        if not isinstance(values, dict):
            raise ValueError(f"config file {path} must hold a mapping of settings")
        apply_overrides(config, values, str(path))
    for item in sets or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        nested: dict[str, Any] = {}
        cursor = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = yaml.safe_load(raw)
        apply_overrides(config, nested, "--set")
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples as lists), for checkpoints and model cards."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def run_training_command(
    config_type: type[T],
    train: Callable[[T, str | None], object],
    description: str,
    set_example: str,
    argv: list[str] | None = None,
) -> int:
    """The command line shared by the training scripts: ``--config``, repeated ``--set``, ``--resume``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML file overriding the paper defaults")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one setting, e.g. {set_example}",
    )
    parser.add_argument(
        "--resume", help="checkpoint to continue from, or 'auto' for OUT_DIR/last.pt if present"
    )
    args = parser.parse_args(argv)
    train(load_config(config_type, args.config, args.set), args.resume)
    return 0
