"""``jcs`` command line: ``diagnose``, ``quantify`` and ``weights list|import-official``.

User errors (bad input, missing weights, cancelled) end with one line on stderr and exit code 2;
no traceback. Arguments and the output folder are checked before any work; inputs pass
:mod:`jcs.validate` before the models load; outputs are written through :mod:`jcs.outputs` (never over
a user's files without ``--overwrite``, atomically, under a lock). Everything runs offline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jcs
from jcs.cohort import CohortTable, case_names, case_row, read_labels, score_against_labels
from jcs.errors import InputError, JCSError
from jcs.io import CTVolume, read_ct
from jcs.options import DiagnosisOptions, ProgressStyle, add_diagnosis_arguments, enum_choices
from jcs.outputs import FolderLock, check_out_dir, staged_folder

if TYPE_CHECKING:
    from jcs.inference import DiagnosisEngine
    from jcs.pipeline import CaseResult
    from jcs.weights import WeightsCard

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
OVERWRITE_HELP = (
    "replace the jcs outputs of an earlier run in a non-empty --out (default: a non-empty --out is "
    "refused, so nothing you have is overwritten); other files there are left alone"
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jcs",
        description="Explainable COVID-19 diagnosis of chest CT (JCS, Wu et al., IEEE TIP 2021). "
        "Research use only; not for clinical diagnosis.",
    )
    parser.add_argument("--version", action="version", version=f"jcs {jcs.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_diagnose_command(commands)
    _add_quantify_command(commands)
    _add_weights_command(commands)
    return parser


def _add_diagnose_command(commands: Any) -> None:
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
    add_diagnosis_arguments(diagnose)
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
    diagnose.add_argument(
        "--progress",
        default=ProgressStyle.BAR,
        **enum_choices(ProgressStyle),
        help="progress report: 'bar' on stderr (default); 'json': one line per step on stdout, "
        '{"event": "progress", "stage": STAGE, "fraction": 0..1 of the whole run}; \'none\'',
    )
    diagnose.add_argument("--quiet", action="store_true", help="no progress report (--progress none)")


def _add_quantify_command(commands: Any) -> None:
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


def _add_weights_command(commands: Any) -> None:
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


_BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {elapsed} elapsed, {remaining} left"  # no "%/s" rate


class _Progress:
    """Reports the fraction of the whole run: a tqdm bar on stderr, JSON lines on stdout, or nothing."""

    def __init__(self, style: ProgressStyle) -> None:
        self.style = style
        self.bar = None
        if style == ProgressStyle.BAR:
            from tqdm import tqdm

            self.bar = tqdm(total=100, file=sys.stderr, leave=False, bar_format=_BAR_FORMAT)

    def __call__(self, stage: str, fraction: float) -> None:
        if self.style == ProgressStyle.JSON:
            line = json.dumps({"event": "progress", "stage": stage, "fraction": round(fraction, 4)})
            print(line, flush=True)
        elif self.bar is not None:
            self.bar.set_description(stage)
            self.bar.n = round(100 * fraction)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _describe_weights(kind: str, card: WeightsCard) -> str:
    return f"{kind}: {card.name} (sha256 {card.sha256[:16]}, {card.source} weights, {card.path})"


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
    notes: list[str] = []
    labels = read_labels(args.labels, notes) if args.labels is not None else None
    for note in notes:
        print(f"note: {note}")
    if len(inputs) == 1 and not inputs[0].exists():
        raise InputError(f"{inputs[0]}: no such file or folder")
    check_out_dir(args.out, overwrite=args.overwrite)
    with FolderLock(args.out):
        return _diagnose_locked(args, inputs, labels)


def _diagnose_locked(args: argparse.Namespace, inputs: list[Path], labels: dict[str, bool] | None) -> int:
    """`jcs diagnose` once the arguments are checked and ``--out`` is locked."""
    from jcs.pipeline import load_engine

    t0 = time.perf_counter()
    # One input is read before the models load, so a bad file fails at once.
    first = _read_case(inputs[0], args.dicom_seg) if len(inputs) == 1 else None
    read_s = time.perf_counter() - t0
    engine = load_engine(DiagnosisOptions.from_args(args))
    if engine.classifier_card is not None:
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


def _read_case(path: Path, dicom_seg: bool) -> CTVolume:
    """The CT of one input; with ``--dicom-seg`` its series is checked to be exportable."""
    ct = read_ct(path)
    if dicom_seg:
        from jcs.dicomseg import check_source_series

        check_source_series(ct)  # before the models load: a refused input costs nothing
    return ct


def _diagnose_case(
    engine: DiagnosisEngine, ct: CTVolume, out: Path, args: argparse.Namespace, read_s: float
) -> CaseResult:
    """Diagnose one read case (``read_s``: seconds its reading took), write it into ``out`` and print its
    reading."""
    from jcs.pipeline import diagnose_ct
    from jcs.wording import case_line, threshold_hint

    options = DiagnosisOptions.from_args(args)
    progress = _Progress(options.progress)
    try:
        with staged_folder(out, overwrite=args.overwrite) as staging:  # `out` appears complete or not at all
            result = diagnose_ct(
                engine, ct, lesion_margin_mm=options.lesion_margin_mm, progress=progress, read_s=read_s
            )
            result.write_outputs(staging, dicom_seg=options.dicom_seg)
        progress("write", 1.0)
    finally:
        progress.close()
    case = result.case.to_json()
    n = len(result.slices)
    print(case_line(case, n, result.device, str(result.precision), result.timings_s["total"]))
    hint = "" if ct.is_2d else threshold_hint(case, n)
    for note in ([hint] if hint else []) + result.notes:
        print(f"note: {note}")
    return result


def _diagnose_cohort(
    engine: DiagnosisEngine,
    inputs: Sequence[Path],
    args: argparse.Namespace,
    labels: dict[str, bool] | None = None,
) -> int:
    """Each input into ``--out/NAME``; ``cases.csv`` with one row per case (:mod:`jcs.cohort`). A failing
    case is recorded (status ``error``) and the cohort goes on; the exit code is 2 when any case failed.
    With ``labels`` (case name or input path -> positive), each row gets its label and the decisions are
    scored against them."""
    table = CohortTable(args.out)
    names = case_names(inputs)
    for position, (path, name) in enumerate(zip(inputs, names, strict=True), start=1):
        print(f"[{position}/{len(inputs)}] {name}: {path}")
        row: dict[str, Any] = {"case": name, "input": str(path)}
        if labels is not None:
            row["label"] = labels.get(name, labels.get(str(path)))
        t0 = time.perf_counter()
        try:
            ct = _read_case(path, args.dicom_seg)
            result = _diagnose_case(engine, ct, args.out / name, args, time.perf_counter() - t0)
        except (JCSError, OSError) as exc:  # bad input, corrupt or unreadable file: this case only
            print(f"case: error: {exc}", file=sys.stderr)
            row.update(status="error", error=str(exc))
        else:
            row.update(status="ok", **case_row(result))
        row["seconds"] = round(time.perf_counter() - t0, 2)
        table.add(row)  # after every case: an interrupted cohort keeps its table
    table.close()
    positive, negative, failed = table.counts()
    print(
        f"cohort: {len(table.rows)} cases, {positive} positive, {negative} negative, {failed} failed; "
        f"table: {table.path}"
    )
    if labels is not None:
        print(score_against_labels(table.rows))
    return EXIT_USER_ERROR if failed else 0


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
