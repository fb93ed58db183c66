"""Weight-space interpolation of a fine-tuned model with the model it was fine-tuned from (WiSE-FT,
Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022).

    python -m training.soup --base jcs-seg-ct100-w025-s256-gpu --tuned runs/ctseg_segmenter/last.pt \\
        --alpha 0.5 --out runs/seg_wise05/last.pt

Every floating-point tensor, batch-norm running statistics included, becomes
``(1 - alpha) * base + alpha * tuned``; integer buffers (``num_batches_tracked``) are the tuned
model's. Only models of one architecture that share their start (a fine-tune and the model it started
from, or two runs of one recipe from one initialisation) tend to lie in one basin, so that their mixture
still works; the result must be evaluated like any other model. The output is a training
checkpoint with the tuned model's config, so ``training.evaluate`` and ``training.export`` take it as is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from training.common import load_training_checkpoint
from training.models import source_state_dict


def interpolate_states(
    base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * tuned`` per floating tensor; other tensors from ``tuned``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], not {alpha}")
    if base.keys() != tuned.keys():
        differing = sorted(set(base) ^ set(tuned))[:5]
        raise ValueError(f"the two models have different layers (e.g. {differing}); they cannot be mixed")
    mixed = {}
    for key, tuned_tensor in tuned.items():
        base_tensor = base[key]
        if base_tensor.shape != tuned_tensor.shape:
            raise ValueError(
                f"layer {key} has shape {tuple(base_tensor.shape)} in the base model and "
                f"{tuple(tuned_tensor.shape)} in the tuned one; they cannot be mixed"
            )
        if tuned_tensor.is_floating_point():
            base_float = base_tensor.to(tuned_tensor.dtype)
            mixed[key] = torch.lerp(base_float, tuned_tensor, alpha)
        else:
            mixed[key] = tuned_tensor.clone()
    return mixed


def soup(base: str, tuned: str, alpha: float, out: Path) -> Path:
    """Write the checkpoint of ``base`` and ``tuned`` mixed by ``alpha`` (the tuned model's config)."""
    state = load_training_checkpoint(tuned)
    state["model"] = interpolate_states(source_state_dict(base), state["model"], alpha)
    state["config"] = {**state["config"], "out_dir": str(out.parent)}
    state["extra"] = {**state.get("extra", {}), "wise_ft": {"base": base, "tuned": tuned, "alpha": alpha}}
    state.pop("optimizer", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="model fine-tuned from: checkpoint or registry name")
    parser.add_argument("--tuned", required=True, help="the fine-tuned model's training checkpoint")
    parser.add_argument("--alpha", type=float, required=True, help="weight of the tuned model, 0 to 1")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pt)")
    args = parser.parse_args(argv)
    try:
        path = soup(args.base, args.tuned, args.alpha, args.out)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"training.soup: {exc}\n")
    print(f"wrote {path}: {1 - args.alpha:g} x {args.base} + {args.alpha:g} x {args.tuned}")


if __name__ == "__main__":
    main()
