"""Benchmark: `jcs diagnose` on a cohort in one process against one process per case.

The bundled sample scan is diagnosed ``--cases`` times with the bundled weights, first as separate
`jcs diagnose CASE` processes (each imports the engine and loads the models), then as one
`jcs diagnose CASE CASE ... ` cohort (imports and models once). Both write to fresh folders; the
script prints each variant's wall time, the ratio and checks that every case got the same decision.

Run: ``python benchmarks/bench_cohort.py [--cases 3]`` from the repository root.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jcs.sample import sample_path


def _jcs(*args: str) -> None:
    command = [sys.executable, "-m", "jcs.cli", "diagnose", *args, "--quiet"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=3)
    args = parser.parse_args()
    sample = str(sample_path())
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        start = time.perf_counter()
        for case in range(args.cases):
            _jcs(sample, "--out", str(root / "separate" / f"case{case}"))
        separate_s = time.perf_counter() - start
        start = time.perf_counter()
        _jcs(*[sample] * args.cases, "--out", str(root / "cohort"))
        cohort_s = time.perf_counter() - start
        separate = [
            json.loads((root / "separate" / f"case{case}" / "results.json").read_text())["case"]
            for case in range(args.cases)
        ]
        with open(root / "cohort" / "cases.csv", newline="") as handle:
            cohort = list(csv.DictReader(handle))
    readings = [(str(one["positive"]), one["positive_slice_count"]) for one in separate]
    same = readings == [(row["positive"], int(row["positive_slice_count"])) for row in cohort]
    print(f"{args.cases} cases of the sample scan ({sample})")
    print(f"separate processes: {separate_s:.1f} s ({separate_s / args.cases:.1f} s per case)")
    print(f"one cohort:         {cohort_s:.1f} s ({cohort_s / args.cases:.1f} s per case)")
    print(f"ratio separate / cohort: {separate_s / cohort_s:.2f}; same decisions and counts: {same}")


if __name__ == "__main__":
    main()
