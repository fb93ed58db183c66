"""training.recipe: one command trains, mixes, evaluates and exports a model, and repeats bit-exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_training_runs import seg_config

from training import recipe
from training.config import ClassifierConfig, SegmenterConfig, load_config, to_dict

REPO = Path(__file__).resolve().parents[2]


def tiny_recipe(tmp_path: Path, **changes: object) -> Path:
    config_path = seg_config(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    config["data"]["val_count"] = 1  # one held-out slice for the evaluation
    config_path.write_text(yaml.safe_dump(config))
    record = tmp_path / "selection.json"
    record.write_text(json.dumps({"alpha": 0.5, "rule": "chosen beforehand"}))
    run = Path(config["out_dir"])
    values = {
        "name": "tiny-recipe",
        "kind": "segmenter",
        "train": [{"config": str(config_path), "set": ["lr=0.002"]}],
        "mix": [
            {
                "base": str(run / "iter_000002.pt"),
                "tuned": str(run / "last.pt"),
                "alpha": 0.5,
                "out": str(tmp_path / "tiny-mix" / "last.pt"),
            }
        ],
        "model": str(tmp_path / "tiny-mix" / "last.pt"),
        "evaluate": [],
        "card_metrics": {"validation_held_out": "{name}_metrics.json"},
        "card_records": {"wise_ft_selection": str(record)},
        "export": ["--test-time-flip", "--training-data", "five tiny slices"],
        **changes,
    }
    path = tmp_path / "tiny-recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_recipe_makes_the_model_and_a_second_run_only_repeats_the_cheap_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    registry = tmp_path / "registry"
    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(registry))
    path = tiny_recipe(tmp_path)
    argv = [str(path), "--work-dir", str(tmp_path / "work"), "--out", str(registry)]

    assert recipe.main(argv) == 0
    first = capsys.readouterr().out
    assert "no weights of that name to compare with" in first
    card = json.loads((registry / "tiny-recipe.json").read_text())
    assert card["training"]["config"]["lr"] == 0.002  # the step's --set reached the run
    assert card["training"]["wise_ft"]["alpha"] == 0.5 and card["input"]["test_time_flip"] is True
    assert set(card["metrics"]) == {"validation_held_out", "wise_ft_selection"}
    held_out = card["metrics"]["validation_held_out"]
    assert held_out["name"] == "tiny-mix" and "dice" in held_out["validation"] and held_out["by_source"]
    assert card["metrics"]["wise_ft_selection"]["rule"] == "chosen beforehand"

    assert recipe.main(argv) == 0
    second = capsys.readouterr().out
    assert "already trained (4 iterations); nothing to do" in second
    assert "every tensor identical to the user weights" in second  # the training run was not touched
    assert json.loads((registry / "tiny-recipe.json").read_text())["sha256"] == card["sha256"]


def test_a_finished_run_resumed_is_left_untouched(tmp_path: Path) -> None:
    from training import train_segmenter

    config = load_config(SegmenterConfig, seg_config(tmp_path))
    last = train_segmenter.train(config)
    stamp = last.stat().st_mtime_ns
    train_segmenter.train(config, resume="auto")
    assert last.stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "detector"}, "kind must be one of segmenter, classifier"),
        ({"colour": "red"}, "unknown keys: colour"),
        ({"export": ["--out", "elsewhere"]}, "export must not give --out"),
        ({"mix": [{"base": "a.pt", "alpha": 0.5}]}, "a train or mix step is malformed"),
        ({"card_records": {"sweep": "missing.json"}}, "the card's 'sweep' needs missing.json"),
        ({"train": [], "mix": [], "model": "nowhere/last.pt"}, "nowhere/last.pt"),
    ],
)
def test_a_recipe_that_cannot_be_followed_is_named_without_a_traceback(
    tmp_path: Path, changes: dict, message: str, capsys: pytest.CaptureFixture
) -> None:
    path = tiny_recipe(tmp_path, **changes)
    with pytest.raises(SystemExit) as stop:
        recipe.main([str(path), "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "weights")])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("training.recipe: ") and message in error and "Traceback" not in error


def differing_keys(config: dict, recorded: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ, ignoring settings added since the card was written (not recorded)."""
    keys = []
    for key, value in recorded.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            keys += differing_keys(config[key], value, f"{prefix}{key}.")
        elif key in config and config[key] != value:
            keys.append(prefix + key)
    return keys


def test_every_bundled_model_has_a_recipe_whose_last_run_is_the_cards_config() -> None:
    """The recipes name the configs the bundled weights were trained with (the card records them)."""
    cards = {p.stem: json.loads(p.read_text()) for p in (REPO / "JCSDiagnosis/jcs/weights").glob("*.json")}
    recipes = {p.stem: recipe.load_recipe(p) for p in (REPO / "training/recipes").glob("*.yaml")}
    assert set(recipes) == set(cards)
    for name, item in recipes.items():
        step = item.train[-1]
        config_type = SegmenterConfig if item.kind == "segmenter" else ClassifierConfig
        config = to_dict(load_config(config_type, REPO / step.config, list(step.sets)))
        recorded = cards[name]["training"]["config"]
        differing = set(differing_keys(config, recorded)) - {"out_dir", "test_time_flip"}
        assert not differing, f"{name}: recipe and card differ in {sorted(differing)}"
        assert item.kind == cards[name]["kind"] and ("--default" in item.export) == cards[name]["default"]
        for record in item.card_records.values():
            assert (REPO / record).is_file()
    assert differing_keys({"a": {"b": 1, "new": 2}, "c": 3}, {"a": {"b": 1}, "c": 4}) == ["c"]
