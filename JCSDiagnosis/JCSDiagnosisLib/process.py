"""The engine in a background process, so the GUI never freezes (as SlicerMONAIAuto3DSeg does).

`EngineProcess` starts `python -m jcs.cli diagnose --progress json ...` (PythonSlicer inside Slicer),
reads its output on a thread, turns the engine's JSON progress lines into (stage, fraction) and kills
the whole process tree on cancel. The GUI polls `poll()`; scripts call `wait()`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

#: Folder holding the `jcs` package (it ships beside this package in the extension).
ENGINE_PARENT = Path(__file__).resolve().parents[1]

#: Event name of a progress line of `jcs diagnose --progress json`:
#: ``{"event": "progress", "stage": "classify", "fraction": 0.42}`` (fraction of the whole run).
PROGRESS_EVENT = "progress"


def pythonExecutable() -> str:
    """The interpreter for the engine: PythonSlicer inside Slicer, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def parseProgress(line: str) -> tuple[str, float] | None:
    """(stage, fraction of the whole run in 0..1) of a JSON progress line, else None (other output)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") != PROGRESS_EVENT:
        return None
    stage, fraction = event.get("stage"), event.get("fraction")
    if not isinstance(stage, str) or not isinstance(fraction, (int, float)) or isinstance(fraction, bool):
        return None
    return stage, min(max(float(fraction), 0.0), 1.0)


class EngineError(RuntimeError):
    """The engine process failed; the message holds the end of its output."""


class EngineProcess:
    """One run of the engine CLI in a child process with its own process group."""

    def __init__(
        self,
        arguments: Sequence[str],
        *,
        python: str | None = None,
        onProgress: Callable[[str, float], None] | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.command = [python or pythonExecutable(), "-m", "jcs.cli", *arguments]
        self.onProgress = onProgress
        self.environment = environment
        self.lines: list[str] = []
        self.stage = ""
        self.fraction = 0.0
        self.cancelled = False
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the child process and the thread reading its output."""
        env = dict(os.environ if self.environment is None else self.environment)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ENGINE_PARENT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        kwargs: dict = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True
        logging.info("JCSDiagnosis: running %s", subprocess.list2cmdline(self.command))
        self._process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            **kwargs,
        )
        self._reader = threading.Thread(target=self._readOutput, name="JCSDiagnosisEngineOutput", daemon=True)
        self._reader.start()

    def _readOutput(self) -> None:
        """Hand every output line to :meth:`_handleLine` as it arrives."""
        assert self._process is not None and self._process.stdout is not None
        for raw in self._process.stdout:
            if raw.strip():
                self._handleLine(raw.decode("utf-8", errors="replace").rstrip("\r\n"))

    def _handleLine(self, line: str) -> None:
        progress = parseProgress(line)
        with self._lock:
            if progress is None:
                self.lines.append(line)
            else:
                self.stage, self.fraction = progress
        if progress is not None and self.onProgress is not None:
            self.onProgress(*progress)
        elif progress is None:
            logging.debug("jcs: %s", line)

    def poll(self) -> int | None:
        """Exit code once finished, else None (for a GUI timer)."""
        return None if self._process is None else self._process.poll()

    def output(self, lastLines: int = 30) -> str:
        """The last lines the engine printed."""
        with self._lock:
            return "\n".join(self.lines[-lastLines:])

    def cancel(self) -> None:
        """Kill the engine and every process it started."""
        self.cancelled = True
        process = self._process
        if process is None or process.poll() is not None:
            return
        if sys.platform == "win32":
            subprocess.run(
                ["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False
            )
        else:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the engine ends; raise EngineError if it failed or was cancelled."""
        if self._process is None:
            self.start()
        assert self._process is not None
        try:
            code = self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise EngineError(f"the engine did not finish within {timeout} s and was stopped") from None
        if self._reader is not None:
            self._reader.join(timeout=10)
        self.check(code)

    def check(self, code: int) -> None:
        """Raise EngineError for a cancelled or failed run with exit `code`."""
        if self.cancelled:
            raise EngineError("diagnosis cancelled")
        if code != 0:
            raise EngineError(f"the engine failed (exit code {code}):\n{self.output()}")
