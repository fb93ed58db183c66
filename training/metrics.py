"""Evaluation measures of §V: Dice, IoU, enhanced-alignment Eφ, slice ROC/AUC, patient decisions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PATIENT_THRESHOLDS = (15, 20, 25, 30)  # Table IV


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|P∩G| / (|P| + |G|) of binary masks; 1 when both are empty."""
    p, g = pred.astype(bool), truth.astype(bool)
    total = p.sum() + g.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(p, g).sum() / total)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """|P∩G| / |P∪G| of binary masks; 1 when both are empty."""
    p, g = pred.astype(bool), truth.astype(bool)
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)


def e_measure(pred: np.ndarray, truth: np.ndarray, eps: float = 2.2204e-16) -> float:
    """Enhanced-alignment measure Eφ (Fan et al., IJCAI 2018) of a binary prediction.

    φ = X − mean(X) for prediction and truth; ξ = 2 φ_G∘φ_P / (φ_G∘φ_G + φ_P∘φ_P); enhanced
    alignment (1 + ξ)² / 4, summed and divided by (w·h − 1) as in the authors' code. An empty truth
    scores 1 − P (the fraction of background predicted as background), a full one scores P.
    """
    p, g = pred.astype(np.float64), truth.astype(bool)
    n = p.size
    if not g.any():
        enhanced = 1.0 - p
    elif g.all():
        enhanced = p
    else:
        gf = g.astype(np.float64)
        align_p, align_g = p - p.mean(), gf - gf.mean()
        xi = 2.0 * align_g * align_p / (align_g**2 + align_p**2 + eps)
        enhanced = (xi + 1.0) ** 2 / 4.0
    return float(enhanced.sum() / (n - 1 + eps))


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds descending from +inf; ties share one point."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        raise ValueError("ROC needs both positive and negative slices")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp, fp = np.cumsum(y)[distinct], np.cumsum(~y)[distinct]
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (trapezoids; equals the Mann–Whitney probability with ties as ½)."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr))


def positive_slice_counts(
    probabilities: Mapping[str, Sequence[float]], slice_threshold: float = 0.5
) -> dict[str, int]:
    """Per patient, the number of slices whose COVID-19 probability exceeds ``slice_threshold``."""
    return {p: int((np.asarray(v) > slice_threshold).sum()) for p, v in probabilities.items()}


def patient_table(
    counts: Mapping[str, int], truth: Mapping[str, int], thresholds: Sequence[int] = PATIENT_THRESHOLDS
) -> list[dict[str, float]]:
    """Table IV: for each T, patient sensitivity and specificity with "positive when count > T".

    A side with no patients gets NaN.
    """
    rows = []
    for t in thresholds:
        decided = {p: counts[p] > t for p in counts}
        pos = [p for p in counts if truth[p] == 1]
        neg = [p for p in counts if truth[p] == 0]
        sens = sum(decided[p] for p in pos) / len(pos) if pos else float("nan")
        spec = sum(not decided[p] for p in neg) / len(neg) if neg else float("nan")
        rows.append(
            {
                "T": t,
                "sensitivity": sens,
                "specificity": spec,
                "patients_pos": len(pos),
                "patients_neg": len(neg),
            }
        )
    return rows


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation, median and count of per-image values."""
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "median": float(np.median(a)), "n": int(a.size)}
