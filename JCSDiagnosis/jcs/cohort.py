"""Cohorts of `jcs diagnose`: one output folder per input, the table ``cases.csv``, labels and scores.

A cohort's folder holds one folder per case (named after its input, made unique) and ``cases.csv``,
rewritten after every case so an interrupted cohort keeps the cases that finished; ``INCOMPLETE.txt``
stays until the last case. With a labels file each row gets its label and the decisions are scored.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jcs.errors import InputError
from jcs.outputs import INCOMPLETE_MARKER, write_text_atomic

if TYPE_CHECKING:
    from jcs.pipeline import CaseResult

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


def read_labels(path: Path, notes: list[str] | None = None) -> dict[str, bool]:
    """``case -> COVID-19 positive`` from a labels CSV (columns case, label).

    UTF-8 (with or without BOM); a file that is not valid UTF-8 is read as Windows-1252 (what Excel
    writes on Windows) and a note (``notes``) says so. A case listed twice with different labels is refused.
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
        if notes is not None:
            notes.append(f"{path} is not UTF-8; read as Windows-1252")
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


def case_names(inputs: Sequence[Path]) -> list[str]:
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


def case_row(result: CaseResult) -> dict[str, Any]:
    """The cases.csv fields of one diagnosed case."""
    case = result.case.to_json()
    row = {key: case.get(key) for key in CASES_CSV_FIELDS if key in case}
    row["axial_slices"] = len(result.slices)
    row.update({key: result.summary.get(key) for key in CASES_CSV_FIELDS if key in result.summary})
    return row


class CohortTable:
    """``cases.csv`` of a cohort folder, rewritten (atomically) after every case; ``INCOMPLETE.txt``
    marks the folder until :meth:`close`."""

    def __init__(self, out: Path) -> None:
        self.path = out / "cases.csv"
        self.rows: list[dict[str, Any]] = []
        out.mkdir(parents=True, exist_ok=True)
        self.marker = out / INCOMPLETE_MARKER
        self.marker.write_text(
            "This cohort is incomplete: jcs is running or was interrupted; cases.csv lists the cases that "
            "finished.\n",
            encoding="utf-8",
        )

    def add(self, row: dict[str, Any]) -> None:
        """Record one case (its row of :data:`CASES_CSV_FIELDS`) and rewrite the table."""
        self.rows.append(row)
        handle = io.StringIO(newline="")
        writer = csv.DictWriter(handle, fieldnames=CASES_CSV_FIELDS)
        writer.writeheader()
        for entry in self.rows:  # booleans as Python writes them (True/False), as cases.csv always had
            writer.writerow({key: "" if entry.get(key) is None else entry[key] for key in CASES_CSV_FIELDS})
        write_text_atomic(self.path, handle.getvalue())

    def close(self) -> None:
        """The cohort is complete: remove the marker."""
        self.marker.unlink()

    def counts(self) -> tuple[int, int, int]:
        """(positive, negative, failed) cases so far."""
        failed = sum(row["status"] != "ok" for row in self.rows)
        positive = sum(bool(row.get("positive")) for row in self.rows)
        return positive, len(self.rows) - failed - positive, failed


def score_against_labels(rows: Sequence[dict[str, Any]]) -> str:
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
