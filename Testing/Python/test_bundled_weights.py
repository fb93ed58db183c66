"""The weights shipped in JCSDiagnosis/jcs/weights: model cards, hashes, defaults, and a real run."""

from __future__ import annotations

import numpy as np
import pytest
from jcs.inference import DiagnosisEngine
from jcs.io import read_ct
from jcs.preprocess import window_to_uint8
from jcs.sample import sample_path
from jcs.weights import default_weights, load_model


@pytest.mark.parametrize("kind", ["classifier", "segmenter"])
def test_bundled_default_loads_with_its_card(kind: str) -> None:
    name = default_weights(kind)
    assert name is not None, f"no bundled default {kind}"
    model, card = load_model(name)  # verifies the SHA-256 and loads strictly
    assert card.kind == kind and not model.training
    assert len(card.sha256) == 64
    for field in ("architecture", "input", "training_data", "metrics", "intended_use"):
        assert card.data.get(field), f"model card of {name} lacks {field!r}"
    assert "not for clinical use" in str(card.data["intended_use"]).lower()


@pytest.mark.slow
def test_bundled_weights_explain_the_real_sample() -> None:
    """On 8 slices of the real COVID-19 sample the default classifier gives probabilities and a
    whole-slice Grad-CAM heatmap on every slice whose peak is the slice's probability."""
    ct = read_ct(sample_path())
    engine = DiagnosisEngine.from_registry(device="cpu", segment_policy="always")
    assert engine.classifier_spec.gradcam_score == "log-odds"  # named by the classifier's model card
    assert engine.classifier_spec.whole_slice
    slices = ct.axial_array()[16:24]
    probabilities, heatmap = engine.classify_slices(window_to_uint8(slices))
    assert probabilities.shape == (8,) and ((probabilities > 0) & (probabilities < 1)).all()
    np.testing.assert_allclose(heatmap.reshape(8, -1).max(axis=1), probabilities, rtol=1e-5)
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0


@pytest.mark.slow
def test_bundled_segmenter_reproduces_its_card_on_the_held_out_real_slices(shared_data) -> None:
    """The engine, fed as its card says (size, per-image standardisation, mirrored pass), scores the
    card's validation Dice on the held-out COVID-19-CT100 slices neither mixed model saw."""
    from PIL import Image

    from training import metrics

    engine = DiagnosisEngine.from_registry(device="cpu", segment_policy="always")
    card = engine.segmenter_card
    held_out = [n for n in card.data["split"]["validation_patients"] if n.startswith("ct100_")]
    folder = shared_data / "covid19-ct100"
    images = np.stack([np.array(Image.open(folder / "images" / f"{n}.png").convert("L")) for n in held_out])
    masks = [np.array(Image.open(folder / "masks" / f"{name}.png")) > 0 for name in held_out]
    lesion = engine.segment_slices(images) > 0.5
    dice = float(np.mean([metrics.dice(pred, truth) for pred, truth in zip(lesion, masks, strict=True)]))
    by_source = card.data["metrics"]["validation_held_out"]["by_source"]
    assert len(held_out) == by_source["covid19-ct100"]["images"] == 16
    assert dice == pytest.approx(by_source["covid19-ct100"]["dice"], abs=0.01)
    assert min(dice, by_source["covid19-ct-seg"]["dice"]) > 0.7  # both sources; either single model < 0.66


@pytest.mark.slow
def test_bundled_segmenter_reproduces_its_card_on_the_other_held_out_source(shared_data) -> None:
    """The same on the other look of CT: the 274 CLAHE-enhanced COVID-19-CT-Seg slices of the two
    patients (coronacases_007, _008) that neither mixed model saw."""
    from pathlib import Path

    from training import metrics
    from training.data import load_list_file

    engine = DiagnosisEngine.from_registry(device="cpu", segment_policy="always")
    card = engine.segmenter_card
    held_out = set(card.data["split"]["validation_patients"])
    listing = Path(__file__).resolve().parents[2] / "training" / "lists" / "covid19_ct_seg.txt"
    records = [r for r in load_list_file(listing) if r.patient in held_out]
    expected = card.data["metrics"]["validation_held_out"]["by_source"]["covid19-ct-seg"]
    assert {r.patient for r in records} == {"coronacases_007", "coronacases_008"}
    assert len(records) == expected["images"]
    lesion = engine.segment_slices(np.stack([r.image for r in records])) > 0.5
    dice = float(np.mean([metrics.dice(pred, r.mask > 0) for pred, r in zip(lesion, records, strict=True)]))
    assert dice == pytest.approx(expected["dice"], abs=0.01)


@pytest.mark.slow
def test_bundled_defaults_decide_real_scans_by_the_segmenter_rule(shared_data, tmp_path) -> None:
    """The bundled classifier's card defers to the segmenter rule; on real scans the segmenter never
    saw, the COVID-19 sample is positive and a stretch of a normal scan negative."""
    import csv
    import shutil

    engine = DiagnosisEngine.from_registry(device="cpu")
    assert (engine.decision, engine.min_lung_fraction, engine.threshold) == ("segmenter", 0.02, None)
    assert "does not generalise" in engine.classifier_card.data["decision"]["reason"]
    covid = engine.diagnose(read_ct(sample_path()))
    assert covid.decision == "segmenter" and covid.threshold == 12  # 25 mm of 2 mm slices
    assert covid.positive and covid.positive_slice_count == int((covid.slice_lung_fraction > 0.02).sum())
    with open(shared_data / "covid-ct-md" / "slice_labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["patient"] == "normal001"]
    rows.sort(key=lambda r: int(r["slice_index_sup_to_inf"]))
    series = tmp_path / "normal001"
    series.mkdir()
    for row in rows[40:88]:  # 48 slices through the lungs
        shutil.copy(shared_data / "covid-ct-md" / row["file"], series)
    normal = engine.diagnose(read_ct(series))
    assert normal.decision == "segmenter" and normal.lungs.any()
    assert not normal.positive and normal.positive_slice_count <= 4
    # the classifier is surer of the COVID-19 slices, and the heat (weighted by it) says so
    assert np.median(normal.slice_probabilities) * 3 < np.median(covid.slice_probabilities)
    assert np.percentile(normal.heatmap.reshape(48, -1).max(axis=1), 90) < 0.1


@pytest.mark.slow
def test_bundled_explanation_classifier_puts_its_heat_in_the_lungs_of_the_sample() -> None:
    """jcs-cls-ctseg-r50w025-ws256-mix (the default; eq. (4) from the first iteration, whole slices): on
    the real sample its Grad-CAM covers the whole slice and lies in the lungs (the earlier default
    jcs-cls-ctmd-ct100-r50w025: 58 % of the heat, 23 of 48 slices' peaks)."""
    from jcs.lung import find_lungs

    ct = read_ct(sample_path())
    engine = DiagnosisEngine.from_registry("jcs-cls-ctseg-r50w025-ws256-mix", device="cpu")
    assert engine.classifier_spec.whole_slice and engine.classifier_spec.gradcam_score == "log-odds"
    assert engine.decision == "segmenter"  # its card defers case decisions to the segmenter rule
    lungs = find_lungs(ct).labels > 0
    _, heatmap = engine.classify_slices(window_to_uint8(ct.axial_array()))
    assert (heatmap.reshape(len(heatmap), -1).max(axis=1) > 0).all()  # heat on every slice
    peaks = [lungs[z].flat[int(np.argmax(heatmap[z]))] for z in range(len(heatmap))]
    assert np.mean(peaks) >= 0.9
    assert heatmap[lungs].sum() / heatmap.sum() > 0.75
