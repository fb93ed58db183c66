"""CUDA paths of the engine and the training code; skipped on machines without a CUDA GPU.

CI has no GPU: these run where one is lent (see docs/testing.md and
docs/experiments/2026-11-23-engine-measurements.md), with the rest of the suite.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from jcs.inference import DiagnosisEngine
from jcs.io import CTVolume
from jcs.models import build_segmenter
from phantoms import make_chest_phantom
from test_training_runs import classifier_config, seg_config

from training import common, train_classifier, train_segmenter
from training.config import SegmenterConfig, load_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


@pytest.fixture(scope="module")
def phantom_ct() -> CTVolume:
    phantom = make_chest_phantom(shape=(12, 128, 128), seed=7)
    return CTVolume(image=phantom.image, is_hu=True, path=Path("phantom.nrrd"))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_engine_matches_cpu(
    tiny_weights_dir: Path,
    phantom_ct: CTVolume,
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
) -> None:
    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(tiny_weights_dir))

    def run(device: str, precision: str):
        engine = DiagnosisEngine.from_registry(
            "tiny-classifier", "tiny-segmenter", device=device, precision=precision, segment_policy="always"
        )
        return engine.diagnose(phantom_ct)

    reference, result = run("cpu", "fp32"), run("cuda", precision)
    assert result.device == "cuda" and result.precision == precision
    p_cpu, p_gpu = reference.slice_probabilities, result.slice_probabilities
    tolerance = 1e-3 if precision == "fp32" else 0.1
    assert np.abs(p_cpu - p_gpu).max() < tolerance
    confident = np.abs(p_cpu - 0.5) > tolerance
    np.testing.assert_array_equal(p_gpu[confident] > 0.5, p_cpu[confident] > 0.5)
    assert dice(reference.lesion_mask, result.lesion_mask) >= (0.995 if precision == "fp32" else 0.98)
    cos = (reference.heatmap * result.heatmap).sum() / (
        np.linalg.norm(reference.heatmap) * np.linalg.norm(result.heatmap)
    )
    assert cos > 0.98


def test_real_cuda_out_of_memory_halves_the_batch() -> None:
    """A genuine CUDA OOM (the GPU filled up beforehand) makes the engine retry with smaller batches."""
    torch.cuda.empty_cache()
    segmenter = build_segmenter(width_mult=1.0, batchnorm="batch")
    engine = DiagnosisEngine(torch.nn.Identity(), segmenter, device="cuda", precision="fp16", batch_size=64)
    slices = np.random.default_rng(0).integers(0, 255, (64, 512, 512), dtype=np.uint8)
    free, _ = torch.cuda.mem_get_info()
    headroom = 3 * 2**30  # about what a batch of 8 full-width 512² slices needs in fp16
    blocker = torch.empty(max(0, free - headroom), dtype=torch.uint8, device="cuda")
    try:
        notes: list[str] = []
        probabilities = engine.segment_slices(slices, notes=notes)
    finally:
        del blocker
        torch.cuda.empty_cache()
    assert probabilities.shape == (64, 512, 512)
    assert np.isfinite(probabilities).all()
    halvings = [n for n in notes if n.startswith("segment: out of memory on cuda; batch size now")]
    assert halvings, notes
    assert engine.device.type == "cuda"  # it fitted with a smaller batch, no CPU fallback


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_cuda_segmenter_training_with_autocast(tmp_path: Path, precision: str) -> None:
    path = seg_config(tmp_path, precision=precision, iterations=6, workers=2, eval_every=3, device="cuda")
    values = yaml.safe_load(path.read_text())
    values["data"]["val_count"] = 1
    path.write_text(yaml.safe_dump(values))
    config = load_config(SegmenterConfig, path)
    train_segmenter.train(config)
    state = common.load_training_checkpoint(Path(config.out_dir) / "last.pt")
    assert state["iteration"] == 6
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())
    with open(Path(config.out_dir) / "train_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["iteration"] for r in rows if r["val_dice"]] == ["3", "6"]
    assert (Path(config.out_dir) / "eval" / "jcs_metrics.json").is_file()  # the end-of-run evaluation
    expected = "bf16" if precision == "auto" and torch.cuda.is_bf16_supported() else "fp16"
    assert common.resolve_precision(precision, torch.device("cuda")) == expected


def test_cuda_classifier_training_with_mixing_and_attention(tmp_path: Path) -> None:
    config = classifier_config(tmp_path, str(tmp_path / "cls"))
    config.device, config.precision, config.workers, config.epochs = "cuda", "auto", 2, 2
    train_classifier.train(config)
    state = common.load_training_checkpoint(tmp_path / "cls" / "last.pt")
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())
    with open(tmp_path / "cls" / "train_log.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("att")]
    assert rows and any(float(row["att"]) > 0 for row in rows)  # eq. (4) active on masked slices
