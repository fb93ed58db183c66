"""One command per bundled model: train its runs, mix them, evaluate it and export it with its card.

    python -m training.recipe training/recipes/jcs-cls-ctseg-r50w025-ws256-mix.yaml
    python -m training.recipe RECIPE --out JCSDiagnosis/jcs/weights     # replace the bundled files

A recipe (YAML, ``training/recipes/``) names the model's training configs in order, the weight-space
mixes (``training.soup``) that make it from their checkpoints, the ``training.evaluate`` options, which
evaluation files go into the card under which key, and the ``training.export`` options. Every step can
be repeated: a training run continues from its ``last.pt`` (``--resume auto``) and one that already
reached its end or its time limit is left as it is, so a recipe whose runs exist only mixes, evaluates
and exports. The weights go to ``runs/recipes/NAME/weights`` unless ``--out`` says otherwise, and their
tensors are compared with the registry's weights of that name.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file

from training import evaluate, export, soup, train_classifier, train_segmenter

TRAINERS: dict[str, Callable[[list[str]], int]] = {
    "segmenter": train_segmenter.main,
    "classifier": train_classifier.main,
}
RECIPE_KEYS = ("name", "kind", "train", "mix", "model", "evaluate", "card_metrics", "card_records", "export")


class RecipeError(ValueError):
    """A recipe file that cannot be followed; the message names the file and the problem."""


@dataclass(frozen=True)
class TrainStep:
    """One training run: a config file and ``--set`` overrides (as the run was made)."""

    config: str
    sets: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        overrides = [item for value in self.sets for item in ("--set", value)]
        return ["--config", self.config, *overrides, "--resume", "auto"]


@dataclass(frozen=True)
class MixStep:
    """``training.soup``: (1 - alpha) base + alpha tuned, written to ``out``."""

    base: str
    tuned: str
    alpha: float
    out: str


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    train: tuple[TrainStep, ...]
    mix: tuple[MixStep, ...]
    model: str  # the checkpoint evaluated and exported (a run's or the last mix's last.pt)
    evaluate: tuple[str, ...]  # training.evaluate options (it runs when card_metrics asks for its files)
    card_metrics: Mapping[str, str]  # card key -> evaluation file ("{name}" = the model's run name)
    card_records: Mapping[str, str]  # card key -> a JSON file of the repository (e.g. a selection sweep)
    export: tuple[str, ...]

    @property
    def run_name(self) -> str:
        """What ``training.evaluate`` names the model's outputs after (its checkpoint's folder)."""
        return Path(self.model).parent.name


def load_recipe(path: Path) -> Recipe:
    """Read and check a recipe file (RecipeError naming the problem)."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from exc
    if not isinstance(values, dict):
        raise RecipeError(f"recipe {path} must hold a mapping")
    missing = [key for key in ("name", "kind", "model", "export") if key not in values]
    if missing:
        raise RecipeError(f"recipe {path} lacks {', '.join(missing)}")
    unknown = set(values) - set(RECIPE_KEYS)
    if unknown:
        raise RecipeError(f"recipe {path} has unknown keys: {', '.join(sorted(unknown))}")
    owned = {"--checkpoint", "--name", "--out", "--metrics"} & {str(a) for a in values["export"]}
    if owned:
        raise RecipeError(
            f"recipe {path}: export must not give {', '.join(sorted(owned))} (the recipe sets them)"
        )
    if values["kind"] not in TRAINERS:
        raise RecipeError(f"recipe {path}: kind must be one of {', '.join(TRAINERS)}, not {values['kind']!r}")
    try:
        return Recipe(
            name=str(values["name"]),
            kind=str(values["kind"]),
            train=tuple(_train_step(item) for item in values.get("train") or []),
            mix=tuple(
                MixStep(str(m["base"]), str(m["tuned"]), float(m["alpha"]), str(m["out"]))
                for m in values.get("mix") or []
            ),
            model=str(values["model"]),
            evaluate=tuple(str(a) for a in values.get("evaluate") or []),
            card_metrics={str(k): str(v) for k, v in (values.get("card_metrics") or {}).items()},
            card_records={str(k): str(v) for k, v in (values.get("card_records") or {}).items()},
            export=tuple(str(a) for a in values["export"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RecipeError(f"recipe {path}: a train or mix step is malformed ({exc!r})") from exc


def _train_step(item: Any) -> TrainStep:
    if isinstance(item, str):
        return TrainStep(item)
    return TrainStep(str(item["config"]), tuple(str(s) for s in item.get("set") or []))


def follow(recipe: Recipe, work_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Train, mix, evaluate and export ``recipe``; returns the written card."""
    for step in recipe.train:
        print(f"[{recipe.name}] train {step.config} {' '.join(step.sets)}".rstrip(), flush=True)
        TRAINERS[recipe.kind](step.argv())
    for mix in recipe.mix:
        print(f"[{recipe.name}] mix {mix.base} and {mix.tuned}, alpha {mix.alpha:g}", flush=True)
        soup.soup(mix.base, mix.tuned, mix.alpha, Path(mix.out))
    eval_dir = work_dir / "eval"
    if recipe.card_metrics:
        print(f"[{recipe.name}] evaluate {recipe.model} into {eval_dir}", flush=True)
        evaluate.main(["--checkpoint", recipe.model, "--out", str(eval_dir), *recipe.evaluate])
    metric_args = _gather_card_metrics(recipe, eval_dir, work_dir / "card")
    print(f"[{recipe.name}] export to {out_dir}", flush=True)
    export_argv = ["--checkpoint", recipe.model, "--name", recipe.name, "--out", str(out_dir)]
    export.main([*export_argv, *metric_args, *recipe.export])
    return json.loads((out_dir / f"{recipe.name}.json").read_text(encoding="utf-8"))


def _gather_card_metrics(recipe: Recipe, eval_dir: Path, card_dir: Path) -> list[str]:
    """Copy the card's metric files under their card keys; ``--metrics`` arguments for the export."""
    if card_dir.exists():
        shutil.rmtree(card_dir)
    card_dir.mkdir(parents=True)
    sources = {key: eval_dir / name.format(name=recipe.run_name) for key, name in recipe.card_metrics.items()}
    sources.update({key: Path(path) for key, path in recipe.card_records.items()})
    args = []
    for key, source in sources.items():
        if not source.is_file():
            raise RecipeError(f"{recipe.name}: the card's {key!r} needs {source}, which was not written")
        target = card_dir / f"{key}.json"
        shutil.copyfile(source, target)
        args += ["--metrics", str(target)]
    return args


def registered_weights(name: str) -> tuple[dict[str, torch.Tensor], str] | None:
    """(tensors, where) of the registry's weights named ``name``, or None when there are none."""
    from jcs.errors import WeightsError
    from jcs.weights import find_weights

    try:
        card = find_weights(name)
    except WeightsError:
        return None
    return load_file(str(card.path)), f"the {card.source} weights ({card.path})"


def comparison(
    card: Mapping[str, Any], out_dir: Path, before: tuple[dict[str, torch.Tensor], str] | None
) -> str:
    """Whether the written tensors equal those of the registry's weights of that name (read before)."""
    head = f"{card['name']}: sha256 {card['sha256'][:16]}…"
    if before is None:
        return f"{head}; no weights of that name to compare with"
    written = load_file(str(out_dir / card["file"]))
    registered, where = before
    if written.keys() != registered.keys():
        return f"{head}, other layers than {where}"
    largest = max(float((written[k].double() - registered[k].double()).abs().max()) for k in written)
    if largest == 0.0:
        return f"{head}, every tensor identical to {where}"
    return f"{head}, different from {where} (largest difference {largest:.3g})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", type=Path, help="recipe YAML (training/recipes/NAME.yaml)")
    parser.add_argument("--work-dir", type=Path, help="evaluation and card files (default runs/recipes/NAME)")
    parser.add_argument("--out", type=Path, help="where the weights go (default WORK_DIR/weights)")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe)
        work_dir = args.work_dir or Path("runs") / "recipes" / recipe.name
        before = registered_weights(recipe.name)
        out_dir = args.out or work_dir / "weights"
        card = follow(recipe, work_dir, out_dir)
    except (ValueError, OSError) as exc:  # RecipeError, and what a step refuses (a missing file, bad data)
        parser.exit(2, f"training.recipe: {exc}\n")
    print(comparison(card, out_dir, before))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
