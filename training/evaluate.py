"""Evaluation in the paper's layouts (§V): Tables IV (patients), V–VII (segmentation), Fig. 11.

    python -m training.evaluate --checkpoint runs/seg/last.pt --checkpoint runs/unet/last.pt --out runs/eval
    python -m training.evaluate --checkpoint runs/cls_fold1/last.pt --checkpoint runs/cls_fold2/last.pt ...
    python -m training.evaluate --weights NAME --out DIR     # bundled/registry weights, split from the card

Inputs are prepared with ``jcs.preprocess`` exactly as the engine does. Segmentation: Dice, IoU and
Eφ per held-out image and their means, the same on perturbed copies (other windows, CLAHE, gamma +
flip, zoom), a Dice histogram and overlays of the worst cases. Classification: the held-out
predictions of all given checkpoints are pooled (leave-patients-out folds), giving slice-level ROC/AUC
and, for CT volumes, patient decisions for T = 15, 20, 25, 30 and a recommended T.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from jcs.decision import OPACIFIED_LUNG_FRACTION, SegmenterReading, scaled_threshold, slice_lung_fraction
from jcs.gradcam import GRADCAM_SCORES
from jcs.inference import ClassifierSpec, classify_batch, segment_batch, to_model_device
from jcs.io import CTVolume
from jcs.lung import segment_lungs
from jcs.preprocess import axial_slices_uint8, classifier_input, segmenter_input
from scipy import ndimage

from training import augment, common, explanations, metrics, plots
from training.config import ClassifierConfig, SegmenterConfig, load_config
from training.data import SliceRecord, load_records, slice_label_series, split_by_patient
from training.export import input_spec
from training.models import config_from_dict, model_from_checkpoint

MIN_VOLUME_SLICES = 10  # patients with fewer slices (single PNGs) get slice-level but no patient decisions
SEGMENTATION_SCORES = ("dice", "iou", "e_measure")
MIN_LESION_LUNG_FRACTION = 0.005  # cross-source check: a slice "has lesion" above 0.5 % of its lung area


def _batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def predict_lesions(
    net: torch.nn.Module,
    images: Sequence[np.ndarray],
    config: SegmenterConfig,
    device: torch.device,
    precision: str,
    batch_size: int = 8,
) -> list[np.ndarray]:
    """Lesion probability maps at each image's own size, by the engine's segment stage
    (:func:`jcs.inference.segment_batch`: input size, per-image standardisation and the mirrored second
    pass as the config says)."""
    net.eval()
    out = []
    for chunk in _batched(list(images), batch_size):
        shapes = {im.shape for im in chunk}
        groups = [[im] for im in chunk] if len(shapes) > 1 else [list(chunk)]
        for group in groups:
            x = segmenter_input(np.stack(group), size=config.size, standardize=config.per_image_norm)
            x = to_model_device(x, device)
            prob = segment_batch(net, x, group[0].shape, precision, config.test_time_flip)
            out += [p.cpu().numpy() for p in prob]
    return out


def predict_covid(
    net: torch.nn.Module,
    images: Sequence[np.ndarray],
    device: torch.device,
    precision: str,
    batch_size: int = 32,
    standardize: bool = False,
    whole_slice: int = 0,
) -> np.ndarray:
    """COVID-19 probability per slice with the engine's classifier input and scores
    (:func:`jcs.inference.classify_batch`, without Grad-CAM)."""
    net.eval()
    probs = []
    for chunk in _batched(list(images), batch_size):
        # Every slice is preprocessed on its own (sizes differ between sources), then batched.
        x = torch.cat([classifier_input(im[None], standardize, whole_slice) for im in chunk])
        probs.append(classify_batch(net, to_model_device(x, device), precision))
    return np.concatenate(probs) if probs else np.zeros(0)


def segmentation_scores(
    net: torch.nn.Module,
    records: Sequence[SliceRecord],
    config: SegmenterConfig,
    device: torch.device,
    precision: str,
    perturbation: str | None = None,
    keep_predictions: bool = False,
) -> dict[str, Any]:
    """Per-image Dice/IoU/Eφ (prediction thresholded at 0.5) and their summaries."""
    pairs = [(r.image, r.mask) for r in records]
    if perturbation is not None:
        pairs = [augment.PERTURBATIONS[perturbation](im, m) for im, m in pairs]
    probs = predict_lesions(net, [p[0] for p in pairs], config, device, precision)
    rows = []
    predictions = []
    for record, (image, mask), prob in zip(records, pairs, probs, strict=True):
        pred = (prob > 0.5).astype(np.uint8)
        rows.append(
            {
                "image": record.source,
                "dice": metrics.dice(pred, mask),
                "iou": metrics.iou(pred, mask),
                "e_measure": metrics.e_measure(pred, mask),
                "lesions": int(ndimage.label(mask)[1]),
                "lesion_fraction": float(mask.mean()),
            }
        )
        if keep_predictions:
            predictions.append((record.source, image, mask, pred))
    report: dict[str, Any] = {
        k: metrics.summarize([r[k] for r in rows]) for k in SEGMENTATION_SCORES
    }
    report["per_image"] = rows
    if keep_predictions:
        report["predictions"] = predictions
    return report


def format_segmentation_table(rows: dict[str, dict[str, Any]]) -> str:
    """Tables V–VII layout: one row per method, mean Dice / IoU / Eφ (± std) over the images."""
    lines = ["| Method | Dice | IoU | Eφ | images |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        cells = [f"{r[k]['mean']:.4f} ± {r[k]['std']:.3f}" for k in SEGMENTATION_SCORES]
        lines.append(f"| {name} | {' | '.join(cells)} | {r['dice']['n']} |")
    return "\n".join(lines)


def format_patient_table(rows: Sequence[dict[str, float]]) -> str:
    """Table IV layout: T, patient-level sensitivity and specificity."""
    lines = ["| T | Sensitivity | Specificity | COVID-19 / other patients |", "|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['T']} | {r['sensitivity']:.3f} | {r['specificity']:.3f} | "
            f"{r['patients_pos']} / {r['patients_neg']} |"
        )
    return "\n".join(lines)


def scores_by_source(per_image: Sequence[dict[str, Any]], records: Sequence[SliceRecord]) -> dict[str, Any]:
    """Mean Dice / IoU / Eφ of the held-out images per data source (``explanations.source_name``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row, record in zip(per_image, records, strict=True):
        groups.setdefault(explanations.source_name(record), []).append(row)
    means = {
        source: {k: float(np.mean([r[k] for r in rows])) for k in SEGMENTATION_SCORES}
        for source, rows in groups.items()
    }
    return {source: {"images": len(groups[source]), **means[source]} for source in sorted(groups)}


def validation_records(config: SegmenterConfig | ClassifierConfig) -> list[SliceRecord]:
    records = load_records(config.data)
    _, val = split_by_patient(
        records, config.data.val_patients, config.data.val_count, config.data.split_seed
    )
    if not val:
        raise ValueError("the configuration holds out no patients; nothing to evaluate")
    return val


def segmenter_report(
    net: torch.nn.Module,
    config: SegmenterConfig,
    out_dir: Path,
    name: str,
    device: torch.device | None = None,
    worst: int = 6,
) -> dict[str, Any]:
    """Validation and perturbed-validation scores of one segmenter; writes CSV, JSON and figures."""
    device = device or common.default_device()
    net = net.to(device).to(memory_format=torch.channels_last)
    precision = common.inference_precision(config.precision, device)
    val = validation_records(config)
    main = segmentation_scores(net, val, config, device, precision, keep_predictions=True)
    predictions = main.pop("predictions")
    perturbed = {
        p: segmentation_scores(net, val, config, device, precision, perturbation=p)
        for p in augment.PERTURBATIONS
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{name}_per_image.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(main["per_image"][0]))
        writer.writeheader()
        writer.writerows(main["per_image"])
    dice = [r["dice"] for r in main["per_image"]]
    plots.dice_histograms(
        dice,
        [r["lesions"] for r in main["per_image"]],
        [r["lesion_fraction"] for r in main["per_image"]],
        out_dir / f"{name}_dice_histogram.png",
    )
    order = np.argsort(dice)[:worst]
    plots.write_overlays([(*predictions[i], dice[i]) for i in order], out_dir / f"{name}_worst")
    summary = {k: main[k] for k in SEGMENTATION_SCORES}
    perturbed_summary = {p: {k: r[k] for k in SEGMENTATION_SCORES} for p, r in perturbed.items()}
    mean_perturbed = float(np.mean([r["dice"]["mean"] for r in perturbed.values()]))
    report = {
        "name": name,
        "validation": summary,
        "by_source": scores_by_source(main["per_image"], val),
        "perturbed": perturbed_summary,
        "perturbed_mean_dice": mean_perturbed,
        "validation_images": [r.source for r in val],
    }
    (out_dir / f"{name}_metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def evaluate_segmenter_checkpoint(
    path: Path, out_dir: Path, device: torch.device | None = None
) -> dict[str, Any]:
    """:func:`segmenter_report` of a training checkpoint, named after its architecture."""
    kind, net, config = model_from_checkpoint(path)
    if kind != "segmenter":
        raise ValueError(f"{path} is a {kind} checkpoint")
    return segmenter_report(net, config, out_dir, config.arch, device)


def cross_source_report(
    net: torch.nn.Module,
    config: SegmenterConfig,
    slice_labels: str | Path,
    out_dir: Path,
    name: str,
    device: torch.device | None = None,
    min_lung_fraction: float = MIN_LESION_LUNG_FRACTION,
    slab: int = 1,
) -> dict[str, Any]:
    """The segmenter on whole CT series of another source with slice labels but no masks.

    ``slab`` > 1 first averages each run of that many consecutive slices into one (as a thick
    reconstruction does; a slab is labelled infected when any of its slices is), to check the
    decision on thick-slice scans.

    Each series is windowed like the engine, its lungs segmented (``jcs.lung``); a slice's score is its
    predicted lesion area as a fraction of its lung area. Reports the slice-level AUC of that score
    against the radiologist's infected-slice labels and, per patient, the predicted opacification share
    of the lung volume and the slices whose score exceeds ``min_lung_fraction``; and the patient
    decisions of the engine's segmenter rule (a slice is positive when its score exceeds
    ``jcs.decision.OPACIFIED_LUNG_FRACTION``; positive case when more than T slices are, T scaled to
    the slice spacing by ``jcs.decision.scaled_threshold``).
    """
    device = device or common.default_device()
    net = net.to(device).to(memory_format=torch.channels_last)
    precision = common.inference_precision(config.precision, device)
    rows: list[dict[str, Any]] = []
    patients: dict[str, dict[str, Any]] = {}
    if slab < 1:
        raise ValueError(f"slab must be at least 1 slice, not {slab}")
    for patient, ct, labels in slice_label_series(slice_labels):
        if slab > 1:
            ct, labels = thick_slabs(ct, labels, slab)
        spacing_xyz = ct.axial_image().GetSpacing()
        lungs = segment_lungs(ct.axial_array(), spacing_xyz[::-1]) > 0
        slices = axial_slices_uint8(ct, config.data.window_level, config.data.window_width)
        probs = predict_lesions(net, list(slices), config, device, precision)
        lesion = np.stack(probs) > 0.5
        scores = slice_lung_fraction(lesion, lungs)
        rows += [
            {"patient": patient, "slice": z, "label": label, "lesion_lung_fraction": float(score)}
            for z, (label, score) in enumerate(zip(labels, scores, strict=True))
        ]
        rule = SegmenterReading.from_fractions(scores, scaled_threshold(len(labels), float(spacing_xyz[2])))
        patients[patient] = {
            "slices": len(labels),
            "labelled_infected": int(sum(labels)),
            "slices_with_lesion": int((scores > min_lung_fraction).sum()),
            "opacification_percent_of_lung": float(100 * (lesion & lungs).sum() / max(lungs.sum(), 1)),
            "segmenter_rule_slices": rule.positive_slice_count,
            "segmenter_rule_threshold": rule.threshold,
            "segmenter_rule_positive": rule.positive,
        }
    report: dict[str, Any] = {
        "name": name,
        "source": str(slice_labels),
        "min_lung_fraction": min_lung_fraction,
        "segmenter_rule_min_lung_fraction": OPACIFIED_LUNG_FRACTION,
        "patients": patients,
    }
    covid = np.array([p["labelled_infected"] > 0 for p in patients.values()])
    called = np.array([p["segmenter_rule_positive"] for p in patients.values()])
    if covid.any():
        report["segmenter_rule_sensitivity"] = float(called[covid].mean())
    if not covid.all():
        report["segmenter_rule_specificity"] = float((~called[~covid]).mean())
    labels = [r["label"] for r in rows]
    if 0 < sum(labels) < len(labels):
        report["slice_auc"] = metrics.auc([r["lesion_lung_fraction"] for r in rows], labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{name}_cross_source_slices.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / f"{name}_cross_source.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def thick_slabs(ct: CTVolume, labels: Sequence[int], slab: int) -> tuple[CTVolume, list[int]]:
    """``ct`` with every ``slab`` consecutive axial slices averaged (HU mean) into one slice ``slab``
    times as thick, centred on its slab; trailing slices that do not fill a slab are left out."""
    axial = ct.axial_image()
    hu = ct.axial_array().astype(np.float32)
    count = hu.shape[0] // slab
    if count < 2:
        raise ValueError(f"{ct.path}: {hu.shape[0]} slices make fewer than two slabs of {slab}")
    mean = hu[: count * slab].reshape(count, slab, *hu.shape[1:]).mean(axis=1)
    image = sitk.GetImageFromArray(np.round(mean).astype(np.int16))
    spacing = list(axial.GetSpacing())
    image.SetSpacing((spacing[0], spacing[1], spacing[2] * slab))
    image.SetDirection(axial.GetDirection())
    image.SetOrigin(axial.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, (slab - 1) / 2)))
    slab_labels = [int(any(labels[k * slab : (k + 1) * slab])) for k in range(count)]
    return CTVolume(image=image, is_hu=True, path=ct.path), slab_labels


def format_cross_source(report: dict[str, Any]) -> str:
    share = 100 * report["segmenter_rule_min_lung_fraction"]
    lines = [
        f"{report['name']} on {report['source']}: slice AUC of the lesion share of the lung "
        f"{report.get('slice_auc', float('nan')):.4f}",
        f"| patient | slices | labelled infected | slices with lesion | opacification % of lung | "
        f"segmenter rule (> {share:g} % of lung): slices / T / call |",
        "|---|---|---|---|---|---|",
    ]
    for patient, row in report["patients"].items():
        call = "positive" if row["segmenter_rule_positive"] else "negative"
        lines.append(
            f"| {patient} | {row['slices']} | {row['labelled_infected']} | {row['slices_with_lesion']} | "
            f"{row['opacification_percent_of_lung']:.2f} | {row['segmenter_rule_slices']} / "
            f"{row['segmenter_rule_threshold']} / {call} |"
        )
    rates = [
        f"{k} {report[f'segmenter_rule_{k}']:.2f}" for k in ("sensitivity", "specificity")
        if f"segmenter_rule_{k}" in report
    ]
    if rates:
        lines.append("segmenter rule, patients: " + ", ".join(rates))
    return "\n".join(lines)


def classifier_predictions(
    net: torch.nn.Module, config: ClassifierConfig, device: torch.device | None = None
) -> list[dict[str, Any]]:
    """Held-out slice predictions: one dict (patient, source, label, probability) per slice."""
    device = device or common.default_device()
    net = net.to(device).to(memory_format=torch.channels_last)
    precision = common.inference_precision(config.precision, device)
    val = validation_records(config)
    probs = predict_covid(
        net,
        [r.image for r in val],
        device,
        precision,
        standardize=config.per_image_norm,
        whole_slice=config.size if config.whole_slice else 0,
    )
    return [
        {"patient": r.patient, "source": r.source, "label": r.label, "probability": float(p)}
        for r, p in zip(val, probs, strict=True)
    ]


def recommend_threshold(counts: dict[str, int], truth: dict[str, int]) -> int | None:
    """Largest-margin T between the held-out patients: midway between the highest positive-slice count
    of a non-COVID patient and the lowest of a COVID-19 patient (None if they overlap or one is absent)."""
    neg = [counts[p] for p in counts if truth[p] == 0]
    pos = [counts[p] for p in counts if truth[p] == 1]
    if not neg or not pos or max(neg) >= min(pos):
        return None
    return (max(neg) + min(pos)) // 2


def classifier_report(predictions: Sequence[dict[str, Any]], out_dir: Path, name: str) -> dict[str, Any]:
    """Slice AUC/ROC and patient-level Table IV from pooled held-out predictions; writes files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = [p["probability"] for p in predictions]
    labels = [p["label"] for p in predictions]
    report: dict[str, Any] = {"name": name, "slices": len(predictions)}
    if 0 < sum(labels) < len(labels):
        fpr, tpr, _ = metrics.roc_curve(scores, labels)
        report["slice_auc"] = metrics.auc(scores, labels)
        predicted = np.asarray(scores) > 0.5
        truth = np.asarray(labels).astype(bool)
        report["slice_sensitivity"] = float((predicted & truth).sum() / truth.sum())
        report["slice_specificity"] = float((~predicted & ~truth).sum() / (~truth).sum())
        plots.roc_plot(fpr, tpr, report["slice_auc"], out_dir / f"{name}_roc.png")
    per_patient: dict[str, list[dict[str, Any]]] = {}
    for p in predictions:
        per_patient.setdefault(p["patient"], []).append(p)
    volumes = {k: v for k, v in per_patient.items() if len(v) >= MIN_VOLUME_SLICES}
    if volumes:
        counts = metrics.positive_slice_counts({k: [s["probability"] for s in v] for k, v in volumes.items()})
        truth_patient = {k: int(any(s["label"] for s in v)) for k, v in volumes.items()}
        report["patients"] = {
            k: {
                "slices": len(volumes[k]),
                "positive_slices": counts[k],
                "labelled_positive_slices": sum(s["label"] for s in volumes[k]),
                "covid19": bool(truth_patient[k]),
            }
            for k in sorted(volumes)
        }
        report["table_iv"] = metrics.patient_table(counts, truth_patient)
        report["recommended_threshold"] = recommend_threshold(counts, truth_patient)
        plots.patient_curve_plot(counts, truth_patient, out_dir / f"{name}_patients.png")
    with open(out_dir / f"{name}_slices.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["patient", "source", "label", "probability"])
        writer.writeheader()
        writer.writerows(predictions)
    (out_dir / f"{name}_metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def explain_classifier(
    net: torch.nn.Module,
    spec: ClassifierSpec,
    config: ClassifierConfig,
    slice_labels: str | None,
    out_dir: Path,
    name: str,
) -> dict[str, Any]:
    """Explanation quality (``training.explanations``) on the held-out masked slices and, given a
    slice-label CSV, on its scans; prints the tables and writes ``NAME_explanations.json``."""
    net = net.to("cpu").eval()
    val = validation_records(config)
    report: dict[str, Any] = {
        "name": name,
        "pointing_tolerance": explanations.POINTING_TOLERANCE,
        "per_source": explanations.explanation_report(net, spec, val, explanations.source_name),
        "held_out_patients": sorted({r.patient for r in val}),
    }
    report["scans"] = explanations.scan_report(net, spec, slice_labels) if slice_labels else {}
    print(f"\n{name}: Grad-CAM against the lesions (held-out slices) and on whole scans")
    print(explanations.format_report(report["per_source"], report["scans"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}_explanations.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _slab_name(name: str, slab: int) -> str:
    return name if slab == 1 else f"{name}_slab{slab}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", default=[], help="training checkpoint (repeatable)")
    parser.add_argument("--weights", help="registry weights name; the split comes from its model card")
    parser.add_argument("--out", required=True, help="output folder for tables, CSVs and figures")
    parser.add_argument(
        "--cross-source",
        metavar="SLICE_LABELS_CSV",
        help="also run segmenters on these labelled CT series of another source (COVID-CT-MD layout)",
    )
    parser.add_argument(
        "--slab",
        type=int,
        default=1,
        help="--cross-source: average every SLAB consecutive slices into one (thick-slice check)",
    )
    parser.add_argument(
        "--test-time-flip", action="store_true", help="segmenters: average with the mirrored slice"
    )
    parser.add_argument(
        "--split-from",
        metavar="CONFIG_YAML",
        help="--weights: evaluate on this training config's data and held-out patients, not the card's",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="classifiers: score Grad-CAM against the held-out lesion masks (pointing game, heat share) "
        "and, with --cross-source, where the heat lies on each scan",
    )
    parser.add_argument(
        "--gradcam-score",
        choices=GRADCAM_SCORES,
        help="classifier checkpoints: Grad-CAM score (default logit)",
    )
    return parser


@dataclass
class _Evaluation:
    """What one ``training.evaluate`` command gathers over its checkpoints and weights."""

    args: argparse.Namespace
    seg_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    perturbed_dice: dict[str, float] = field(default_factory=dict)
    dice_by_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    cross: list[dict[str, Any]] = field(default_factory=list)
    pooled: list[dict[str, Any]] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return Path(self.args.out)

    def add_segmenter(self, net: torch.nn.Module, config: SegmenterConfig, name: str) -> None:
        report = segmenter_report(net, config, self.out_dir, name)
        self.seg_rows[name] = report["validation"]
        self.perturbed_dice[name] = report["perturbed_mean_dice"]
        self.dice_by_source[name] = report["by_source"]
        if self.args.cross_source:
            slab = self.args.slab
            self.cross.append(
                cross_source_report(
                    net, config, self.args.cross_source, self.out_dir, _slab_name(name, slab), slab=slab
                )
            )

    def add_classifier(
        self, net: torch.nn.Module, config: ClassifierConfig, spec: ClassifierSpec, name: str
    ) -> None:
        self.pooled += classifier_predictions(net, config)
        if self.args.explain:
            explain_classifier(net, spec, config, self.args.cross_source, self.out_dir, name)

    def print_segmenters(self) -> None:
        if self.seg_rows:
            print(format_segmentation_table(self.seg_rows))
            dice = ", ".join(f"{k} {v:.4f}" for k, v in self.perturbed_dice.items())
            print("\nmean Dice on the perturbed copies: " + dice)
            for name, sources in self.dice_by_source.items():
                parts = ", ".join(f"{s} {r['dice']:.4f} ({r['images']})" for s, r in sources.items())
                print(f"{name}, Dice by source (images): {parts}")
        for report in self.cross:
            print("\n" + format_cross_source(report))

    def print_classifiers(self) -> None:
        if not self.pooled:
            return
        sources = [p["source"] for p in self.pooled]
        if len(set(sources)) != len(sources):
            raise ValueError("the classifier checkpoints' validation sets overlap; pool disjoint folds only")
        report = classifier_report(self.pooled, self.out_dir, "classifier")
        if "slice_auc" in report:
            print(
                f"slice-level AUC {report['slice_auc']:.4f} over {report['slices']} held-out slices "
                f"(sensitivity {report['slice_sensitivity']:.3f}, "
                f"specificity {report['slice_specificity']:.3f})"
            )
        if "table_iv" in report:
            for patient, row in report["patients"].items():
                print(
                    f"  {patient}: {row['positive_slices']} of {row['slices']} slices positive "
                    f"({row['labelled_positive_slices']} labelled infected)"
                )
            print(format_patient_table(report["table_iv"]))
            print(f"recommended T (count > T): {report['recommended_threshold']}")


def _add_checkpoint(evaluation: _Evaluation, path: Path) -> None:
    kind, net, config = model_from_checkpoint(path)
    args = evaluation.args
    if isinstance(config, SegmenterConfig):
        config.test_time_flip = config.test_time_flip or args.test_time_flip
        evaluation.add_segmenter(net, config, path.parent.name)
        return
    card_data = {"input": input_spec(kind, config), "gradcam": {"score": args.gradcam_score or "logit"}}
    evaluation.add_classifier(net, config, ClassifierSpec.from_card_data(card_data), path.parent.name)


def _add_weights(evaluation: _Evaluation, name: str) -> None:
    from jcs.weights import load_model

    net, card = load_model(name)
    config = config_from_dict(card.kind, card.data["training"]["config"])
    if evaluation.args.split_from:  # another run's data and held-out patients (to compare weights on it)
        config.data = load_config(type(config), evaluation.args.split_from).data
    if isinstance(config, SegmenterConfig):
        flip = bool(card.data["input"].get("test_time_flip")) or evaluation.args.test_time_flip
        config.test_time_flip = flip
        evaluation.add_segmenter(net, config, card.name)
    else:
        evaluation.add_classifier(net, config, ClassifierSpec.from_card(card), card.name)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.weights:
        parser.error("give --checkpoint and/or --weights")
    evaluation = _Evaluation(args)
    for path in args.checkpoint:
        _add_checkpoint(evaluation, Path(path))
    if args.weights:
        _add_weights(evaluation, args.weights)
    evaluation.print_segmenters()
    evaluation.print_classifiers()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
