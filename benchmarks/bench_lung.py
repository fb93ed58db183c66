"""Benchmark of jcs.lung.segment_lungs on a 512x512x300 chest phantom (target: <= 10 s on 2 CPU cores),
and of jcs.quantify.quantify on the same case with six lesions.

Run: python benchmarks/bench_lung.py [--slices 300] [--size 512]. Prints times and Dice per lung.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))

from jcs.lung import segment_lungs  # noqa: E402
from jcs.quantify import quantify  # noqa: E402
from phantoms import LesionSpec, make_chest_phantom  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    spacing = (1.0, 0.7, 0.7)
    lesions = [LesionSpec(side=side, zone=zone, radius_mm=15.0, kind=kind, position=position)
               for side, zone, kind, position in (("right", "upper", "ggo", "central"),
                                                  ("right", "lower", "consolidation", "peripheral"),
                                                  ("left", "middle", "ggo", "peripheral"),
                                                  ("left", "lower", "ggo", "central"),
                                                  ("left", "upper", "consolidation", "central"),
                                                  ("right", "middle", "ggo", "peripheral"))]
    phantom = make_chest_phantom(shape=(args.slices, args.size, args.size), spacing=spacing, lesions=lesions,
                                 n_vessels=400)
    hu = phantom.hu
    times, cpu = [], []
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        labels = segment_lungs(hu, spacing)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    dice = [2 * np.count_nonzero((labels == k) & (phantom.lungs == k))
            / (np.count_nonzero(labels == k) + np.count_nonzero(phantom.lungs == k)) for k in (1, 2)]
    print(f"segment_lungs {hu.shape}: best {min(times):.2f} s wall, {min(cpu):.2f} s CPU of {args.repeat} "
          f"(wall: {', '.join(f'{t:.2f}' for t in times)}); Dice right {dice[0]:.4f}, left {dice[1]:.4f}")
    start, start_cpu = time.perf_counter(), time.process_time()
    result = quantify(phantom.lesion_mask, labels, phantom.axial_image, hu=hu)
    print(f"quantify {hu.shape}, {result.summary['lesion_count']} lesions: "
          f"{time.perf_counter() - start:.2f} s wall, {time.process_time() - start_cpu:.2f} s CPU")


if __name__ == "__main__":
    main()
