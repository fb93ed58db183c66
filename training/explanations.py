"""How well a classifier's Grad-CAM (paper eq. (1)-(2)) explains its reading: does it point at the lesions?

Heatmaps are made by the engine itself (``jcs.inference.DiagnosisEngine.classify_slices``: the same
input, Grad-CAM layer, score and placement on the slice as a diagnosis), then scored against lesion
masks and lung masks:

- **pointing game** (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016): a
  slice with a lesion is a hit when the heatmap's peak lies on the lesion mask dilated by
  ``POINTING_TOLERANCE`` of the slice width (5 pixels at 256², 10 at 512²);
- **heat share on lesions**: the share of the slice's heat (sum of the map) that lies on lesion pixels
  (for comparison: the share of the slice the lesions cover);
- on **lesion-free HU scans**: the share of heat outside the lungs (``jcs.lung``), and the slices with
  heat whose peak lies outside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jcs.inference import ClassifierSpec, DiagnosisEngine
from scipy import ndimage
from torch import nn

POINTING_TOLERANCE = 5 / 256  # dilation of the lesion mask for the pointing game, as a share of the width


@dataclass(frozen=True)
class SliceExplanation:
    """Scores of one slice's heatmap against its lesion mask."""

    hit: bool  # pointing game: the peak lies on the (dilated) lesion
    heat_on_lesion: float  # share of the heat on lesion pixels (0 when the map is empty)
    lesion_area: float  # share of the slice the lesion covers
    empty: bool  # the map has no heat at all (no positive evidence)


def heatmaps(net: nn.Module, spec: ClassifierSpec, images: Sequence[np.ndarray], device: str = "cpu") -> list:
    """Normalised Grad-CAM heatmap of each uint8 slice, made by the engine (slices of any sizes)."""
    engine = DiagnosisEngine(net, device=device, classifier_spec=spec, precision="fp32")
    out: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(index)
    for indices in by_shape.values():
        _, maps = engine.classify_slices(np.stack([images[i] for i in indices]))
        for i, heat in zip(indices, maps, strict=True):
            out[i] = heat
    return out


def explain_slice(heat: np.ndarray, lesion: np.ndarray) -> SliceExplanation:
    """Pointing game and heat share of one heatmap against one lesion mask of the same shape."""
    lesion = lesion.astype(bool)
    total = float(heat.sum())
    if total <= 0:
        return SliceExplanation(False, 0.0, float(lesion.mean()), True)
    radius = max(1, round(POINTING_TOLERANCE * heat.shape[1]))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    near = ndimage.binary_dilation(lesion, structure=yy**2 + xx**2 <= radius**2)
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return SliceExplanation(bool(near[peak]), float(heat[lesion].sum() / total), float(lesion.mean()), False)


def summarize(rows: Sequence[SliceExplanation]) -> dict[str, Any]:
    """Means over slices with a lesion: pointing game, heat share on lesions, lesion share of the slice."""
    return {
        "slices": len(rows),
        "pointing_game": float(np.mean([r.hit for r in rows])) if rows else float("nan"),
        "heat_share_on_lesions": float(np.mean([r.heat_on_lesion for r in rows])) if rows else float("nan"),
        "lesion_share_of_slice": float(np.mean([r.lesion_area for r in rows])) if rows else float("nan"),
        "slices_without_heat": int(sum(r.empty for r in rows)),
    }


def explanation_report(
    net: nn.Module, spec: ClassifierSpec, records: Sequence[Any], source_of: Any, device: str = "cpu"
) -> dict[str, dict[str, Any]]:
    """Per-source summaries over the records with a non-empty lesion mask (``source_of(record)`` names
    the source)."""
    masked = [r for r in records if r.mask is not None and r.mask.any()]
    maps = heatmaps(net, spec, [r.image for r in masked], device)
    per_source: dict[str, list[SliceExplanation]] = {}
    for record, heat in zip(masked, maps, strict=True):
        per_source.setdefault(source_of(record), []).append(explain_slice(heat, record.mask))
    return {source: summarize(rows) for source, rows in sorted(per_source.items())}


def heat_outside_lungs(heat: np.ndarray, lungs: np.ndarray) -> dict[str, Any]:
    """On a lesion-free scan (Z, H, W): share of all heat outside the lungs, and the slices with heat
    whose peak lies outside them."""
    lungs = lungs.astype(bool)
    total = float(heat.sum())
    with_heat = [z for z in range(heat.shape[0]) if heat[z].max() > 0]
    outside_peak = [
        z for z in with_heat if not lungs[z][np.unravel_index(int(np.argmax(heat[z])), heat[z].shape)]
    ]
    return {
        "slices": int(heat.shape[0]),
        "slices_with_heat": len(with_heat),
        "slices_peak_outside_lungs": len(outside_peak),
        "heat_share_outside_lungs": float(heat[~lungs].sum() / total) if total > 0 else 0.0,
    }


def scan_report(
    net: nn.Module,
    spec: ClassifierSpec,
    slice_labels: str,
    patients: Sequence[str] | None = None,
    window: tuple[float, float] = (-600.0, 1500.0),
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """Whole HU series with slice labels (COVID-CT-MD layout), optionally only ``patients``: per
    scan the classifier's positive slices (> 0.5), its slice AUC within the scan (when both labels
    occur) and where the heat of the lesion-free slices lies (:func:`heat_outside_lungs`)."""
    from jcs.lung import segment_lungs
    from jcs.preprocess import axial_slices_uint8

    from training import metrics
    from training.data import slice_label_series

    engine = DiagnosisEngine(net, device=device, classifier_spec=spec, precision="fp32")
    report: dict[str, dict[str, Any]] = {}
    for patient, ct, labels in slice_label_series(slice_labels):
        if patients is not None and patient not in patients:
            continue
        slices = axial_slices_uint8(ct, *window)
        probs, heat = engine.classify_slices(slices)
        lungs = segment_lungs(ct.axial_array(), ct.axial_image().GetSpacing()[::-1]) > 0
        negative = np.asarray(labels) == 0
        row: dict[str, Any] = {
            "slices": len(labels),
            "labelled_infected": int(sum(labels)),
            "classifier_positive_slices": int((probs > 0.5).sum()),
            "lesion_free": heat_outside_lungs(heat[negative], lungs[negative]),
        }
        if 0 < sum(labels) < len(labels):
            row["slice_auc"] = metrics.auc(probs.tolist(), list(labels))
        report[patient] = row
    return report


def source_name(record: Any) -> str:
    """The data set a slice comes from: the folder above ``images/`` (JCS list files), else its patient."""
    parts = Path(record.source).parts
    return parts[parts.index("images") - 1] if "images" in parts[1:] else record.patient


def format_report(per_source: dict[str, dict[str, Any]], scans: dict[str, dict[str, Any]]) -> str:
    """Markdown tables of :func:`explanation_report` and :func:`scan_report`."""
    lines = [
        "| source | slices with lesion | pointing game | heat share on lesions | lesion share of slice |",
        "|---|---|---|---|---|",
    ]
    for source, row in per_source.items():
        lines.append(
            f"| {source} | {row['slices']} | {row['pointing_game']:.3f} | "
            f"{row['heat_share_on_lesions']:.3f} | {row['lesion_share_of_slice']:.3f} |"
        )
    if scans:
        lines += [
            "",
            "| scan | slices | labelled infected | classifier positive | slice AUC | lesion-free slices: "
            "heat outside lungs, peaks outside lungs |",
            "|---|---|---|---|---|---|",
        ]
        for patient, row in scans.items():
            free = row["lesion_free"]
            auc = f"{row['slice_auc']:.3f}" if "slice_auc" in row else "–"
            lines.append(
                f"| {patient} | {row['slices']} | {row['labelled_infected']} | "
                f"{row['classifier_positive_slices']} | {auc} | {free['heat_share_outside_lungs']:.3f}, "
                f"{free['slices_peak_outside_lungs']} of {free['slices_with_heat']} |"
            )
    return "\n".join(lines)
