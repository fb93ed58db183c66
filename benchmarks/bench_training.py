"""Segmenter training throughput: iterations/s with batches prepared in the training process
(``workers: 0``, the baseline) and in loader processes (``workers: N``), measured in the same run.

Uses synthetic 512x512 slices (a list file in a temporary folder) and the bundled recipe
(``training/configs/ct100_segmenter.yaml``: JCS x0.25 at 256², strong augmentation, per-image
standardisation), with overrides. Each run trains ``--iterations`` iterations after a short warm-up run
and reports iterations/s of the timed part; the ratio is loader/baseline.

Run: ``python benchmarks/bench_training.py [--workers 6] [--iterations 40] [--set width_mult=1.0 ...]``
from the repository root. Measured on an H100 (full width, 256², batch 8, bf16): 7.6 it/s without
loader processes, 18.8 it/s with 12 (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training import train_segmenter  # noqa: E402
from training.config import SegmenterConfig, load_config  # noqa: E402


def write_slices(folder: Path, count: int = 32, size: int = 512) -> Path:
    """``count`` synthetic lung-window slices with a disc lesion each, and their list file."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    lines = []
    for i in range(count):
        disc = (yy - size // 2 - 2 * i) ** 2 + (xx - size // 3) ** 2 < (size // 8) ** 2
        image = np.clip(60 + rng.normal(0, 10, (size, size)) + 120 * disc, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"image{i}.png")
        Image.fromarray(disc.astype(np.uint8)).save(folder / f"mask{i}.png")
        lines.append(f"image{i}.png mask{i}.png")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


def iterations_per_second(config: SegmenterConfig, iterations: int, warmup: int) -> float:
    """Train ``warmup`` iterations, then time ``iterations`` more (resumed from the warm-up checkpoint)."""
    config.iterations = warmup
    train_segmenter.train(config)
    config.iterations = warmup + iterations
    start = time.perf_counter()
    train_segmenter.train(config, resume="auto")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="loader processes of the compared run")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        list_file = write_slices(folder)
        rates = {}
        for workers in (0, args.workers):
            recipe = REPO / "training" / "configs" / "ct100_segmenter.yaml"
            config = load_config(SegmenterConfig, recipe, sets=args.set)
            config.data.lists, config.data.val_patients = [str(list_file)], []
            config.time_limit_min, config.eval_every, config.checkpoint_every = 0, 0, 10**9
            config.workers, config.out_dir = workers, str(folder / f"run{workers}")
            rates[workers] = iterations_per_second(config, args.iterations, args.warmup)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        shape = f"batch {config.batch_size}, {config.size}², width {config.width_mult}"
        print(f"\nsegmenter training on {device}: {shape}")
        for workers, rate in rates.items():
            print(f"  workers {workers:2d}: {rate:6.2f} it/s")
        print(f"  loader speed-up: {rates[args.workers] / rates[0]:.2f}x")


if __name__ == "__main__":
    main()
