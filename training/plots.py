"""Evaluation figures: ROC curve, patient-threshold curve, Dice histograms (Fig. 11), worst-case overlays.

matplotlib is used when installed (it is optional); overlays are plain PIL images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def roc_plot(fpr: np.ndarray, tpr: np.ndarray, auc_value: float, path: Path) -> Path | None:
    """Slice-level ROC curve as PNG (None when matplotlib is absent)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot(fpr, tpr, lw=2, label=f"AUC = {auc_value:.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(
        xlabel="1 − specificity (false-positive rate)",
        ylabel="sensitivity",
        title="Slice-level ROC",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def patient_curve_plot(
    counts: dict[str, int], truth: dict[str, int], path: Path, t_max: int = 80
) -> Path | None:
    """Positive-slice count per patient against T (the decision is count > T)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for i, (patient, count) in enumerate(sorted(counts.items())):
        ax.barh(i, count, color="tab:red" if truth[patient] else "tab:blue")
        ax.text(count + 0.5, i, str(count), va="center", fontsize=8)
    ax.set_yticks(range(len(counts)), sorted(counts))
    for t in (15, 20, 25, 30):
        ax.axvline(t, color="grey", lw=0.7, ls=":")
    ax.set(
        xlabel="positive slices (red: COVID-19 patient, blue: not)",
        xlim=(0, max(t_max, *counts.values()) + 5),
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def dice_histograms(
    dice: Sequence[float], lesion_counts: Sequence[int], lesion_areas: Sequence[float], path: Path
) -> Path | None:
    """Fig. 11 style: per-image Dice distribution, and Dice against lesion count and lesion area."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), dpi=110)
    axes[0].hist(dice, bins=np.linspace(0, 1, 21), color="tab:green", edgecolor="white")
    axes[0].set(xlabel="Dice", ylabel="images", title="per-image Dice")
    axes[1].scatter(lesion_counts, dice, s=14)
    axes[1].set(xlabel="lesions (connected components)", ylabel="Dice", ylim=(0, 1))
    axes[2].scatter(np.asarray(lesion_areas) * 100, dice, s=14, color="tab:orange")
    axes[2].set(xlabel="lesion area (% of image)", ylabel="Dice", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> Image.Image:
    """RGB overlay: truth only green, prediction only red, both yellow, on the grey slice."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32) * 0.6
    t, p = truth.astype(bool), pred.astype(bool)
    rgb[t & ~p] = rgb[t & ~p] * 0.4 + np.array([0, 255, 0]) * 0.6
    rgb[p & ~t] = rgb[p & ~t] * 0.4 + np.array([255, 0, 0]) * 0.6
    rgb[p & t] = rgb[p & t] * 0.4 + np.array([255, 255, 0]) * 0.6
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def write_overlays(
    items: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]], out_dir: Path
) -> list[Path]:
    """PNG overlays of (name, image, truth, prediction, dice) items, named by rank and Dice."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for rank, (name, image, truth, pred, score) in enumerate(items, start=1):
        path = out_dir / f"worst{rank:02d}_{Path(name).stem}_dice{score:.3f}.png"
        overlay(image, truth, pred).save(path)
        paths.append(path)
    return paths
