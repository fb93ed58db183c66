"""Learning-rate schedules of §V-B: step decay (classifier) and poly decay (segmenter)."""

from __future__ import annotations


def step_lr(base_lr: float, epoch: float, step_epochs: int = 30, gamma: float = 0.1) -> float:
    """Classifier: ``base_lr`` × ``gamma`` ^ ⌊epoch / step_epochs⌋ (0.1, ÷10 every 30 epochs)."""
    return base_lr * gamma ** int(epoch // step_epochs)


def poly_lr(base_lr: float, iteration: int, total: int, power: float = 0.9) -> float:
    """Segmenter: ``base_lr`` × (1 − iteration / total) ^ ``power`` (power 0.9)."""
    return base_lr * max(0.0, 1.0 - iteration / total) ** power


def warmup(lr: float, iteration: int, warmup_iterations: int) -> float:
    """Linear warm-up over the first ``warmup_iterations`` (0 = none; not in the paper)."""
    if warmup_iterations <= 0 or iteration >= warmup_iterations:
        return lr
    return lr * (iteration + 1) / warmup_iterations
