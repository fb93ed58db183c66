"""Benchmark of jcs.lung.segment_lungs on a 512x512x300 chest phantom (target: <= 10 s on 2 CPU cores).

Run: python benchmarks/bench_lung.py [--slices 300] [--size 512]. Prints the time and Dice per lung.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))

from jcs.lung import segment_lungs  # noqa: E402
from phantoms import make_chest_phantom  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    spacing = (1.0, 0.7, 0.7)
    phantom = make_chest_phantom(shape=(args.slices, args.size, args.size), spacing=spacing, n_vessels=400)
    hu = phantom.hu
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        labels = segment_lungs(hu, spacing)
        times.append(time.perf_counter() - start)
    dice = [2 * np.count_nonzero((labels == k) & (phantom.lungs == k))
            / (np.count_nonzero(labels == k) + np.count_nonzero(phantom.lungs == k)) for k in (1, 2)]
    print(f"segment_lungs {hu.shape}: best {min(times):.2f} s of {args.repeat} "
          f"(all: {', '.join(f'{t:.2f}' for t in times)}); Dice right {dice[0]:.4f}, left {dice[1]:.4f}")


if __name__ == "__main__":
    main()
