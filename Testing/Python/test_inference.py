"""DiagnosisEngine: outputs, decision rule, segmentation policy, precision, cancel, OOM fallback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from jcs import weights
from jcs.decision import oversized_components, segmenter_reading, slice_lung_fraction
from jcs.errors import CancelledError, JCSError, WeightsError
from jcs.inference import (
    DiagnosisEngine,
    cpu_supports_bf16,
    resolve_device,
    resolve_precision,
    scaled_threshold,
)
from jcs.io import CTVolume
from jcs.preprocess import SEGMENTER_MEAN_BGR, SEGMENTER_STD_BGR, classifier_input, segmenter_input
from jcs.weights import load_model, save_weights
from phantoms import LesionSpec, make_chest_phantom
from tiny_weights import TINY_CLASSIFIER_ARCH, make_tiny_classifier


@pytest.fixture(scope="module")
def phantom_ct() -> CTVolume:
    phantom = make_chest_phantom(shape=(10, 96, 96), seed=4)
    return CTVolume(image=phantom.image, is_hu=True, path=Path("phantom.nrrd"))


@pytest.fixture
def models(tiny_weights: dict[str, str]) -> dict[str, object]:
    classifier, classifier_card = load_model(tiny_weights["classifier"])
    segmenter, segmenter_card = load_model(tiny_weights["segmenter"])
    return {
        "classifier": classifier,
        "segmenter": segmenter,
        "classifier_card": classifier_card,
        "segmenter_card": segmenter_card,
    }


@pytest.fixture(scope="module")
def fp32_result(tiny_weights_dir: Path, phantom_ct: CTVolume):
    """One fp32 run with segmentation forced, shared by several tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JCS_WEIGHTS_DIR", str(tiny_weights_dir))
        engine = DiagnosisEngine.from_registry(
            "tiny-classifier", "tiny-segmenter", device="cpu", precision="fp32", segment_policy="always"
        )
    calls: list[tuple[str, float]] = []
    result = engine.diagnose(phantom_ct, progress=lambda stage, f: calls.append((stage, f)))
    return result, calls


def test_result_contents(fp32_result) -> None:
    result, calls = fp32_result
    z = 10
    assert result.slice_probabilities.shape == (z,) and result.slice_probabilities.dtype == np.float32
    assert ((result.slice_probabilities >= 0) & (result.slice_probabilities <= 1)).all()
    assert result.positive_slice_count == int((result.slice_probabilities > 0.5).sum())
    assert 0 < result.positive_slice_count < z  # the tiny classifier separates lung from non-lung slices
    assert result.threshold == 25 and not result.positive
    assert result.heatmap.shape == (z, 96, 96) and result.heatmap.dtype == np.float32
    peaks = result.heatmap.reshape(z, -1).max(axis=1)  # normalised per slice, weighted by p(COVID-19)
    assert result.heatmap.min() >= 0
    np.testing.assert_allclose(peaks[peaks > 0], result.slice_probabilities[peaks > 0], rtol=1e-5)
    assert result.segmented and result.lesion_probability is not None
    assert result.lesion_mask.dtype == np.uint8 and result.lesion_mask.shape == (z, 96, 96)
    np.testing.assert_array_equal(result.lesion_mask, (result.lesion_probability > 0.5).astype(np.uint8))
    assert 0 < result.lesion_mask.mean() < 1
    assert set(result.timings_s) >= {"prepare", "classify", "segment", "total"}
    assert result.weights["classifier"]["name"] == "tiny-classifier"
    assert len(result.weights["segmenter"]["sha256"]) == 64
    assert result.device == "cpu" and result.precision == "fp32"
    stages = [stage for stage, _ in calls]
    assert stages[0] == "prepare" and stages[-1] == "done" and "classify" in stages and "segment" in stages
    classify = [f for stage, f in calls if stage == "classify"]
    assert classify == sorted(classify) and classify[-1] == 1.0


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_bf16_matches_fp32(models: dict[str, object], phantom_ct: CTVolume, fp32_result) -> None:
    reference, _ = fp32_result
    engine = DiagnosisEngine(**models, device="cpu", precision="bf16", segment_policy="always")
    result = engine.diagnose(phantom_ct)
    assert result.precision == "bf16"
    assert result.positive == reference.positive
    p32, p16 = reference.slice_probabilities, result.slice_probabilities
    confident = np.abs(p32 - 0.5) > 0.1
    np.testing.assert_array_equal(p16[confident] > 0.5, p32[confident] > 0.5)
    assert np.abs(p16 - p32).max() < 0.1
    a, b = reference.lesion_mask.astype(bool), result.lesion_mask.astype(bool)
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    # The tiny random-weight segmenter has many pixels near 0.5, so it is held to 0.98; trained
    # weights give far fewer borderline pixels (see benchmarks/bench_engine.py).
    assert dice >= 0.98
    cos = (reference.heatmap * result.heatmap).sum() / (
        np.linalg.norm(reference.heatmap) * np.linalg.norm(result.heatmap)
    )
    assert cos > 0.98


def test_positive_only_policy_skips_negative_cases(models: dict[str, object], phantom_ct: CTVolume) -> None:
    engine = DiagnosisEngine(**models, device="cpu", precision="fp32", threshold=10)
    result = engine.diagnose(phantom_ct)
    assert not result.positive and not result.segmented
    assert result.lesion_probability is None and not result.lesion_mask.any()
    assert "segment" not in result.timings_s
    engine = DiagnosisEngine(**models, device="cpu", precision="fp32", threshold=0)
    result = engine.diagnose(phantom_ct)
    assert result.positive and result.segmented


def test_classification_only_without_segmenter(models: dict[str, object], phantom_ct: CTVolume) -> None:
    engine = DiagnosisEngine(models["classifier"], device="cpu", precision="fp32", threshold=0)
    result = engine.diagnose(phantom_ct)
    assert result.positive and not result.segmented and "segmenter" not in result.weights
    assert any("no segmenter" in note for note in result.notes)


def test_cancel(models: dict[str, object], phantom_ct: CTVolume) -> None:
    engine = DiagnosisEngine(**models, device="cpu", precision="fp32", batch_size=4)
    polls: list[int] = []

    def cancel_after_two() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(CancelledError, match="cancelled during classify"):
        engine.diagnose(phantom_ct, should_cancel=cancel_after_two)
    with pytest.raises(CancelledError, match="before it started"):
        engine.diagnose(phantom_ct, should_cancel=lambda: True)


class _OutOfMemoryAbove(torch.nn.Module):
    """Wraps a classifier and raises the CUDA OOM error for batches larger than ``limit``."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.layer4 = inner.layer4
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_halves_the_batch(models: dict[str, object], fp32_result) -> None:
    reference, _ = fp32_result
    slices = np.full((5, 96, 96), 60, dtype=np.uint8)
    slices[:, 20:70, 15:45] = 10
    plain = DiagnosisEngine(models["classifier"], device="cpu", precision="fp32", batch_size=16)
    expected, expected_heatmap = plain.classify_slices(slices)
    wrapped = _OutOfMemoryAbove(models["classifier"], limit=3)
    engine = DiagnosisEngine(wrapped, device="cpu", precision="fp32", batch_size=16)
    notes: list[str] = []
    probabilities, heatmap = engine.classify_slices(slices, notes=notes)
    assert notes[-1] == "classify: out of memory on cpu; batch size now 2"
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(heatmap, expected_heatmap, atol=1e-4)
    failing = DiagnosisEngine(_OutOfMemoryAbove(models["classifier"], limit=0), device="cpu", batch_size=4)
    with pytest.raises(JCSError, match="out of memory while running classify on a single slice"):
        failing.classify_slices(slices)


def test_single_slice_uses_threshold_zero(models: dict[str, object]) -> None:
    phantom = make_chest_phantom(shape=(10, 96, 96), seed=4)
    ct = CTVolume(image=phantom.image[:, :, 5], is_hu=True, path=Path("slice.nrrd"))
    engine = DiagnosisEngine(**models, device="cpu", precision="fp32")
    result = engine.diagnose(ct)
    assert result.threshold == 0 and result.slice_probabilities.shape == (1,)
    assert result.positive == bool(result.slice_probabilities[0] > 0.5)
    assert result.heatmap.shape == (1, 96, 96)


def test_scaled_threshold() -> None:
    assert scaled_threshold(300) == 25
    assert scaled_threshold(600) == 50
    assert scaled_threshold(150) == 12
    assert scaled_threshold(148, slice_thickness_mm=2.0) == 12
    assert scaled_threshold(60, slice_thickness_mm=5.0) == 5
    assert scaled_threshold(1) == 0
    assert scaled_threshold(5) == 1
    with pytest.raises(ValueError):
        scaled_threshold(0)


def test_device_and_precision_resolution() -> None:
    cpu = torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(JCSError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(JCSError, match="unknown device|unsupported device"):
        resolve_device("tpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_supports_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(JCSError, match="needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(JCSError, match="precision must be"):
        resolve_precision("int8", cpu)


def test_bad_engine_arguments(models: dict[str, object]) -> None:
    with pytest.raises(JCSError, match="segment policy"):
        DiagnosisEngine(**models, segment_policy="never")
    with pytest.raises(JCSError, match="threshold"):
        DiagnosisEngine(**models, threshold=-1)
    with pytest.raises(JCSError, match="batch size"):
        DiagnosisEngine(**models, batch_size=0)


def test_from_registry_without_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(weights, "BUNDLED_DIR", tmp_path / "none")
    with pytest.raises(WeightsError, match="jcs weights import-official"):
        DiagnosisEngine.from_registry()


def test_from_registry_uses_card_threshold_and_checks_kind(
    tiny_weights: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights, "BUNDLED_DIR", tmp_path / "none")  # no bundled default segmenter
    engine = DiagnosisEngine.from_registry(tiny_weights["classifier"], device="cpu")
    assert engine.threshold == 25 and engine.segmenter is None
    assert DiagnosisEngine.from_registry(tiny_weights["classifier"], threshold=7, device="cpu").threshold == 7
    with pytest.raises(WeightsError, match="not a classifier"):
        DiagnosisEngine.from_registry(tiny_weights["segmenter"], device="cpu")


def test_from_registry_refuses_feature_input_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(tmp_path))
    architecture = {**TINY_CLASSIFIER_ARCH, "feature_input": True}
    card = {"name": "features", "kind": "classifier", "architecture": architecture}
    save_weights(make_tiny_classifier(), card, tmp_path)
    with pytest.raises(WeightsError, match="first-stage features"):
        DiagnosisEngine.from_registry("features", device="cpu")


def test_segmenter_input_follows_its_card(models: dict[str, object]) -> None:
    """A card's ``input.size`` and ``input.per_image_standardize`` decide what the segmenter is fed."""
    card = models["segmenter_card"]
    card = dataclasses.replace(card, data={**card.data, "input": {"size": 64, "per_image_standardize": True}})
    engine = DiagnosisEngine(
        models["classifier"], models["segmenter"], device="cpu", precision="fp32", segmenter_card=card
    )
    assert (engine.segmenter_size, engine.segmenter_standardize) == (64, True)
    slices = np.random.default_rng(0).integers(0, 256, size=(2, 80, 72), dtype=np.uint8)
    expected_input = segmenter_input(slices, size=64)
    expected_input = (expected_input - expected_input.mean(dim=(2, 3), keepdim=True)) / (
        expected_input.std(dim=(2, 3), keepdim=True) + 1e-5
    )
    with torch.inference_mode():
        expected = torch.nn.functional.interpolate(
            models["segmenter"](expected_input)[:, :1], size=(80, 72), mode="bilinear", align_corners=False
        )[:, 0].numpy()
    np.testing.assert_allclose(engine.segment_slices(slices), expected, atol=1e-6)
    # Standardised inputs make the prediction blind to an affine grey-value change of the slices.
    brighter = (slices.astype(np.float32) * 0.5 + 60).round().astype(np.uint8)
    plain = DiagnosisEngine(models["classifier"], models["segmenter"], device="cpu", precision="fp32")
    assert not plain.segmenter_standardize
    shift_standardized = np.abs(engine.segment_slices(brighter) - engine.segment_slices(slices)).mean()
    shift_plain = np.abs(plain.segment_slices(brighter) - plain.segment_slices(slices)).mean()
    assert shift_standardized < 0.2 * shift_plain


def test_classifier_input_follows_its_card(models: dict[str, object]) -> None:
    """``input.per_image_standardize`` in the classifier's card standardises its slices per image."""
    card = models["classifier_card"]
    spec = {**card.data["input"], "per_image_standardize": True}
    card = dataclasses.replace(card, data={**card.data, "input": spec})
    engine = DiagnosisEngine(models["classifier"], device="cpu", precision="fp32", classifier_card=card)
    plain = DiagnosisEngine(models["classifier"], device="cpu", precision="fp32")
    assert engine.classifier_spec.standardize and not plain.classifier_spec.standardize
    slices = np.random.default_rng(1).integers(0, 256, size=(3, 96, 96), dtype=np.uint8)
    x = classifier_input(slices)
    standardized = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-5)
    with torch.no_grad():
        expected = torch.softmax(models["classifier"](standardized), dim=1)[:, 1].numpy()
    probabilities, _ = engine.classify_slices(slices)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    brighter = (slices.astype(np.float32) * 0.5 + 60).round().astype(np.uint8)
    shift = np.abs(engine.classify_slices(brighter)[0] - probabilities).max()
    assert shift < 0.02  # blind to an affine grey-value change, up to 8-bit rounding


def test_segmenter_test_time_flip_from_its_card(models: dict[str, object]) -> None:
    """``input.test_time_flip``: the prediction is the mean of the slice's and its mirror image's."""
    card = models["segmenter_card"]
    flip_card = dataclasses.replace(card, data={**card.data, "input": {"size": 48, "test_time_flip": True}})
    plain_card = dataclasses.replace(card, data={**card.data, "input": {"size": 48}})
    flip, plain = (
        DiagnosisEngine(models["classifier"], models["segmenter"], device="cpu", precision="fp32",
                        segmenter_card=c)
        for c in (flip_card, plain_card)
    )  # fmt: skip
    slices = np.random.default_rng(1).integers(0, 256, size=(3, 48, 48), dtype=np.uint8)
    mirrored = np.ascontiguousarray(slices[:, :, ::-1])
    expected = (plain.segment_slices(slices) + plain.segment_slices(mirrored)[:, :, ::-1]) / 2
    np.testing.assert_allclose(flip.segment_slices(slices), expected, atol=1e-6)
    assert not np.allclose(plain.segment_slices(slices), expected, atol=1e-3)


class GroundGlassBand(torch.nn.Module):
    """Stand-in segmenter that marks lung-window grey values of ground glass (about -600 to -300 HU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x[:, :1] * SEGMENTER_STD_BGR[0] + SEGMENTER_MEAN_BGR[0]  # undo segmenter_input
        return ((grey > 0.5) & (grey < 0.7)).float().repeat(1, 5, 1, 1)


def test_segmenter_rule_counts_slices_with_opacified_lung(models: dict[str, object]) -> None:
    """Segmenter rule: slices whose predicted opacification covers > 2 % of their lung, T = 25 mm."""
    lesions = [
        LesionSpec(side="right", zone="middle", radius_mm=(20.0, 12.0, 12.0)),
        LesionSpec(side="left", zone="lower", radius_mm=(15.0, 10.0, 10.0)),
    ]
    phantom = make_chest_phantom(shape=(30, 96, 96), spacing=(2.5, 2.0, 2.0), lesions=lesions, seed=5)
    ct = CTVolume(image=phantom.image, is_hu=True, path=Path("phantom.nrrd"))
    engine = DiagnosisEngine(
        models["classifier"], GroundGlassBand(), device="cpu", precision="fp32", decision="segmenter",
        threshold=None,
    )
    result = engine.diagnose(ct)
    assert result.decision == "segmenter" and result.segmented  # segmented whatever the classifier says
    assert result.lungs is not None and result.lungs.shape == phantom.lungs.shape
    fractions = slice_lung_fraction(result.lesion_mask, result.lungs)
    np.testing.assert_allclose(result.slice_lung_fraction, fractions)
    np.testing.assert_array_equal(result.slice_positive, fractions > 0.02)
    truth = slice_lung_fraction(phantom.lesion_mask, phantom.lungs)
    assert result.positive_slice_count == int((fractions > 0.02).sum())
    assert abs(result.positive_slice_count - int((truth > 0.02).sum())) <= 2
    assert result.threshold == scaled_threshold(30, 2.5) == 10
    assert result.positive_slice_count > 10 and result.positive
    assert result.classifier_positive_count == int((result.slice_probabilities > 0.5).sum())
    assert {"segment", "lungs"} <= set(result.timings_s)
    assert not any("mm apart" in note for note in result.notes)  # 2.5 mm: within what was checked

    thick = make_chest_phantom(shape=(8, 96, 96), spacing=(6.0, 2.0, 2.0), lesions=lesions, seed=5)
    thick_result = engine.diagnose(CTVolume(image=thick.image, is_hu=True, path=Path("thick.nrrd")))
    assert thick_result.decision == "segmenter" and thick_result.threshold == 4
    (caution,) = [note for note in thick_result.notes if "mm apart" in note]
    assert caution.startswith("slices are 6 mm apart") and "up to 4 mm" in caution

    clean = make_chest_phantom(shape=(30, 96, 96), spacing=(2.5, 2.0, 2.0), lesions=[], seed=5)
    negative = engine.diagnose(CTVolume(image=clean.image, is_hu=True, path=Path("clean.nrrd")))
    assert negative.decision == "segmenter" and not negative.positive
    assert negative.positive_slice_count == int((negative.slice_lung_fraction > 0.02).sum()) <= 2


def test_segmenter_rule_falls_back_without_lungs(models: dict[str, object]) -> None:
    water = np.zeros((6, 64, 64), dtype=np.int16)  # a block of water: nothing below -400 HU
    import SimpleITK as sitk

    ct = CTVolume(image=sitk.GetImageFromArray(water), is_hu=True, path=Path("water.nrrd"))
    engine = DiagnosisEngine(
        models["classifier"], GroundGlassBand(), device="cpu", precision="fp32", decision="segmenter"
    )
    result = engine.diagnose(ct)
    assert result.decision == "classifier" and result.slice_lung_fraction is None
    assert any("classifier rule" in note for note in result.notes)
    assert result.positive_slice_count == result.classifier_positive_count
    assert result.threshold == 25  # the threshold given (the constructor's default)

    # Without a given T the fallback takes the classifier's own T (its card's), as --decision
    # classifier would, not the segmenter rule's T scaled to the scan.
    card = weights.WeightsCard(
        "tiny-t3", "classifier", {}, "", Path("tiny.safetensors"), Path("tiny.json"), False, {"threshold": 3}
    )
    scaled = DiagnosisEngine(
        models["classifier"], GroundGlassBand(), device="cpu", precision="fp32", decision="segmenter",
        threshold=None, classifier_card=card,
    )
    fallback = scaled.diagnose(ct)
    assert (fallback.decision, fallback.threshold) == ("classifier", 3)
    assert fallback.positive == (fallback.classifier_positive_count > 3)


def test_segmenter_reading_by_hand() -> None:
    """Two lung pixels of ten covered is 20 %; the counted slices and the decision follow the rule."""
    lungs = np.zeros((3, 2, 5), dtype=np.uint8)
    lungs[:2] = 1
    lungs[0, 1] = 2  # left lung labels count as lung too
    lesion = np.zeros_like(lungs)
    lesion[0, 0, :2] = 1  # 2 of 10 lung pixels: 0.2
    lesion[1, 0, 0] = 1  # 1 of 10: 0.1
    lesion[2] = 1  # no lung on this slice: 0
    reading = segmenter_reading(lesion, lungs, threshold=1, min_lung_fraction=0.15)
    np.testing.assert_allclose(reading.slice_lung_fraction, [0.2, 0.1, 0.0])
    assert (reading.positive_slice_count, reading.positive) == (1, False)  # 1 slice, not more than T = 1
    assert segmenter_reading(lesion, lungs, threshold=0, min_lung_fraction=0.05).positive_slice_count == 2



def test_single_slice_leaves_out_opacity_larger_than_half_its_lung() -> None:
    """On one 2-D slice a component bigger than half the lung (a liver dome under a thin lung) is not a
    lesion; the same mask as one slice of a volume is counted as before, and a small lesion still is."""
    lungs = np.zeros((1, 20, 20), dtype=np.uint8)
    lungs[0, :4, :10] = 1  # 40 lung pixels
    lesion = np.zeros_like(lungs)
    lesion[0, 2:20, 0:10] = 1  # 180 pixels, 20 of them in the lung
    lesion[0, 0, 15:18] = 1  # a separate 3-pixel spot outside the lung
    assert oversized_components(lesion[0] > 0, 40).sum() == 180
    assert segmenter_reading(lesion, lungs, threshold=0).slice_lung_fraction[0] == 0.0
    volume = np.concatenate([lesion, lesion])
    np.testing.assert_allclose(slice_lung_fraction(volume, np.concatenate([lungs, lungs])), [0.5, 0.5])
    small = np.zeros_like(lungs)
    small[0, 1:3, 2:6] = 1  # 8 of 40 lung pixels, a fifth of the lung
    reading = segmenter_reading(small, lungs, threshold=0)
    assert reading.slice_lung_fraction[0] == 0.2 and reading.positive


def test_decision_rule_from_the_classifier_card(
    tiny_weights: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A classifier whose card says it should not decide defers to the segmenter rule under "auto"."""
    registry = weights.user_dir()  # JCS_WEIGHTS_DIR: this test's copy of the tiny registry
    monkeypatch.setattr(weights, "BUNDLED_DIR", registry / "none")
    classifier, card = load_model(tiny_weights["classifier"])
    block = {"rule": "segmenter", "min_lung_fraction": 0.05}
    deferring = {**card.data, "name": "tiny-deferring", "decision": block, "threshold": 3}
    save_weights(classifier, deferring, registry)
    segmenter = tiny_weights["segmenter"]
    auto = DiagnosisEngine.from_registry("tiny-deferring", segmenter, device="cpu")
    assert (auto.decision, auto.min_lung_fraction, auto.threshold) == ("segmenter", 0.05, None)
    fixed = DiagnosisEngine.from_registry("tiny-deferring", segmenter, device="cpu", threshold=4)
    assert (fixed.decision, fixed.threshold) == ("segmenter", 4)
    paper = DiagnosisEngine.from_registry("tiny-deferring", segmenter, device="cpu", decision="classifier")
    assert (paper.decision, paper.threshold) == ("classifier", 3)  # the card's T for its own rule
    alone = DiagnosisEngine.from_registry("tiny-deferring", device="cpu")  # no segmenter to defer to
    assert (alone.decision, alone.segmenter, alone.threshold) == ("classifier", None, 3)
    plain = DiagnosisEngine.from_registry(tiny_weights["classifier"], segmenter, device="cpu")
    assert plain.decision == "classifier"
    with pytest.raises(JCSError, match="needs segmenter weights"):
        DiagnosisEngine(classifier, decision="segmenter")
    with pytest.raises(JCSError, match="decision rule must be one of"):
        DiagnosisEngine(classifier, decision="vote")
