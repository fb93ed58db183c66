"""Train the JCS classifier, Res2Net-v1b (paper §III-A, §V-B).

    python -m training.train_classifier --config training/configs/classifier_ct.yaml
    torchrun --nproc_per_node 4 -m training.train_classifier --config ...

Image mixing (eq. 3, λ ~ Beta(0.5, 0.5)) of images, labels and lesion masks; cross-entropy on the mixed
labels plus activation-map supervision (eq. 4) wherever the mixed image's lesion mask is known (slices
with pixel masks, and lesion-free slices of non-COVID patients); SGD with step decay; checkpoints,
CSV log and a held-out report as for the segmenter.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training import common, evaluate
from training.config import ClassifierConfig, run_training_command
from training.data import ClassificationDataset
from training.loop import TrainingLoop, every
from training.losses import (
    attention_loss,
    class_activation_map,
    log_odds_activation_map,
    mix,
    sample_mixing_lambda,
    soft_cross_entropy,
)
from training.models import build_classification_model, count_parameters
from training.schedules import step_lr, warmup


def classifier_step_losses(
    net: torch.nn.Module,
    model: torch.nn.Module,
    batch: list[torch.Tensor],
    config: ClassifierConfig,
    iteration: int,
    precision: str,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of one batch: soft cross-entropy on mixed labels + weight × eq. (4).

    Mixing is seeded by (seed, iteration) so a resumed run repeats it exactly.
    """
    x, label, mask, has_mask = (t.to(device) for t in batch)
    known = has_mask | (label < 0.5)  # lesion masks are known for masked slices and lesion-free slices
    if config.mixup:
        rng = np.random.default_rng([config.seed, iteration, 7])
        lam = sample_mixing_lambda(rng, config.mixup_alpha)
        perm = torch.from_numpy(rng.permutation(x.shape[0])).to(device)
        x, label, mask = mix(x, lam, perm), mix(label, lam, perm), mix(mask, lam, perm)
        known = known & known[perm]
    features: list[torch.Tensor] = []
    hook = net.layer4.register_forward_hook(lambda _m, _i, out: features.append(out))
    try:
        with common.autocast(precision, device):
            logits = model(x.contiguous(memory_format=torch.channels_last))
    finally:
        hook.remove()
    cls_loss = soft_cross_entropy(logits, label)
    if config.attention_map == "log-odds":
        cam = log_odds_activation_map(features[0], net.fc.weight)
    else:
        cam = class_activation_map(features[0], net.fc.weight)
    att_loss = attention_loss(
        cam, mask, known, rectify=config.attention_map != "log-odds", balanced=config.attention_balanced
    )
    total = cls_loss + config.attention_weight * att_loss
    return total, {
        "loss": float(total.detach()),
        "cls": float(cls_loss.detach()),
        "att": float(att_loss.detach()),
    }


class ClassifierTraining(TrainingLoop):
    """Image mixing and activation-map supervision with SGD and step decay, by epochs."""

    kind = "classifier"
    config: ClassifierConfig

    def build_dataset(self) -> ClassificationDataset:
        config = self.config
        return ClassificationDataset(
            self.train_records,
            config.size,
            config.resize,
            config.augment or None,
            config.seed,
            config.data.feature_key,
            config.per_image_norm,
            config.whole_slice,
            config.lesion_free_crops,
        )

    def build_network(self) -> nn.Module:
        return build_classification_model(self.config)

    def build_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        config = self.config
        return torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )

    @functools.cached_property
    def per_epoch(self) -> int:
        """Iterations of one epoch (full batches on every rank)."""
        return common.iterations_per_epoch(len(self.dataset), self.config.batch_size, self.runtime)

    def total_iterations(self) -> int:
        return self.config.epochs * self.per_epoch

    def describe(self) -> str:
        config = self.config
        positives = sum(r.label for r in self.train_records)
        return (
            f"classifier Res2Net-{config.depth} ×{config.width_mult}: "
            f"{count_parameters(self.net) / 1e6:.2f} M parameters; "
            f"{len(self.train_records)} training slices ({positives} COVID-19), "
            f"{len(self.val_records)} held out; {self.precision}; {self.per_epoch} iterations/epoch"
        )

    def learning_rate(self, iteration: int) -> float:
        config = self.config
        return warmup(
            step_lr(config.lr, iteration / self.per_epoch, config.step_epochs, config.step_gamma),
            iteration,
            config.warmup_iterations,
        )

    def step_losses(self, iteration: int, batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return classifier_step_losses(
            self.net, self.model, batch, self.config, iteration, self.precision, self.runtime.device
        )

    def progress_postfix(self, parts: dict[str, float], lr: float) -> dict[str, str]:
        return {"loss": f"{parts['loss']:.3f}", "att": f"{parts['att']:.3f}", "lr": f"{lr:.1e}"}

    def checkpoint_due(self, iteration: int) -> bool:
        return every(iteration, self.per_epoch * self.config.checkpoint_every_epochs)

    def after_step(self, iteration: int) -> None:
        """Nothing: the classifier is evaluated once, at the end (:meth:`report`)."""

    def report(self) -> None:
        predictions = evaluate.classifier_predictions(self.net, self.config, self.runtime.device)
        report = evaluate.classifier_report(predictions, self.out_dir / "eval", "classifier")
        if "slice_auc" in report:
            print(f"held-out slice AUC {report['slice_auc']:.4f}", flush=True)
        for patient, row in report.get("patients", {}).items():
            print(f"  {patient}: {row['positive_slices']} of {row['slices']} slices positive", flush=True)


def train(config: ClassifierConfig, resume: str | None = None) -> Path:
    """Train for ``config.epochs`` (or the time limit); returns the last checkpoint's path."""
    if config.attention_map not in ("covid", "log-odds"):
        raise ValueError(f"attention_map must be 'covid' or 'log-odds', not {config.attention_map!r}")
    return ClassifierTraining(config, resume).run()


def main(argv: list[str] | None = None) -> int:
    example = "--set epochs=5 --set data.val_patients=[P001]"
    return run_training_command(ClassifierConfig, train, __doc__.split("\n")[0], example, argv)


if __name__ == "__main__":
    raise SystemExit(main())
