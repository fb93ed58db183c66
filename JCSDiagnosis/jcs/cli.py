"""``jcs`` command line: ``diagnose``, ``quantify`` and ``weights list|import-official``.

User errors (bad input, missing weights, cancelled) end with one line on stderr and exit code 2;
no traceback. Arguments and the output folder are checked before any work; inputs pass
:mod:`jcs.validate` before the models load; outputs are written through :mod:`jcs.outputs` (never over
a user's files without ``--overwrite``, atomically, under a lock). Everything runs offline.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

import jcs
from jcs.errors import InputError, JCSError
from jcs.inference import (
    DECISIONS,
    PRECISIONS,
    SEGMENT_POLICIES,
    SLICE_THRESHOLD,
    DiagnosisEngine,
    DiagnosisResult,
    scaled_threshold,
)
from jcs.io import CTVolume, read_ct
from jcs.outputs import FolderLock, check_out_dir, staged_folder, write_text_atomic
from jcs.weights import WeightsCard

if TYPE_CHECKING:
    from jcs.dicomseg import ExportedFiles

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
LESION_MARGIN_MM = 10.0  # predicted opacities farther than this from the lungs are dropped (HU volumes)
# Share of the progress bar given to each stage of `jcs diagnose`.
_STAGE_SPAN = {
    "prepare": (0.0, 0.05),
    "classify": (0.05, 0.55),
    "segment": (0.55, 0.85),
    "done": (0.85, 0.85),
    "quantify": (0.85, 1.0),
}
RESULTS_CSV_FIELDS = (
    "index",
    "probability",
    "positive",
    "opacification_area_px",
    "opacification_area_mm2",
    "lung_area_mm2",
    "position_z_mm",
    "file",
)
#: Columns of the cohort table ``cases.csv`` (one row per input of `jcs diagnose`).
CASES_CSV_FIELDS = (
    "case",
    "input",
    "status",
    "positive",
    "decision",
    "positive_slice_count",
    "threshold",
    "classifier_positive_slice_count",
    "axial_slices",
    "opacification_volume_ml",
    "opacification_percent",
    "lesion_count",
    "seconds",
    "error",
    "label",
)
LABEL_VALUES = {"1": True, "positive": True, "0": False, "negative": False}
OVERWRITE_HELP = (
    "replace the jcs outputs of an earlier run in a non-empty --out (default: a non-empty --out is "
    "refused, so nothing you have is overwritten); other files there are left alone"
)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jcs",
        description="Explainable COVID-19 diagnosis of chest CT (JCS, Wu et al., IEEE TIP 2021). "
        "Research use only; not for clinical diagnosis.",
    )
    parser.add_argument("--version", action="version", version=f"jcs {jcs.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    diagnose = commands.add_parser(
        "diagnose",
        help="classify every axial slice, explain with Grad-CAM, segment lesions, quantify",
        description="Writes heatmap.nrrd, lesions.nrrd, lungs.nrrd (input geometry), results.json, "
        "results.csv, summary.csv, lesions.csv and slices.csv into --out (with --dicom-seg also "
        "lesions.seg.dcm and lesions.sr.dcm). With several inputs (a "
        "cohort) each case gets its own folder in --out and cases.csv lists one row per case; a case "
        "that fails is recorded there and the others go on.",
    )
    diagnose.add_argument(
        "input", nargs="*", type=Path, help="CT file, DICOM folder or 2-D PNG/JPG slice (several: a cohort)"
    )
    diagnose.add_argument("--sample", action="store_true", help="run on the sample scan shipped with jcs")
    diagnose.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder, created if needed; it must be new or empty unless --overwrite is given. The "
        "outputs appear all at once when the run ends (Ctrl-C leaves no OUT; a killed run leaves a folder "
        "named OUT.incomplete-*), and a folder in use by another run is refused",
    )
    diagnose.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    diagnose.add_argument("--classifier", help="classifier weights name (default: the bundled one)")
    diagnose.add_argument("--segmenter", help="segmenter weights name (default: the bundled one)")
    diagnose.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda", "mps"),
        help="where the models run: 'auto' takes a CUDA or Apple GPU when present, else the CPU (default)",
    )
    diagnose.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="number format of the models: 'auto' is fp16 on CUDA, bf16 on CPUs with native bf16, else "
        "fp32 (default); fp16 needs CUDA",
    )
    diagnose.add_argument(
        "--threshold",
        type=_int_at_least(0),
        help="case is positive when more than T slices are (default: the weights' card, else 25; under "
        "the segmenter rule without a card value, 25 mm of slices)",
    )
    diagnose.add_argument(
        "--decision",
        default="auto",
        choices=("auto", *DECISIONS),
        help="which slices count as positive: 'classifier' (the paper's: COVID-19 probability > 0.5) or "
        "'segmenter' (predicted opacification covers more than a share of the slice's lung); 'auto' "
        "follows the classifier's model card (default)",
    )
    diagnose.add_argument(
        "--segment",
        default="positive-only",
        choices=SEGMENT_POLICIES,
        help="when lesions are segmented: 'positive-only' for cases read positive (default), 'always' for "
        "every case (slower)",
    )
    diagnose.add_argument(
        "--batch-size", type=_int_at_least(1), help="slices per batch (default: chosen per device)"
    )
    diagnose.add_argument(
        "--lesion-margin-mm",
        type=_finite_float,
        default=LESION_MARGIN_MM,
        help="CT volumes: drop predicted lesion voxels farther than this from the lungs; negative keeps "
        f"all (default {LESION_MARGIN_MM:g})",
    )
    diagnose.add_argument(
        "--labels",
        type=Path,
        help="cohorts: CSV with columns case (the case's folder name or its input path) and label "
        "(1/positive or 0/negative), UTF-8 (a file that is not is read as Windows-1252, with a note); "
        "cases.csv then gives each case's label and sensitivity and specificity are printed",
    )
    diagnose.add_argument(
        "--dicom-seg",
        action="store_true",
        help="DICOM series inputs: also write the lesions as DICOM-SEG (lesions.seg.dcm) and a TID 1500 "
        "measurement report referencing it (lesions.sr.dcm), ready to send to PACS",
    )
    diagnose.add_argument("--quiet", action="store_true", help="no progress bar")

    quantify = commands.add_parser(
        "quantify",
        help="quantify a (possibly edited) lesion mask",
        description="Writes summary.csv, lesions.csv, slices.csv and results.json into --out (with "
        "--dicom-seg also lesions.seg.dcm and lesions.sr.dcm). The lesion mask must lie on the CT's "
        "grid (same size, spacing, origin and axes, in any axis order; a mask on another grid is "
        "resampled with a note only when all its lesion voxels lie inside the CT, else it is refused "
        "with their count). Every non-zero voxel is lesion when the mask holds one label value (1, "
        "255, ...); masks with several labels, negative or fractional values (probability maps) are "
        "refused: threshold or merge them first.",
    )
    quantify.add_argument("ct", type=Path, help="CT file or DICOM folder")
    quantify.add_argument(
        "lesion_mask",
        type=Path,
        help="lesion mask on the CT's grid (any format SimpleITK reads): 0 background, one non-zero "
        "label value for lesion",
    )
    quantify.add_argument(
        "--lungs",
        type=Path,
        help="lung labelmap (1 right, 2 left) or lobe labelmap (all five lobes 1-5, or TotalSegmentator "
        "10-14); other labels are refused, naming them (default: the lungs are segmented)",
    )
    quantify.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder; new or empty unless --overwrite (as for diagnose)",
    )
    quantify.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    quantify.add_argument(
        "--dicom-seg",
        action="store_true",
        help="CT given as a DICOM series: also write the mask as DICOM-SEG (lesions.seg.dcm, semi-automatic) "
        "and a TID 1500 report of its measurements (lesions.sr.dcm)",
    )

    weights = commands.add_parser("weights", help="list or import model weights")
    weight_commands = weights.add_subparsers(dest="weights_command", required=True)
    weight_commands.add_parser("list", help="show installed weights (user registry and bundled)")
    importer = weight_commands.add_parser(
        "import-official",
        help="convert an official JCS checkpoint (.pth/.safetensors) into the user registry",
    )
    importer.add_argument("path", type=Path, help="the official checkpoint file")
    importer.add_argument("--name", required=True, help="registry name for the weights")
    importer.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing user entry NAME, or hide a bundled entry of that name (default: refused)",
    )
    return parser


_BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {elapsed} elapsed, {remaining} left"  # no "%/s" rate


class _Progress:
    """Maps engine stage fractions onto one tqdm bar (percent of the whole run)."""

    def __init__(self, enabled: bool) -> None:
        self.bar = tqdm(total=100, disable=not enabled, file=sys.stderr, leave=False, bar_format=_BAR_FORMAT)

    def __call__(self, stage: str, fraction: float) -> None:
        start, stop = _STAGE_SPAN.get(stage, (0.95, 1.0))
        self.bar.set_description(stage)
        self.bar.n = round(100 * (start + (stop - start) * fraction))
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _describe_weights(kind: str, card: WeightsCard) -> str:
    return f"{kind}: {card.name} (sha256 {card.sha256[:16]}, {card.source} weights, {card.path})"


def _slice_spacing(ct: CTVolume) -> float | None:
    if ct.is_2d or not ct.is_hu:
        return None
    return float(ct.axial_image().GetSpacing()[2])


def _quantify(
    ct: CTVolume, result: DiagnosisResult, notes: list[str], lesion_margin_mm: float
) -> tuple[np.ndarray, Any]:
    """Lung labels (jcs.lung, axial grid) and the lesion tables (jcs.quantify) of a diagnosis.

    On HU volumes, predicted lesion voxels farther than ``lesion_margin_mm`` from the lungs are
    dropped from ``result.lesion_mask`` (negative: keep all), and a note says how much.
    """
    from jcs.lung import drop_far_lesions, segment_lungs
    from jcs.quantify import quantify

    axial = ct.axial_image()
    array = ct.axial_array()
    sx, sy, sz = axial.GetSpacing()
    if result.lungs is not None:  # found by the engine for the segmenter decision rule
        lungs = result.lungs
    else:
        try:
            lungs = segment_lungs(array, (sz, sy, sx), is_hu=ct.is_hu)
        except InputError as exc:
            notes.append(f"lungs could not be segmented ({exc}); lung-relative fields are empty")
            lungs = np.zeros(array.shape, dtype=np.uint8)
    dropped = drop_far_lesions(result.lesion_mask, lungs, (sz, sy, sx), lesion_margin_mm) if ct.is_hu else 0
    if dropped:
        notes.append(
            f"{dropped * sx * sy * sz / 1000:.1f} mL of predicted opacification lay more than "
            f"{lesion_margin_mm:g} mm from the lungs and was dropped (--lesion-margin-mm)"
        )
    return lungs, quantify(
        result.lesion_mask,
        lungs,
        axial,
        hu=array if ct.is_hu else None,
        slice_probabilities=result.slice_probabilities,
        heatmap=result.heatmap,
        spacing_known=ct.is_hu,
    )


def _slice_rows(ct: CTVolume, result: DiagnosisResult, tables: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per axial slice: index, probability, decision, plus the quantification's slice fields
    (among them ``opacified_lung_fraction``, the segmenter rule's evidence)."""
    quant = {row["slice_index"]: row for row in tables.get("slices", [])}
    rows = []
    positive = result.slice_positive.tolist()
    for index, probability in enumerate(result.slice_probabilities.tolist()):
        row: dict[str, Any] = {
            "index": index,
            "probability": probability,
            "positive": positive[index],
        }
        if ct.dicom_files is not None and index < len(ct.dicom_files):
            row["file"] = ct.dicom_files[index].name
        extra = quant.get(index, {})
        row.update({k: v for k, v in extra.items() if k not in ("slice_index", "classifier_probability")})
        rows.append(row)
    return rows


def _decision_rule(result: DiagnosisResult) -> str:
    if result.decision == "segmenter":
        slice_rule = (
            f"the segmenter's opacification covers more than {100 * result.min_lung_fraction:g} % of its "
            "lung area"
        )
    else:
        slice_rule = f"its COVID-19 probability > {SLICE_THRESHOLD}"
    return f"positive when positive_slice_count > threshold; a slice is positive when {slice_rule}"


def _write_outputs(
    ct: CTVolume,
    result: DiagnosisResult,
    out: Path,
    engine: DiagnosisEngine,
    timings: dict[str, float],
    progress: _Progress,
    lesion_margin_mm: float = LESION_MARGIN_MM,
    dicom_seg: bool = False,
) -> dict[str, Any]:
    from jcs.quantify import write_tables

    notes = [*ct.notes, *result.notes]
    progress("quantify", 0.0)
    t0 = time.perf_counter()
    lungs, quantification = _quantify(ct, result, notes, lesion_margin_mm)
    tables = write_tables(quantification, out)
    timings["quantify"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sitk.WriteImage(ct.from_axial(result.heatmap.astype(np.float32)), str(out / "heatmap.nrrd"), True)
    sitk.WriteImage(ct.from_axial(result.lesion_mask.astype(np.uint8)), str(out / "lesions.nrrd"), True)
    sitk.WriteImage(ct.from_axial(lungs.astype(np.uint8)), str(out / "lungs.nrrd"), True)
    slices = _slice_rows(ct, result, tables)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=RESULTS_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in slices:
            writer.writerow({k: "" if row.get(k) is None else row.get(k, "") for k in RESULTS_CSV_FIELDS})
    timings["write"] = time.perf_counter() - t0
    progress("quantify", 1.0)

    n_slices = len(slices)
    image = ct.image
    payload = {
        "engine_version": jcs.__version__,
        "input": {
            "path": str(ct.path),
            "is_hu": ct.is_hu,
            "size": list(image.GetSize()),
            "spacing_mm": list(image.GetSpacing()),
            "origin_mm": list(image.GetOrigin()),
            "direction": list(image.GetDirection()),
            "series_instance_uid": ct.series_instance_uid,
            "skipped_series": list(ct.skipped_series),
            "axial_slices": n_slices,
            "slice_order": "axial grid, index 0 = most inferior",
        },
        "case": {
            "positive": result.positive,
            "positive_slice_count": result.positive_slice_count,
            "threshold": result.threshold,
            "decision": result.decision,
            "decision_rule": _decision_rule(result),
            "classifier_positive_slice_count": result.classifier_positive_count,
            **({"min_lung_fraction": result.min_lung_fraction} if result.decision == "segmenter" else {}),
            "suggested_threshold": scaled_threshold(n_slices, _slice_spacing(ct)),
            "segmented": result.segmented,
            "segment_policy": engine.segment_policy,
        },
        "slices": slices,
        "weights": result.weights,
        "device": result.device,
        "precision": result.precision,
        "timings_s": {**result.timings_s, **timings},
        "notes": notes,
        "summary": tables.get("summary", {}),
        "lesions": tables.get("lesions", []),
        "outputs": {
            "heatmap": "heatmap.nrrd",
            "lesions": "lesions.nrrd",
            "lungs": "lungs.nrrd (0 outside, 1 right lung, 2 left lung)",
            "tables": ["results.csv", "summary.csv", "lesions.csv", "slices.csv"],
        },
        "intended_use": "Research use only. Not a medical device; not for clinical diagnosis.",
    }
    if dicom_seg:
        t0 = time.perf_counter()
        exported = _export_dicom_seg(ct, result.lesion_mask, payload, out)
        payload["outputs"]["dicom_seg"] = exported.seg_path.name
        payload["outputs"]["dicom_sr"] = exported.sr_path.name
        payload["timings_s"]["dicom_seg"] = time.perf_counter() - t0
    with open(out / "results.json", "w", encoding="utf-8") as handle:  # a staging folder: see jcs.outputs
        json.dump(payload, handle, indent=2, allow_nan=False)
    return payload


def _export_dicom_seg(
    ct: CTVolume, lesion_mask: np.ndarray, payload: dict[str, Any], out: Path
) -> ExportedFiles:
    """lesions.seg.dcm and lesions.sr.dcm (jcs.dicomseg) of an unedited diagnosis."""
    from jcs.dicomseg import ReportValues, export_seg_and_report

    case = payload["case"]
    values = ReportValues.from_summary(
        payload["summary"],
        positive_slice_count=case["positive_slice_count"],
        threshold=case["threshold"],
        case_positive=case["positive"],
    )
    return export_seg_and_report(
        mask=ct.from_axial(lesion_mask.astype(np.uint8)),
        source_files=list(ct.dicom_files or []),
        output_dir=out,
        engine=payload,
        edited=False,
        values=values,
    )


def _diagnose(args: argparse.Namespace) -> int:
    if args.sample == bool(args.input):
        raise InputError("give either INPUT paths (one or more) or --sample")
    if args.sample:
        from jcs.sample import SAMPLE_CITATION, sample_path

        inputs = [sample_path()]
        print(f"sample: {inputs[0]} ({SAMPLE_CITATION})")
    else:
        inputs = list(args.input)
    if args.labels is not None and len(inputs) < 2:
        raise InputError("--labels is for cohorts: give several INPUT paths")
    labels = _read_labels(args.labels) if args.labels is not None else None
    if len(inputs) == 1 and not inputs[0].exists():
        raise InputError(f"{inputs[0]}: no such file or folder")
    check_out_dir(args.out, overwrite=args.overwrite)
    with FolderLock(args.out):
        return _diagnose_locked(args, inputs, labels)


def _diagnose_locked(args: argparse.Namespace, inputs: list[Path], labels: dict[str, bool] | None) -> int:
    """`jcs diagnose` once the arguments are checked and ``--out`` is locked."""
    t0 = time.perf_counter()
    # One input is read before the models load, so a bad file fails at once.
    first = read_ct(inputs[0]) if len(inputs) == 1 else None
    if first is not None and args.dicom_seg:
        from jcs.dicomseg import check_source_series

        check_source_series(first)  # before the models load: a refused input costs nothing
    read_s = time.perf_counter() - t0
    engine = DiagnosisEngine.from_registry(
        args.classifier,
        args.segmenter,
        device=args.device,
        threshold=args.threshold,
        segment_policy=args.segment,
        decision=args.decision,
        precision=args.precision,
        batch_size=args.batch_size,
    )
    print(_describe_weights("classifier", engine.classifier_card))
    if engine.segmenter_card is not None:
        print(_describe_weights("segmenter", engine.segmenter_card))
    else:
        print("segmenter: none installed; lesions will not be segmented")
    if first is not None:
        _diagnose_case(engine, first, args.out, args, read_s)
        print(f"outputs: {args.out}")
        return 0
    return _diagnose_cohort(engine, inputs, args, labels)


def _read_labels(path: Path) -> dict[str, bool]:
    """``case -> COVID-19 positive`` from a labels CSV (columns case, label).

    UTF-8 (with or without BOM); a file that is not valid UTF-8 is read as Windows-1252 (what Excel
    writes on Windows) and a note says so. A case listed twice with different labels is refused.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the labels file {path}: {exc.strerror}") from exc
    if b"\0" in raw:
        raise InputError(f"{path}: not a text CSV file (it holds NUL bytes); save the labels as CSV")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
        print(f"note: {path} is not UTF-8; read as Windows-1252")
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc})") from exc
    if not rows or not {"case", "label"} <= set(rows[0]):
        raise InputError(f"{path}: a labels file needs the columns 'case' and 'label'")
    labels: dict[str, bool] = {}
    for row in rows:
        case = str(row["case"] or "").strip()
        value = LABEL_VALUES.get(str(row["label"] or "").strip().lower())
        if value is None:
            raise InputError(
                f"{path}: label {row['label']!r} of case {row['case']!r} is not 1/0/positive/negative"
            )
        if labels.get(case, value) != value:
            raise InputError(f"{path}: case {case!r} is listed with two different labels")
        labels[case] = value
    return labels


def _diagnose_case(
    engine: DiagnosisEngine, ct: CTVolume, out: Path, args: argparse.Namespace, read_s: float
) -> dict[str, Any]:
    """Diagnose one read case (``read_s``: seconds its reading took) and write it into ``out``;
    prints its reading; returns what results.json holds."""
    t_start = time.perf_counter() - read_s
    timings: dict[str, float] = {"read": read_s}
    progress = _Progress(enabled=not args.quiet)
    try:
        with staged_folder(out, overwrite=args.overwrite) as staging:  # `out` appears complete or not at all
            result = engine.diagnose(ct, progress=progress)
            payload = _write_outputs(
                ct, result, staging, engine, timings, progress, args.lesion_margin_mm, args.dicom_seg
            )
    finally:
        progress.close()
    timings["total"] = time.perf_counter() - t_start
    case = payload["case"]
    n = len(payload["slices"])
    verdict = "POSITIVE" if case["positive"] else "negative"
    if result.decision == "segmenter":
        counted = (
            f"by the segmenter rule: {case['positive_slice_count']} of {n} slices with opacification over "
            f"{100 * result.min_lung_fraction:g} % of the lung, threshold {case['threshold']}; classifier: "
            f"{case['classifier_positive_slice_count']} slices positive"
        )
    else:
        counted = f"{case['positive_slice_count']} of {n} slices positive, threshold {case['threshold']}"
    print(f"case: {verdict} ({counted}; {result.device} {result.precision}, {timings['total']:.1f} s)")
    if not ct.is_2d and case["suggested_threshold"] != case["threshold"]:
        print(
            f"note: for {n} slices the paper's rule T=25 (about 300 slices of ~1 mm) scales to "
            f"T={case['suggested_threshold']}; pass --threshold to use it"
        )
    for note in payload["notes"]:
        print(f"note: {note}")
    return payload


def _case_names(inputs: Sequence[Path]) -> list[str]:
    """One output folder name per input: its file or folder name without extension, made unique."""
    names: list[str] = []
    for path in inputs:
        base = re.sub(r"\.(nii\.gz|nii|nrrd|mha|mhd|png|jpe?g|dcm)$", "", path.resolve().name, flags=re.I)
        name, k = base or "case", 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _write_cases(rows: Sequence[dict[str, Any]], path: Path) -> None:
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=CASES_CSV_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in CASES_CSV_FIELDS})
    write_text_atomic(path, handle.getvalue())


def _diagnose_cohort(
    engine: DiagnosisEngine,
    inputs: Sequence[Path],
    args: argparse.Namespace,
    labels: dict[str, bool] | None = None,
) -> int:
    """Each input into ``--out/NAME``; ``cases.csv`` with one row per case. A failing case is recorded
    (status ``error``) and the cohort goes on; the exit code is 2 when any case failed. With
    ``labels`` (case name or input path -> positive), each row gets its label and the decisions are
    scored against them."""
    from jcs.outputs import INCOMPLETE_MARKER

    rows = []
    names = _case_names(inputs)
    args.out.mkdir(parents=True, exist_ok=True)
    marker = args.out / INCOMPLETE_MARKER  # until the last case: cases.csv lists the finished ones
    marker.write_text("This cohort is incomplete: jcs is running or was interrupted; cases.csv lists the "
                      "cases that finished.\n", encoding="utf-8")
    for position, (path, name) in enumerate(zip(inputs, names, strict=True), start=1):
        print(f"[{position}/{len(inputs)}] {name}: {path}")
        row: dict[str, Any] = {"case": name, "input": str(path)}
        if labels is not None:
            row["label"] = labels.get(name, labels.get(str(path)))
        t0 = time.perf_counter()
        try:
            ct = read_ct(path)
            if args.dicom_seg:
                from jcs.dicomseg import check_source_series

                check_source_series(ct)
            payload = _diagnose_case(engine, ct, args.out / name, args, time.perf_counter() - t0)
        except (JCSError, OSError) as exc:  # bad input, corrupt or unreadable file: this case only
            print(f"case: error: {exc}", file=sys.stderr)
            row.update(status="error", error=str(exc))
        else:
            case, summary = payload["case"], payload["summary"]
            row.update(
                status="ok",
                **{key: case.get(key) for key in ("positive", "decision", "positive_slice_count", "threshold",
                                                   "classifier_positive_slice_count")},
                axial_slices=len(payload["slices"]),
                **{key: summary.get(key) for key in ("opacification_volume_ml", "opacification_percent",
                                                      "lesion_count")},
            )
        row["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        _write_cases(rows, args.out / "cases.csv")  # after every case: an interrupted cohort keeps its table
    marker.unlink()
    failed = sum(row["status"] != "ok" for row in rows)
    positive = sum(bool(row.get("positive")) for row in rows)
    print(
        f"cohort: {len(rows)} cases, {positive} positive, {len(rows) - failed - positive} negative, "
        f"{failed} failed; table: {args.out / 'cases.csv'}"
    )
    if labels is not None:
        print(_score_against_labels(rows))
    return EXIT_USER_ERROR if failed else 0


def _score_against_labels(rows: Sequence[dict[str, Any]]) -> str:
    """Sensitivity and specificity of the cohort's decisions against its labels (diagnosed cases)."""
    scored = [row for row in rows if row["status"] == "ok" and row.get("label") is not None]
    positives = [row for row in scored if row["label"]]
    negatives = [row for row in scored if not row["label"]]

    def share(hits: int, total: int) -> str:
        return f"{hits}/{total}" + (f" ({hits / total:.2f})" if total else "")

    found = sum(bool(row["positive"]) for row in positives)
    cleared = sum(not row["positive"] for row in negatives)
    unlabelled = sum(row.get("label") is None for row in rows)
    missing = f"; {unlabelled} case(s) without a label" if unlabelled else ""
    return (
        f"against the labels: sensitivity {share(found, len(positives))}, specificity "
        f"{share(cleared, len(negatives))}{missing}"
    )


def _quantify_command(args: argparse.Namespace) -> int:
    from jcs.quantify import run_quantify

    payload = run_quantify(
        args.ct,
        args.lesion_mask,
        args.out,
        lungs_path=args.lungs,
        dicom_seg=args.dicom_seg,
        overwrite=args.overwrite,
    )
    summary = payload.get("summary", {})
    print(f"lesions: {summary.get('lesion_count', len(payload.get('lesions', [])))}; outputs: {args.out}")
    for note in payload.get("notes", []):
        print(f"note: {note}")
    return 0


def _weights_command(args: argparse.Namespace) -> int:
    from jcs.weights import import_official, scan_registry, user_dir

    if args.weights_command == "import-official":
        card = import_official(args.path, args.name, overwrite=args.overwrite)
        print(f"imported {card.data.get('official_format')} as {card.name!r} ({card.kind}) into {card.path}")
        print(f"sha256 {card.sha256}")
        return 0
    cards, problems = scan_registry()
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if not cards:
        print(
            f"no weights installed (user registry {user_dir()}); add some with "
            "`jcs weights import-official CHECKPOINT --name NAME`"
        )
        return 0
    width = max(28, *(len(card.name) for card in cards))  # long names keep the columns aligned
    print(f"{'name':<{width}} {'kind':<10} {'source':<8} {'threshold':>9}  sha256")
    for card in cards:
        threshold = "" if card.threshold is None else str(card.threshold)
        print(f"{card.name:<{width}} {card.kind:<10} {card.source:<8} {threshold:>9}  {card.sha256[:16]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jcs`` console script; returns the exit code."""
    args = _build_parser().parse_args(argv)
    handlers = {"diagnose": _diagnose, "quantify": _quantify_command, "weights": _weights_command}
    try:
        return handlers[args.command](args)
    except JCSError as exc:
        print(f"jcs {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        print(f"jcs {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"jcs {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not the user's input: one line, details with JCS_DEBUG=1
        if os.environ.get("JCS_DEBUG"):
            raise
        print(
            f"jcs {args.command}: internal error ({type(exc).__name__}: {exc}); please report it, with the "
            "details JCS_DEBUG=1 prints",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
