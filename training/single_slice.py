"""Single 2-D slices read by the engine, one at a time, as a user who loads one PNG would get them.

    python -m training.single_slice --split-from CONFIG.yaml [--slice-labels CSV] --out DIR
           [--classifier NAME] [--segmenter NAME]

Each held-out slice with a lesion mask (from the config's split) and each slice of the labelled HU
scans (lung-windowed to 8 bits, as a PNG export would be) is diagnosed on its own by
``jcs.inference.DiagnosisEngine.diagnose``. Per slice it records the classifier's COVID-19
probability and the segmenter's opacified share of the slice's lung, and it tabulates how often
each single-slice rule calls a slice positive:

- ``classifier``: p(COVID-19) > 0.5 (the paper's slice rule);
- ``segmenter``: predicted opacification over 2 % of the slice's lung;
- ``both``: the two together.

On lesion-free slices that is the false-positive rate; on slices with lesions the sensitivity.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from jcs.decision import OPACIFIED_LUNG_FRACTION, SLICE_THRESHOLD
from jcs.inference import DiagnosisEngine
from jcs.io import CTVolume
from jcs.preprocess import axial_slices_uint8

from training.config import ClassifierConfig, load_config
from training.data import slice_label_series
from training.evaluate import validation_records
from training.explanations import source_name

RULES = ("classifier", "segmenter", "both")


def read_slice(engine: DiagnosisEngine, image: np.ndarray, name: str) -> dict[str, float]:
    """The engine's reading of one 8-bit slice: classifier probability and opacified lung share."""
    result = engine.diagnose(CTVolume(image=sitk.GetImageFromArray(image), is_hu=False, path=Path(name)))
    fraction = result.slice_lung_fraction
    return {
        "probability": float(result.slice_probabilities[0]),
        "lung_fraction": float(fraction[0]) if fraction is not None else float("nan"),
    }


def calls(row: dict[str, Any]) -> dict[str, bool]:
    by_classifier = row["probability"] > SLICE_THRESHOLD
    by_segmenter = bool(row["lung_fraction"] > OPACIFIED_LUNG_FRACTION)
    return {"classifier": by_classifier, "segmenter": by_segmenter, "both": by_classifier and by_segmenter}


def tabulate(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Share of slices called positive by each rule, per group (source and lesion/lesion-free)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(f"{row['group']} ({'lesion' if row['lesion'] else 'lesion-free'})", []).append(row)
    table = {}
    for group, items in sorted(groups.items()):
        called = [calls(r) for r in items]
        shares = {rule: float(np.mean([c[rule] for c in called])) for rule in RULES}
        table[group] = {"slices": len(items), **shares}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split-from", required=True, help="training config whose held-out slices to read")
    parser.add_argument("--slice-labels", help="labelled HU scans (COVID-CT-MD layout), read slice by slice")
    parser.add_argument("--classifier", help="registry classifier (default: the default one)")
    parser.add_argument("--segmenter", help="registry segmenter (default: the default one)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    engine = DiagnosisEngine.from_registry(
        args.classifier, args.segmenter, device="cpu", decision="segmenter", segment_policy="always"
    )
    val = validation_records(load_config(ClassifierConfig, args.split_from))
    rows = []
    for record in val:
        if record.mask is not None and record.mask.any():
            rows.append({"group": source_name(record), "patient": record.patient, "lesion": True,
                         **read_slice(engine, record.image, record.source)})
    if args.slice_labels:
        for patient, ct, labels in slice_label_series(args.slice_labels):
            for z, (image, label) in enumerate(zip(axial_slices_uint8(ct), labels, strict=True)):
                rows.append({"group": patient, "patient": patient, "lesion": bool(label),
                             **read_slice(engine, image, f"{patient}[{z}]")})
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "single_slices.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = tabulate(rows)
    (args.out / "single_slices.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    print("| slices | n | " + " | ".join(f"{r} rule: called positive" for r in RULES) + " |")
    print("|---|---|" + "---|" * len(RULES))
    for group, row in table.items():
        print(f"| {group} | {row['slices']} | " + " | ".join(f"{row[r]:.3f}" for r in RULES) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
