"""Train the JCS segmenter (paper §III-B, §V-B) or the U-Net baseline.

    python -m training.train_segmenter --config training/configs/ct100_segmenter.yaml
    torchrun --nproc_per_node 4 -m training.train_segmenter --config ...     # DDP, one GPU each

Deep supervision with BCE + Dice on all five side outputs (eq. 6), Adam with poly decay, bf16/fp16
autocast, checkpoints to ``out_dir/last.pt`` (``--resume auto`` continues from it), CSV log
``out_dir/train_log.csv``, and a validation report on the held-out patients at the end.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from training import common, evaluate
from training.config import SegmenterConfig, run_training_command
from training.data import SegmentationDataset
from training.loop import TrainingLoop, every
from training.losses import deep_supervision_loss
from training.models import build_segmentation_model, count_parameters
from training.schedules import poly_lr, warmup


class SegmenterTraining(TrainingLoop):
    """Deep supervision (eq. 6) with Adam and poly decay; optional validation Dice every few iterations."""

    kind = "segmenter"
    config: SegmenterConfig

    def build_dataset(self) -> SegmentationDataset:
        config = self.config
        return SegmentationDataset(
            self.train_records,
            config.size,
            config.augment or None,
            config.seed,
            config.per_image_norm,
            config.data.feature_key,
            config.crop,
        )

    def build_network(self) -> nn.Module:
        return build_segmentation_model(self.config)

    def forward_module(self) -> nn.Module:
        return common.LogitsModel(self.net)

    def build_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        config = self.config
        return torch.optim.Adam(
            parameters, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay
        )

    def total_iterations(self) -> int:
        return self.config.iterations

    def describe(self) -> str:
        config = self.config
        return (
            f"segmenter {config.arch}: {count_parameters(self.net) / 1e6:.2f} M parameters, "
            f"{len(self.train_records)} training / {len(self.val_records)} validation slices, "
            f"{self.precision}, {self.runtime.world_size} process(es), "
            f"iterations {self.start}→{config.iterations}"
        )

    def learning_rate(self, iteration: int) -> float:
        config = self.config
        progress_it = iteration
        if config.schedule_by_time and config.time_limit_min > 0:
            # Poly decay over the larger of iteration and time progress, so a time-limited run still
            # ends with a fully decayed learning rate.
            share = common.shared_max(self.timer.fraction(), self.runtime)
            progress_it = max(iteration, min(config.iterations, int(share * config.iterations)))
        return warmup(
            poly_lr(config.lr, progress_it, config.iterations, config.poly_power),
            iteration,
            config.warmup_iterations,
        )

    def step_losses(self, iteration: int, batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        device = self.runtime.device
        x, mask = batch
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        mask = mask.to(device, non_blocking=True)
        with common.autocast(self.precision, device):
            logits = self.model(x)
        loss, parts = deep_supervision_loss(logits, mask)
        return loss, {"loss": float(loss.detach()), **{f"side{k + 1}": v for k, v in enumerate(parts)}}

    def progress_postfix(self, parts: dict[str, float], lr: float) -> dict[str, str]:
        return {"loss": f"{parts['loss']:.3f}", "lr": f"{lr:.2e}"}

    def checkpoint_due(self, iteration: int) -> bool:
        return every(iteration, self.config.checkpoint_every)

    def after_step(self, iteration: int) -> None:
        if every(iteration, self.config.eval_every) and self.runtime.is_main and self.val_records:
            scores = evaluate.segmentation_scores(
                self.net, self.val_records, self.config, self.runtime.device, self.precision
            )
            self.log.log({"iteration": iteration, "val_dice": scores["dice"]["mean"]})
            tqdm.write(f"iteration {iteration}: validation Dice {scores['dice']['mean']:.4f}")
            self.model.train()

    def report(self) -> None:
        out = self.out_dir / "eval"
        report = evaluate.evaluate_segmenter_checkpoint(self.checkpoint_path, out, self.runtime.device)
        print(evaluate.format_segmentation_table({self.config.arch: report["validation"]}), flush=True)


def train(config: SegmenterConfig, resume: str | None = None) -> Path:
    """Train to ``config.iterations`` (or the time limit); returns the path of the last checkpoint."""
    return SegmenterTraining(config, resume).run()


def main(argv: list[str] | None = None) -> int:
    example = "--set iterations=200 --set data.val_count=16"
    return run_training_command(SegmenterConfig, train, __doc__.split("\n")[0], example, argv)


if __name__ == "__main__":
    raise SystemExit(main())
