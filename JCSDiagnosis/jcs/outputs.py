"""Output folders that never overwrite a user's files silently and are never left half-written.

Rules (``docs/input-validation.md``):

- :func:`check_out_dir` runs before any work: ``--out`` naming a file, a folder that cannot be
  created or written, and a non-empty folder (an earlier reading, or anything else) without
  ``overwrite`` are refused with a message naming the folder.
- :class:`FolderLock` marks a folder in use (``.NAME.jcs-lock`` beside it, with the process id); a
  second run into the same folder is refused while the first runs. A lock whose process is gone is
  taken over.
- :func:`staged_folder` has every file written into a staging folder ``NAME.incomplete-XXXX`` beside
  the target; only when all are written does the staging folder become the target (one rename), so
  an interrupted run leaves either the complete outputs or a folder whose name and ``INCOMPLETE.txt``
  say it is incomplete. With ``overwrite`` into an existing folder the files are moved in one by one
  (``results.json`` last) under an ``INCOMPLETE.txt`` marker, and earlier jcs outputs that this run
  did not produce are removed so the folder holds one reading.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from jcs.errors import OutputError

INCOMPLETE_MARKER = "INCOMPLETE.txt"
STAGING_INFIX = ".incomplete-"
LOCK_SUFFIX = ".jcs-lock"
#: Every file name jcs writes into an output folder (replaced or removed under ``overwrite``).
JCS_OUTPUT_NAMES = frozenset(
    {
        "results.json",
        "results.csv",
        "summary.csv",
        "lesions.csv",
        "slices.csv",
        "heatmap.nrrd",
        "lesions.nrrd",
        "lungs.nrrd",
        "lesions.seg.dcm",
        "lesions.sr.dcm",
        "cases.csv",
        INCOMPLETE_MARKER,
    }
)
_INCOMPLETE_TEXT = (
    "This folder is incomplete: a jcs run writing it was interrupted or is still running.\n"
    "Its files are not a reading; run jcs again into a new folder (or with --overwrite).\n"
)


def _describe_contents(folder: Path) -> str:
    entries = sorted(p.name for p in folder.iterdir())
    if "results.json" in entries:
        return "an earlier reading (results.json)"
    if "cases.csv" in entries:
        return "an earlier cohort (cases.csv)"
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    return f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}: {shown}"


def check_out_dir(out: Path, *, overwrite: bool, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot or must not be written."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {out} is a file, not a folder; give a folder for the outputs")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(
            f"{option} {out} is not empty (it holds {_describe_contents(out)}); give a new folder, or pass "
            "--overwrite to replace jcs's outputs there"
        )
    existing = out if out.is_dir() else out.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {out}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {out}: cannot write into {existing} (permission denied)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """Exclusive use of an output folder (or a registry entry) by one process, as a context manager."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target.parent / f".{target.name}{LOCK_SUFFIX}"
        self._held = False

    def acquire(self) -> None:
        """Take the lock; OutputError naming the other run when it is held by a live process."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_alive():
                    raise OutputError(self._busy_message()) from None
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()  # left by a run that is gone
                continue
            except OSError as exc:
                raise OutputError(f"cannot write into {self.path.parent}: {exc.strerror}") from exc
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
            self._held = True
            return
        raise OutputError(self._busy_message())

    def _holder(self) -> tuple[int, str, str] | None:
        try:
            pid, host, since = self.path.read_text(encoding="utf-8").split()[:3]
            return int(pid), host, since
        except (OSError, ValueError):
            return None

    def _holder_alive(self) -> bool:
        holder = self._holder()
        if holder is None:
            return True  # being written this very moment, or unreadable: do not take it
        pid, host, _ = holder
        return host != socket.gethostname() or _pid_alive(pid)

    def _busy_message(self) -> str:
        holder = self._holder()
        who = f" (process {holder[0]} on {holder[1]} since {holder[2]})" if holder else ""
        return (
            f"{self.target} is in use by another jcs run{who}; wait for it to finish, or delete "
            f"{self.path} if that run is gone"
        )

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._held = False

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def staged_folder(out: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder beside ``out``; when the block ends normally its files become ``out``.

    On an exception (Ctrl-C included) the staging folder is removed and ``out`` is left as it was.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{out.name}{STAGING_INFIX}", dir=out.parent))
    (staging / INCOMPLETE_MARKER).write_text(_INCOMPLETE_TEXT, encoding="utf-8")
    try:
        yield staging
        _commit(staging, out, overwrite=overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _commit(staging: Path, out: Path, *, overwrite: bool) -> None:
    (staging / INCOMPLETE_MARKER).unlink()
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists() and not out.is_symlink():
        os.rename(staging, out)  # atomic: the folder appears complete or not at all
        return
    if not overwrite and any(out.iterdir()):  # filled by someone else since check_out_dir
        raise OutputError(f"{out} was filled by another program during the run; its files were kept")
    marker = out / INCOMPLETE_MARKER
    marker.write_text(_INCOMPLETE_TEXT, encoding="utf-8")
    produced = sorted(p.name for p in staging.iterdir())
    for name in sorted(JCS_OUTPUT_NAMES - set(produced) - {INCOMPLETE_MARKER}):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()  # an earlier reading's file this run does not replace
    for name in sorted(produced, key=lambda n: n == "results.json"):  # results.json last
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    marker.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file in the same folder and one rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# -- tables ------------------------------------------------------------------------------------------
#: Header of every summary table (summary.csv of `jcs diagnose`, `jcs quantify` and the viewer).
SUMMARY_CSV_HEADER = ("quantity", "value", "unit")


def csv_cell(value: Any) -> str:
    """One CSV cell: empty for None (not measured), ``true``/``false``, floats to 12 significant
    digits (exact for what a reader compares, without float noise such as ``12.000000000000004``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.12g}" if math.isfinite(value) else ""
    return str(value)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (RFC 4180 line ends, as Python's csv module writes) of a header and rows of values."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([csv_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a table of values (:func:`csv_cell`) as UTF-8 CSV."""
    path.write_text(csv_text(header, rows), encoding="utf-8", newline="")


def write_records_csv(path: Path, columns: Sequence[str], records: Iterable[Mapping[str, Any]]) -> None:
    """Write records as CSV, one column per name in ``columns`` (a missing field is an empty cell)."""
    write_csv(path, columns, ([record.get(column) for column in columns] for record in records))


def write_summary_csv(path: Path, quantities: Mapping[str, Any]) -> None:
    """The one summary format: ``quantity,value,unit`` rows (unit from the field name, jcs.wording)."""
    from jcs.wording import unit_of

    write_csv(path, SUMMARY_CSV_HEADER, ((key, value, unit_of(key)) for key, value in quantities.items()))
