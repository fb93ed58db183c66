"""The diagnosis run and 'Update results', as tasks of the event loop so the page stays live.

The engine runs in the scene logic's child process, polled here for its progress; Cancel kills it. An
update quantifies the edited segmentation in a worker thread. Failures are shown on the page.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable

from JCSDiagnosisLib.engine import DiagnosisRun
from JCSDiagnosisLib.logic import DiagnosisNodes
from trame_server import Server
from trame_slicer.app.logic import BaseLogic
from trame_slicer.core import SlicerApp

from ..state import RunState
from .session import ViewerSession

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.25
UPDATING_NOTE = "Recomputing results…"
UPDATED_NOTE = "Results recomputed from the edited segmentation."


class DiagnosisLogic(BaseLogic[RunState]):
    """Runs the engine and updates; `on_result` / `on_updated` get the result nodes when done."""

    def __init__(
        self,
        server: Server,
        slicer_app: SlicerApp,
        session: ViewerSession,
        on_result: Callable[[DiagnosisNodes], None],
        on_updated: Callable[[DiagnosisNodes], None],
    ) -> None:
        super().__init__(server, slicer_app, RunState)
        self.session = session
        self.on_result = on_result
        self.on_updated = on_updated
        self.run: DiagnosisRun | None = None
        #: The running task (the loop holds tasks only weakly).
        self.task: asyncio.Task | None = None

    def diagnose(self) -> None:
        """Start the diagnosis as a task of the event loop and return at once.

        The task must not run inside the click's own trigger: triggers from one page are handled one
        after the other, so Cancel (and every other button) would wait for the whole diagnosis.
        """
        if self.session.volume_node is None or self.data.busy:
            return
        self.task = asyncio.get_running_loop().create_task(self.run_diagnosis())

    def cancel(self) -> None:
        """Stop the running diagnosis (kills the engine process tree)."""
        if self.run is not None:
            self.run.process.cancel()

    async def run_diagnosis(self) -> None:
        """Run the engine on the loaded CT in a background process, then hand the result on."""
        with self.state:
            self.data.busy, self.data.running, self.data.error = True, True, ""
            self.data.stage, self.data.progress, self.data.edit_note = "starting", 0, ""
        try:
            result = await self._engine_result()
        except Exception as exc:  # noqa: BLE001 - every failure is reported on the page, details in the log
            logger.exception("diagnosis failed")
            with self.state:
                self.data.error = str(exc)
        else:
            with self.state:
                self.session.result = result
                self.on_result(result)
        finally:
            if self.run is not None:
                shutil.rmtree(self.run.workDir, ignore_errors=True)
            self.run = None
            with self.state:
                self.data.busy = self.data.running = False

    async def _engine_result(self) -> DiagnosisNodes:
        scene_logic = self.session.scene_logic
        self.run = scene_logic.startDiagnosis(self.session.volume_node, **self.session.options)
        process = self.run.process
        while (code := process.poll()) is None:
            with self.state:
                self.data.stage = process.stage or "starting the engine"
                self.data.progress = round(100 * process.fraction)
            await asyncio.sleep(POLL_INTERVAL_S)
        process.check(code)
        with self.state:
            self.data.stage = "loading results"
        return scene_logic.loadResults(self.run)

    def update_results(self) -> None:
        """Recompute every table from the (edited) lesion segmentation, without blocking the page."""
        if self.session.result is None or self.data.busy:
            return
        # Busy before the task starts, so a second click cannot start a second update.
        self.data.busy, self.data.error, self.data.edit_note = True, "", UPDATING_NOTE
        self.task = asyncio.get_running_loop().create_task(self.run_update())

    async def run_update(self) -> None:
        """Read the scene, quantify in a worker thread (the loop keeps serving the page), fill the tables."""
        self._slicer_app.segmentation_editor.deactivate_effect()
        scene_logic = self.session.scene_logic
        try:
            job = scene_logic.quantificationJob(self.session.current_result().segmentationNode)
            quantification = await asyncio.to_thread(job.run)
            updated = scene_logic.applyQuantification(job, quantification)
        except Exception as exc:  # noqa: BLE001 - reported on the page, details in the log
            logger.exception("update results failed")
            with self.state:
                self.data.error, self.data.edit_note = str(exc), ""
        else:
            with self.state:
                self.session.result = updated
                self.on_updated(updated)
                self.data.edit_note = UPDATED_NOTE
        finally:
            with self.state:
                self.data.busy = False
