"""Grad-CAM (paper eq. (1)-(2)) against captum's LayerGradCam, and its mapping back onto slices."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam
from jcs.gradcam import cam_to_slices, grad_cam, weight_by_probability
from jcs.preprocess import classifier_crop_box
from tiny_weights import make_tiny_classifier


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    return make_tiny_classifier()


def test_matches_captum_layer_gradcam(classifier: torch.nn.Module) -> None:
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    logits, cam = grad_cam(classifier, x, target_class=1)
    with torch.no_grad():
        torch.testing.assert_close(logits, classifier(x))
    reference = LayerGradCam(classifier, classifier.layer4).attribute(x, target=1, relu_attributions=True)
    assert cam.shape == (3, 7, 7)
    assert cam.max() > 0
    torch.testing.assert_close(cam, reference[:, 0].detach(), rtol=1e-4, atol=1e-5)
    # the model's parameters keep their requires_grad flags and no gradient is accumulated
    assert all(p.grad is None for p in classifier.parameters())


def test_other_class_and_bf16_autocast(classifier: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    _, cam0 = grad_cam(classifier, x, target_class=0)
    reference = LayerGradCam(classifier, classifier.layer4).attribute(x, target=0, relu_attributions=True)
    torch.testing.assert_close(cam0, reference[:, 0].detach(), rtol=1e-4, atol=1e-5)
    _, cam32 = grad_cam(classifier, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, cam16 = grad_cam(classifier, x)
    assert cam16.dtype == torch.float32
    similarity = torch.nn.functional.cosine_similarity(cam16.flatten(1), cam32.flatten(1))
    assert bool((similarity > 0.98).all())


def test_refuses_inference_mode(classifier: torch.nn.Module) -> None:
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        grad_cam(classifier, torch.zeros(1, 3, 224, 224))


@pytest.mark.parametrize(("height", "width"), [(512, 512), (300, 420), (96, 96)])
def test_cam_to_slices_geometry(height: int, width: int) -> None:
    cam = torch.zeros(2, 7, 7)
    cam[0, 3, 3] = 2.0
    cam[0, 0, 0] = 1.0
    out = cam_to_slices(cam, height, width)
    assert out.shape == (2, height, width) and out.dtype == np.float32
    assert out[0].max() == pytest.approx(1.0) and out.min() >= 0.0
    assert not out[1].any()  # no positive evidence stays zero
    y0, x0, y1, x1 = (int(round(v)) for v in classifier_crop_box(height, width))
    inside = np.zeros((height, width), dtype=bool)
    inside[y0:y1, x0:x1] = True
    assert not out[0][~inside].any()
    peak = np.unravel_index(np.argmax(out[0]), out[0].shape)
    centre = ((y0 + y1) / 2, (x0 + x1) / 2)
    assert abs(peak[0] - centre[0]) <= (y1 - y0) / 7 and abs(peak[1] - centre[1]) <= (x1 - x0) / 7


def test_log_odds_score_matches_captum_on_the_log_odds(classifier: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    _, cam = grad_cam(classifier, x, target_class=1, score="log-odds")

    def log_odds(inputs: torch.Tensor) -> torch.Tensor:
        logits = classifier(inputs)
        return (logits[:, 1] - logits[:, 0])[:, None]

    reference = LayerGradCam(log_odds, classifier.layer4).attribute(x, target=0, relu_attributions=True)
    torch.testing.assert_close(cam, reference[:, 0].detach(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="log-odds"):
        grad_cam(classifier, x, score="probability")


def test_log_odds_explains_a_model_whose_covid_logit_is_negative_everywhere(
    classifier: torch.nn.Module,
) -> None:
    # layer4 ends in a ReLU (A >= 0). With an all-negative class-1 row the bare class-1 logit is < 0 on
    # every pixel, so eq. (2) on it is empty; class 0 is made lower still, so class 1 wins (p > 0.5)
    # and the log-odds map shows where its evidence is.
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    shifted = copy.deepcopy(classifier)
    with torch.no_grad():
        weight = shifted.fc.weight
        weight[1] = -weight[1].abs() - 1e-3
        weight[0] = weight[1] - weight[0].abs() - 1e-3
    logits, cam_logit = grad_cam(shifted, x, score="logit")
    _, cam_log_odds = grad_cam(shifted, x, score="log-odds")
    assert bool((logits[:, 1] < 0).all()) and bool((logits[:, 1] > logits[:, 0]).all())
    assert not cam_logit.any()
    assert bool((cam_log_odds.amax(dim=(1, 2)) > 0).any())


def test_weight_by_probability_keeps_the_pattern_and_sets_the_peak() -> None:
    heat = np.zeros((3, 4, 4), dtype=np.float32)
    heat[0, 1, 2], heat[0, 0, 0] = 1.0, 0.5
    heat[1, 3, 3] = 1.0  # the third slice has no positive evidence
    weighted = weight_by_probability(heat, np.array([0.9, 0.03, 0.7]))
    assert weighted[0, 1, 2] == pytest.approx(0.9) and weighted[0, 0, 0] == pytest.approx(0.45)
    assert weighted[1].max() == pytest.approx(0.03) and not weighted[2].any()
    assert (weighted[0] > 0).sum() == 2  # where the heat lies does not change
    with pytest.raises(ValueError, match="2 probabilities for 3 heatmaps"):
        weight_by_probability(heat, np.array([0.5, 0.5]))
