"""Training runs on tiny models: resume equivalence, 2-process DDP (gloo), export → engine load."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_training_data import write_list

from training import common, evaluate, export, train_classifier, train_segmenter
from training.config import ClassifierConfig, SegmenterConfig, load_config
from training.data import SegmentationDataset, load_records

REPO = Path(__file__).resolve().parents[2]


def seg_config(tmp_path: Path, **extra: object) -> Path:
    values = {
        "data": {"lists": [str(write_list(tmp_path, n=5, size=32))], "val_count": 0},
        "arch": "jcs",
        "width_mult": 0.125,
        "size": 32,
        "batch_size": 2,
        "iterations": 4,
        "lr": 1e-3,
        "augment": "strong",
        "precision": "fp32",
        "out_dir": str(tmp_path / "run"),
        "checkpoint_every": 2,
        "log_every": 1,
        "keep_checkpoints": True,
        "threads": 1,
        "device": "cpu",  # bit-exact comparisons also on machines with a GPU (see test_cuda.py)
    }
    values.update(extra)
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def classifier_config(tmp_path: Path, out: str) -> ClassifierConfig:
    lst = write_list(tmp_path, n=6, size=48)
    lines = lst.read_text().splitlines()
    # slices 3-5 become lesion-free negatives (empty masks)
    for i in range(3, 6):
        (tmp_path / f"empty{i}.png").write_bytes((tmp_path / "mask0.png").read_bytes())
        from PIL import Image

        Image.fromarray(np.zeros((48, 48), np.uint8)).save(tmp_path / f"empty{i}.png")
        lines[i] = f"img{i}.png empty{i}.png"
    lst.write_text("\n".join(lines) + "\n")
    config = ClassifierConfig()
    config.data.lists = [str(lst)]
    config.depth, config.width_mult, config.size, config.resize = 50, 0.125, 32, 36
    config.batch_size, config.epochs, config.lr, config.precision = 3, 2, 0.01, "fp32"
    config.out_dir, config.checkpoint_every_epochs, config.log_every = out, 1, 1
    config.keep_checkpoints, config.augment, config.threads, config.device = True, "strong", 1, "cpu"
    return config


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_loader_workers_give_the_same_batches(tmp_path: Path) -> None:
    records = load_records(load_config(SegmenterConfig, seg_config(tmp_path)).data)
    dataset = SegmentationDataset(records, 32, "strong", seed=3, per_image_norm=True)
    runtime = common.init_runtime()

    def first(stream, count: int) -> list:
        return [next(stream) for _ in range(count)]

    # start mid-epoch (5 slices, batch 2: two batches an epoch) and cross several epochs
    plain = first(common.batch_stream(dataset, 2, 3, runtime, start_iteration=3), 6)
    loaded = first(common.batch_stream(dataset, 2, 3, runtime, start_iteration=3, workers=2), 6)
    assert (
        [(i, e) for i, e, _ in plain]
        == [(i, e) for i, e, _ in loaded]
        == [(3, 1), (4, 2), (5, 2), (6, 3), (7, 3), (8, 4)]
    )
    for (_, _, a), (_, _, b) in zip(plain, loaded, strict=True):
        assert len(a) == len(b) == 2
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(plain[0][2][0], plain[1][2][0])


def test_segmenter_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    config = load_config(SegmenterConfig, seg_config(tmp_path))
    final = train_segmenter.train(config)
    full = common.load_training_checkpoint(final)["model"]
    log = (Path(config.out_dir) / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("iteration,epoch,lr,loss,side1") and len(log) == 5
    resumed_cfg = load_config(SegmenterConfig, seg_config(tmp_path, out_dir=str(tmp_path / "resumed")))
    train_segmenter.train(resumed_cfg, resume=str(Path(config.out_dir) / "iter_000002.pt"))
    resumed = common.load_training_checkpoint(Path(resumed_cfg.out_dir) / "last.pt")
    assert resumed["iteration"] == 4
    assert states_equal(full, resumed["model"])
    halfway = common.load_training_checkpoint(Path(config.out_dir) / "iter_000002.pt")["model"]
    assert not states_equal(full, halfway)


def test_classifier_resume_equals_uninterrupted_run_with_mixing_and_attention(tmp_path: Path) -> None:
    config = classifier_config(tmp_path, str(tmp_path / "cls"))
    train_classifier.train(config)
    log = (tmp_path / "cls" / "train_log.csv").read_text().splitlines()
    header = log[0].split(",")
    att = [float(row.split(",")[header.index("att")]) for row in log[1:]]
    assert len(att) == 4 and any(a > 0 for a in att)  # eq. (4) active on masked slices
    config2 = classifier_config(tmp_path, str(tmp_path / "cls2"))
    train_classifier.train(config2, resume=str(tmp_path / "cls" / "iter_000002.pt"))
    full = common.load_training_checkpoint(tmp_path / "cls" / "last.pt")["model"]
    resumed = common.load_training_checkpoint(tmp_path / "cls2" / "last.pt")["model"]
    assert states_equal(full, resumed)


def test_two_process_ddp_gloo(tmp_path: Path) -> None:
    config = seg_config(tmp_path, iterations=3, keep_checkpoints=False)
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "training.train_segmenter",
            "--config",
            str(config),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and both workers
        process.communicate()
        raise
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert "DDP: 2 replicas in sync" in result.stdout
    state = common.load_training_checkpoint(tmp_path / "run" / "last.pt")
    assert state["iteration"] == 3


def test_export_then_engine_load_gives_same_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(
        SegmenterConfig,
        seg_config(
            tmp_path, iterations=2, data={"lists": [str(write_list(tmp_path, n=5, size=32))], "val_count": 1}
        ),
    )
    checkpoint = train_segmenter.train(config)
    metrics_file = Path(config.out_dir) / "eval" / "jcs_metrics.json"
    metrics = json.loads(metrics_file.read_text())
    assert set(metrics["validation"]) == {"dice", "iou", "e_measure"} and len(metrics["perturbed"]) == 5
    registry = tmp_path / "registry"
    result = export.export(
        checkpoint, "tiny-seg", registry, {"ct100": metrics}, "synthetic discs", default=True, dtype="float32"
    )
    assert result["reload_max_abs_diff"] == 0.0
    card = json.loads((registry / "tiny-seg.json").read_text())
    assert card["kind"] == "segmenter" and card["default"] is True
    assert (card["input"]["size"], card["input"]["per_image_standardize"]) == (32, False)
    assert card["input"]["test_time_flip"] is False
    assert "not for clinical use" in card["intended_use"]
    assert card["architecture"] == {
        "joint": False,
        "width_mult": 0.125,
        "feature_input": False,
        "batchnorm": "batch",
    }
    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(registry))
    from jcs.weights import load_model

    engine_model, loaded_card = load_model("tiny-seg")
    _, net, _ = __import__("training.models", fromlist=["x"]).model_from_checkpoint(checkpoint)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(engine_model(x), net.eval()(x))
    assert loaded_card.sha256 == card["sha256"]
    flipped = export.export(checkpoint, "tiny-seg-flip", registry, {}, "synthetic discs", test_time_flip=True)
    assert flipped["card"]["input"]["test_time_flip"] is True
    assert flipped["card"]["training"]["config"]["test_time_flip"] is True
    with pytest.raises(ValueError, match="belongs on a classifier's card"):
        rule = export.segmenter_rule(0.02, None, "")
        export.export(checkpoint, "tiny-seg-rule", registry, {}, "x", decision=rule)
    with pytest.raises(ValueError, match="lie in"):
        export.segmenter_rule(1.5, None, "")
    half = export.export(checkpoint, "tiny-seg-fp16", registry, {}, "synthetic discs", dtype="float16")
    assert half["reload_max_abs_diff"] < 2e-2
    with pytest.raises(ValueError, match="already the default"):
        export.export(checkpoint, "other", registry, {}, "x", default=True)


def test_fine_tuning_starts_from_a_checkpoint_or_registry_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.models import build_segmentation_model, load_initial_weights

    source = train_segmenter.train(load_config(SegmenterConfig, seg_config(tmp_path, iterations=2)))
    trained = common.load_training_checkpoint(source)["model"]
    config = load_config(SegmenterConfig, seg_config(tmp_path))
    net = build_segmentation_model(config)
    assert not states_equal(net.state_dict(), trained)
    load_initial_weights(net, str(source))
    assert states_equal(net.state_dict(), trained)
    # registry weights by name (the way a hospital fine-tunes the bundled model), stored as fp16
    registry = tmp_path / "registry"
    export.export(source, "tiny-start", registry, {}, "synthetic discs", dtype="float16")
    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(registry))
    from_name = build_segmentation_model(config)
    load_initial_weights(from_name, "tiny-start")
    assert all(
        torch.allclose(v.float(), trained[k].float(), atol=2e-3 * (1 + trained[k].abs().max().item()))
        for k, v in from_name.state_dict().items()
    )
    wider = load_config(SegmenterConfig, seg_config(tmp_path, width_mult=0.25))
    with pytest.raises(ValueError, match="does not fit the model being trained"):
        load_initial_weights(build_segmentation_model(wider), str(source))
    # a fine-tuning run starts from those weights: one tiny step stays next to them
    tuned = train_segmenter.train(
        load_config(
            SegmenterConfig,
            seg_config(tmp_path, init_from=str(source), iterations=1, lr=1e-6, out_dir=str(tmp_path / "ft")),
        )
    )
    state = common.load_training_checkpoint(tuned)
    assert state["config"]["init_from"] == str(source)
    conv = next(k for k in trained if k.endswith("weight") and trained[k].dim() == 4)
    assert torch.allclose(state["model"][conv], trained[conv], atol=1e-4)


def test_joint_segmenter_starts_from_the_trained_classifier(tmp_path: Path) -> None:
    """§III-B4: the joint model's Res2Net-101 starts from a classifier checkpoint and trains end to end."""
    classifier = classifier_config(tmp_path, str(tmp_path / "cls"))
    classifier.depth, classifier.epochs = 101, 1
    classifier_checkpoint = train_classifier.train(classifier)
    config = load_config(
        SegmenterConfig,
        seg_config(tmp_path, joint=True, classifier_checkpoint=str(classifier_checkpoint), iterations=2),
    )
    from training.models import build_segmentation_model

    start = build_segmentation_model(config).res2net.state_dict()
    trained_classifier = common.load_training_checkpoint(classifier_checkpoint)["model"]
    assert states_equal(start, {k: v for k, v in trained_classifier.items() if not k.startswith("fc.")})
    checkpoint = train_segmenter.train(config)
    state = common.load_training_checkpoint(checkpoint)
    assert state["iteration"] == 2 and state["config"]["joint"] is True
    log = (Path(config.out_dir) / "train_log.csv").read_text().splitlines()
    assert all(np.isfinite(float(row.split(",")[3])) for row in log[1:])
    registry = tmp_path / "registry"
    export.export(checkpoint, "tiny-joint", registry, {}, "synthetic discs", dtype="float32")
    card = json.loads((registry / "tiny-joint.json").read_text())
    assert card["architecture"]["joint"] is True
    # a classifier that should not decide cases: its card defers to the segmenter rule
    code = export.main([
        "--checkpoint", str(classifier_checkpoint), "--name", "tiny-cls-rule", "--out", str(registry),
        "--training-data", "synthetic discs", "--threshold", "7", "--segmenter-rule", "0.03",
        "--rule-reason", "measured", "--gradcam-score", "log-odds", "--gradcam-reason", "empty logit map",
    ])
    assert code == 0
    rule_card = json.loads((registry / "tiny-cls-rule.json").read_text())
    assert rule_card["decision"] == {"rule": "segmenter", "min_lung_fraction": 0.03, "reason": "measured"}
    assert rule_card["threshold"] == 7  # the classifier rule's own T stays
    assert rule_card["gradcam"] == {"score": "log-odds", "reason": "empty logit map"}


def test_feature_input_segmenter_trains_on_the_covid_cs_feature_release(tmp_path: Path) -> None:
    """COVID-CS .mat files (uint8 ``vgg_feats`` = feature × 20) train a feature-input segmenter."""
    from PIL import Image
    from scipy.io import loadmat, savemat

    from training.data import SegmentationDataset, load_feature_list
    from training.models import model_from_checkpoint

    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        features = rng.integers(0, 256, size=(64, 32, 32), dtype=np.uint8)
        savemat(tmp_path / f"case{i}.mat", {"vgg_feats": features})
        mask = np.zeros((32, 32), np.uint8)
        mask[8 + i : 20, 10:22] = 255
        Image.fromarray(mask).save(tmp_path / f"case{i}_mask.png")
        lines.append(f"case{i}.mat case{i}_mask.png")
    (tmp_path / "features.txt").write_text("\n".join(lines) + "\n")
    records = load_feature_list(tmp_path / "features.txt")
    x, mask = SegmentationDataset(records, 32, None)[0]
    stored = loadmat(tmp_path / "case0.mat")["vgg_feats"]
    assert torch.equal(x, torch.from_numpy(stored.astype(np.float32) / 20.0))
    assert mask.shape == (1, 32, 32) and mask.sum() == 12 * 12
    config = load_config(
        SegmenterConfig,
        seg_config(
            tmp_path,
            feature_input=True,
            width_mult=1.0,
            iterations=2,
            data={"feature_lists": [str(tmp_path / "features.txt")], "val_count": 0},
        ),
    )
    checkpoint = train_segmenter.train(config)
    state = common.load_training_checkpoint(checkpoint)
    assert state["iteration"] == 2 and state["config"]["feature_input"] is True
    log = (Path(config.out_dir) / "train_log.csv").read_text().splitlines()
    assert len(log) == 3 and all(np.isfinite(float(row.split(",")[3])) for row in log[1:])
    _, net, _ = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        probabilities = net.eval()(x[None])
    assert probabilities.shape == (1, 5, 32, 32) and 0 <= probabilities.min() <= probabilities.max() <= 1
    with pytest.raises(ValueError, match="width_mult 1.0"):
        train_segmenter.train(load_config(SegmenterConfig, seg_config(tmp_path, feature_input=True)))


@pytest.mark.parametrize("path", sorted((REPO / "training" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    """The configs that made the bundled weights parse into their dataclass (no unknown or stale keys)."""
    cls = ClassifierConfig if path.name.startswith("classifier") else SegmenterConfig
    config = load_config(cls, path)
    assert config.data.lists[0] == "../shared/data/covid19-ct100/list.txt"
    for listed in config.data.lists[1:]:  # lists kept in the repository (their images stay in ../shared)
        assert (REPO / listed).is_file()
    data = config.data
    sources = {*data.lists, *data.volumes, *data.slice_labels, *data.feature_lists}
    assert set(config.data.repeats) <= sources
    assert not Path(config.out_dir).is_absolute()


def test_metric_log_adds_columns_for_new_keys(tmp_path: Path) -> None:
    log = common.MetricLog(tmp_path / "log.csv")
    log.log({"iteration": 1, "loss": 0.5})
    log.log({"iteration": 2, "val_dice": 0.7})  # the validation rows bring a new column
    log.log({"iteration": 3, "loss": 0.25})
    log.close()
    resumed = common.MetricLog(tmp_path / "log.csv")  # a resumed run appends under the same header
    resumed.log({"iteration": 4, "val_dice": 0.75})
    resumed.close()
    with open(tmp_path / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["iteration"], r["loss"], r["val_dice"]) for r in rows] == [
        ("1", "0.5", ""),
        ("2", "", "0.7"),
        ("3", "0.25", ""),
        ("4", "", "0.75"),
    ]


def test_training_device_and_evaluation_precision() -> None:
    assert common.init_runtime(device="cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="device must be auto, cpu or cuda"):
        common.init_runtime(device="tpu")
    cpu = torch.device("cpu")
    # an fp16 (CUDA-only) run is evaluated on a CPU in the CPU's own reduced precision
    assert common.inference_precision("fp16", cpu) == common.resolve_precision("auto", cpu)
    assert common.inference_precision("fp32", cpu) == "fp32"
    with pytest.raises(ValueError, match="fp16 training needs a CUDA device"):
        common.resolve_precision("fp16", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU"):
            common.init_runtime(device="cuda")


def test_evaluate_scores_a_segmenter_and_an_explaining_classifier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`training.evaluate` on a tiny segmenter and a tiny whole-slice classifier trained with the
    balanced eq. (4) and lesion-free windows: held-out Dice, AUC and the explanation report."""
    seg_dir = tmp_path / "s"
    seg_dir.mkdir()
    held_out = {"lists": [str(write_list(seg_dir, n=5, size=32))], "val_count": 2}
    seg = load_config(SegmenterConfig, seg_config(seg_dir, data=held_out))
    seg_checkpoint = train_segmenter.train(seg)
    config = classifier_config(tmp_path, str(tmp_path / "cls"))
    config.data.val_patients, config.whole_slice, config.epochs = ["img0", "img1"], True, 1
    config.attention_map, config.attention_balanced, config.lesion_free_crops = "log-odds", True, 0.3
    cls_checkpoint = train_classifier.train(config)
    out = tmp_path / "eval"
    code = evaluate.main([
        "--checkpoint", str(seg_checkpoint), "--checkpoint", str(cls_checkpoint),
        "--out", str(out), "--explain", "--gradcam-score", "log-odds",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Dice" in printed and "pointing game" in printed and "Dice by source" in printed
    seg_metrics = json.loads((out / "run_metrics.json").read_text())
    by_source = seg_metrics["by_source"]
    assert sum(row["images"] for row in by_source.values()) == 2
    pooled = np.mean([row["dice"] * row["images"] for row in by_source.values()]) * len(by_source) / 2
    assert pooled == pytest.approx(seg_metrics["validation"]["dice"]["mean"])
    explained = json.loads((out / "cls_explanations.json").read_text())
    assert set(explained["per_source"]) and all(
        0.0 <= row["pointing_game"] <= 1.0 for row in explained["per_source"].values()
    )
    assert (out / "classifier_metrics.json").is_file()
