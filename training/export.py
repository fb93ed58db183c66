"""Export a training checkpoint as engine weights: safetensors + model card (jcs.weights.save_weights).

    python -m training.export --checkpoint /work/runs/seg_jcs/last.pt --name jcs-seg-ct100 \\
        --metrics /work/runs/eval/seg_jcs_metrics.json --out JCSDiagnosis/jcs/weights --default

The card records the builder arguments, the input specification, the training data, split and full
configuration, the measured metrics, the recommended positive-slice threshold (classifier), the
storage precision and the intended use. After writing, the weights are reloaded the way the engine
loads them and their outputs compared with the checkpoint's.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from jcs.gradcam import GRADCAM_SCORES
from jcs.weights import flush_subnormals, save_weights

from training.models import classifier_architecture, model_from_checkpoint, segmenter_architecture

INTENDED_USE = (
    "Research use only — not for clinical use. Not a medical device; must not be used for diagnosis or "
    "treatment decisions. Trained on a tiny public set (see training_data); its figures are not "
    "evidence of clinical performance."
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def input_spec(kind: str, config: Any) -> dict[str, Any]:
    """What the engine must feed the model (kept equal to jcs.preprocess)."""
    if kind == "segmenter":
        return {
            "size": config.size,
            "preprocessing": "8-bit lung-window slice resized to size×size, official BGR-order normalisation "
            "(jcs.preprocess.segmenter_input)",
            "per_image_standardize": bool(config.per_image_norm),
            "test_time_flip": bool(config.test_time_flip),
            "output": "5 sigmoid side outputs, channel 0 = prediction, threshold 0.5",
        }
    if getattr(config, "whole_slice", False):
        geometry = "8-bit lung-window slice, the whole slice resized to size×size (no crop)"
    else:
        geometry = "8-bit lung-window slice, shorter side to 256, centre crop 224"
    return {
        "size": config.size,
        "whole_slice": bool(getattr(config, "whole_slice", False)),
        "preprocessing": f"{geometry}, ImageNet mean/std (jcs.preprocess.classifier_input)",
        "per_image_standardize": bool(config.per_image_norm),
        "output": "logits (non-COVID, COVID-19); class 1 = COVID-19",
    }


def build_card(
    kind: str,
    config: Any,
    name: str,
    metrics: dict[str, Any],
    training_data: str,
    threshold: int | None,
    default: bool,
    dtype: str,
    checkpoint: dict[str, Any],
    decision: dict[str, Any] | None = None,
    gradcam: dict[str, str] | None = None,
) -> dict[str, Any]:
    from training.config import to_dict

    architecture = segmenter_architecture(config) if kind == "segmenter" else classifier_architecture(config)
    data = config.data
    card: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "architecture": architecture,
        "default": default,
        "input": input_spec(kind, config),
        "training_data": training_data,
        "split": {
            "validation_patients": list(data.val_patients),
            "val_count": data.val_count,
            "split_seed": data.split_seed,
        },
        "training": {
            "config": to_dict(config),
            "iterations": checkpoint["iteration"],
            "elapsed_s": round(float(checkpoint["extra"].get("elapsed_s", 0.0)), 1),
            "stopped_early": bool(checkpoint["extra"].get("stopped_early", False)),
            "code": "training/ of this repository (python -m training.train_"
            f"{'segmenter' if kind == 'segmenter' else 'classifier'})",
        },
        "metrics": metrics,
        "storage_dtype": dtype,
        "intended_use": INTENDED_USE,
    }
    wise_ft = checkpoint["extra"].get("wise_ft")
    if wise_ft is not None:  # training.soup: the tuned run's config, mixed with a model of the same start
        card["training"]["wise_ft"] = wise_ft
        card["training"]["code"] += ", then python -m training.soup (WiSE-FT weight interpolation)"
    if threshold is not None:
        card["threshold"] = threshold
    if decision is not None:
        card["decision"] = decision
    if gradcam is not None:
        card["gradcam"] = gradcam
    return card


def segmenter_rule(min_lung_fraction: float, threshold: int | None, reason: str) -> dict[str, Any]:
    """A classifier card's ``decision`` block, for a classifier that should not decide cases: the engine
    then decides by the segmenter rule (jcs.inference), with T = ``threshold`` or, when None, 25 mm of
    slices of each scan."""
    if not 0.0 <= min_lung_fraction < 1.0:
        raise ValueError(f"min_lung_fraction must lie in [0, 1), not {min_lung_fraction}")
    block: dict[str, Any] = {"rule": "segmenter", "min_lung_fraction": min_lung_fraction, "reason": reason}
    if threshold is not None:
        block["threshold"] = threshold
    return block


def export(
    checkpoint_path: Path,
    name: str,
    out_dir: Path,
    metrics: dict[str, Any],
    training_data: str,
    threshold: int | None = None,
    default: bool = False,
    dtype: str = "float32",
    test_time_flip: bool = False,
    decision: dict[str, Any] | None = None,
    gradcam: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write NAME.safetensors + NAME.json into ``out_dir``; returns the card and a reload check.

    ``test_time_flip`` (segmenters) asks the engine for the mirrored second pass (card
    ``input.test_time_flip``); ``decision`` (classifiers, :func:`segmenter_rule`) recommends the
    segmenter decision rule instead of this classifier's; ``gradcam`` (classifiers: ``score`` and
    ``reason``) names the Grad-CAM score the engine uses (jcs.gradcam.GRADCAM_SCORES)."""
    from training.common import load_training_checkpoint

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    state = load_training_checkpoint(checkpoint_path)
    kind, net, config = model_from_checkpoint(checkpoint_path)
    if kind == "segmenter" and config.arch != "jcs":
        raise ValueError(f"{checkpoint_path} is a {config.arch} baseline; only JCS models run in the engine")
    if test_time_flip:
        if kind != "segmenter":
            raise ValueError("test_time_flip applies to segmenters only")
        config.test_time_flip = True
    if gradcam is not None and kind != "classifier":
        raise ValueError("a Grad-CAM score belongs on a classifier's card")
    if decision is not None and kind != "classifier":
        raise ValueError("a decision rule block belongs on a classifier's card (the one it overrules)")
    if default:
        for other in out_dir.glob("*.json"):
            card = json.loads(other.read_text(encoding="utf-8"))
            if card.get("kind") == kind and card.get("default") is True and card.get("name") != name:
                raise ValueError(f"{other} is already the default {kind}; unmark it first")
    net.eval()
    flush_subnormals(net)  # ~1e-38 weights change nothing but slow float32 CPU arithmetic many times
    check_storage(net, dtype)
    card = build_card(
        kind, config, name, metrics, training_data, threshold, default, dtype, state, decision, gradcam
    )
    written = save_weights(net.to(DTYPES[dtype]), card, out_dir)
    check = reload_check(kind, config, name, out_dir, checkpoint_path)
    return {"card": written.data, "reload_max_abs_diff": check}


def check_storage(net: torch.nn.Module, dtype: str) -> None:
    """Refuse a storage precision that changes a tensor by more than 1 % (e.g. a batch-norm variance
    beyond the fp16 range of 65504)."""
    for key, value in net.state_dict().items():
        if not value.is_floating_point():
            continue
        stored = value.to(DTYPES[dtype]).float()
        scale = float(value.abs().max()) + 1e-12
        if not torch.isfinite(stored).all() or float((stored - value.float()).abs().max()) > 0.01 * scale:
            raise ValueError(f"{key} does not survive {dtype} storage (range {scale:.3g}); export as float32")


def reload_check(kind: str, config: Any, name: str, out_dir: Path, checkpoint_path: Path) -> float:
    """Max |difference| of the engine-loaded weights' outputs and the checkpoint's on a fixed input."""
    from jcs import weights

    _, reference, _ = model_from_checkpoint(checkpoint_path)
    previous = os.environ.get("JCS_WEIGHTS_DIR")
    os.environ["JCS_WEIGHTS_DIR"] = str(out_dir)
    try:
        loaded, _ = weights.load_model(name)
    finally:
        if previous is None:
            os.environ.pop("JCS_WEIGHTS_DIR")
        else:
            os.environ["JCS_WEIGHTS_DIR"] = previous
    size = min(config.size, 256)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = reference.eval()(x)
        b = loaded.float()(x)
    if kind == "classifier":
        a, b = torch.softmax(a, 1), torch.softmax(b, 1)
    return float((a - b).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--name", required=True, help="registry name (letters, digits, . _ -)")
    parser.add_argument("--out", default="JCSDiagnosis/jcs/weights", help="registry directory")
    parser.add_argument("--metrics", action="append", default=[], help="metrics JSON from training.evaluate")
    parser.add_argument("--training-data", required=True, help="what the model was trained on (for the card)")
    parser.add_argument("--threshold", type=int, help="recommended positive-slice threshold T (classifier)")
    parser.add_argument("--default", action="store_true", help="mark as the engine's default of its kind")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="storage precision")
    parser.add_argument(
        "--test-time-flip", action="store_true", help="segmenter: engine averages with the mirrored slice"
    )
    parser.add_argument(
        "--segmenter-rule",
        metavar="MIN_LUNG_FRACTION",
        type=float,
        help="classifier: recommend that cases be decided by the segmenter rule instead (a slice is "
        "positive when opacification covers more than this share of its lung)",
    )
    parser.add_argument(
        "--rule-threshold", type=int, help="the segmenter rule's T (default: 25 mm of slices of each scan)"
    )
    parser.add_argument("--rule-reason", default="", help="why the card recommends the segmenter rule")
    parser.add_argument(
        "--gradcam-score",
        choices=GRADCAM_SCORES,
        help="classifier: the Grad-CAM score (default: the logit, eq. 2)",
    )
    parser.add_argument("--gradcam-reason", default="", help="why the card names that Grad-CAM score")
    args = parser.parse_args(argv)
    gradcam = None
    if args.gradcam_score is not None:
        gradcam = {"score": args.gradcam_score, "reason": args.gradcam_reason}
    decision = None
    if args.segmenter_rule is not None:
        decision = segmenter_rule(args.segmenter_rule, args.rule_threshold, args.rule_reason)
    metrics: dict[str, Any] = {}
    for item in args.metrics:
        metrics[Path(item).stem] = json.loads(Path(item).read_text(encoding="utf-8"))
    result = export(
        Path(args.checkpoint),
        args.name,
        Path(args.out),
        metrics,
        args.training_data,
        args.threshold,
        args.default,
        args.dtype,
        args.test_time_flip,
        decision,
        gradcam,
    )
    card = result["card"]
    print(
        f"wrote {card['name']} ({card['kind']}, sha256 {card['sha256'][:16]}…) to {args.out}; "
        f"engine reload max |Δ| = {result['reload_max_abs_diff']:.2e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
