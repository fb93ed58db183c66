"""Benchmark: float32 segmentation with the bundled segmenter as stored (about 1.1 million weights
below float32's smallest normal number) against the same weights flushed to zero, as
``jcs.weights.load_model`` now loads them (``flush_subnormals``).

Both runs use the real sample scan's slices, the engine's input (card size, per-image
standardisation) and the same threads, in one process; it prints seconds per slice, the ratio and
the largest difference between the two outputs.

Run: ``python benchmarks/bench_subnormal.py [--slices 8] [--repeat 3]`` from the repository root.
"""

from __future__ import annotations

import argparse
import time

import torch
from jcs.io import read_ct
from jcs.models import model_from_state_dict
from jcs.preprocess import axial_slices_uint8, segmenter_input
from jcs.sample import sample_path
from jcs.weights import default_weights, find_weights, flush_subnormals, load_model
from safetensors.torch import load_file


def _seconds_per_slice(model: torch.nn.Module, x: torch.Tensor, repeat: int) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        out = model(x)  # warm-up
        start = time.perf_counter()
        for _ in range(repeat):
            out = model(x)
    return (time.perf_counter() - start) / (repeat * x.shape[0]), out[:, :1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    name = default_weights("segmenter")
    flushed, card = load_model(name)
    # as stored, no flush
    stored = model_from_state_dict(card.kind, load_file(str(find_weights(name).path)), **card.architecture)
    smallest = torch.finfo(torch.float32).tiny
    count = sum(int(((t != 0) & (t.abs() < smallest)).sum()) for t in stored.state_dict().values())
    slices = axial_slices_uint8(read_ct(sample_path()))[: args.slices]
    spec = card.data.get("input", {})
    size, standardize = int(spec.get("size", 512)), bool(spec.get("per_image_standardize"))
    x = segmenter_input(slices, size=size, standardize=standardize)
    slow, a = _seconds_per_slice(stored, x, args.repeat)
    fast, b = _seconds_per_slice(flushed, x, args.repeat)
    print(f"{name}: {count} subnormal weights as stored; {flush_subnormals(stored)} flushed now")
    print(f"float32, {args.slices} slices at {x.shape[-1]}², {torch.get_num_threads()} threads")
    print(f"  as stored: {slow * 1000:.1f} ms/slice")
    print(f"  flushed:   {fast * 1000:.1f} ms/slice  ({slow / fast:.1f}x faster)")
    print(f"  max |difference| of the outputs: {float((a - b).abs().max()):.2e}")


if __name__ == "__main__":
    main()
