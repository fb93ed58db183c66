"""Shared pytest fixtures for the JCS Diagnosis suite."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_weights import TINY_CLASSIFIER_NAME, TINY_SEGMENTER_NAME, write_tiny_weights

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("JCS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def torch_threads_restored() -> Iterator[None]:
    """Training runs set torch's thread count from their config (tiny test runs: one thread); restore it,
    so that a later engine run in this process sums as one in a fresh process (the viewer's engine)."""
    import torch

    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data beside the checkout (`../shared/data`); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only developer machines and CI have it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files worth looking at (screenshots, overlays)."""
    path = REPO_ROOT / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry directory holding the tiny weights (`tiny_weights.py`), written once per session.

    Shared by every test: read it, never write to it (`tiny_weights` gives each test its own copy).
    """
    directory = tmp_path_factory.mktemp("tiny-weights")
    write_tiny_weights(directory)
    return directory


@pytest.fixture
def tiny_weights(
    tiny_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Point JCS_WEIGHTS_DIR at this test's own copy of the tiny registry (it may add weights there);
    returns {"classifier": name, "segmenter": name}."""
    registry = tmp_path_factory.mktemp("registry")
    shutil.copytree(tiny_weights_dir, registry, dirs_exist_ok=True)
    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(registry))
    return {"classifier": TINY_CLASSIFIER_NAME, "segmenter": TINY_SEGMENTER_NAME}


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's exit status once every report is written, skipping interpreter teardown.

    The slicer-core and trame-slicer tests leave VTK/MRML objects alive until the interpreter is torn
    down, in no fixed order; a clean-clone CI run (2026-12-03) crashed there with a segmentation fault
    after all 389 tests had passed and the summary was printed; two other runs of the same tests did
    not. Crashes *during* the tests are still caught and traced by pytest's faulthandler.
    """
    if _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
