"""Training losses (eqs. 3, 4, 6) and learning-rate schedules against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training import losses, schedules


def test_mixing_of_images_labels_and_masks_eq3() -> None:
    x = torch.tensor([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]])
    perm = torch.tensor([2, 0, 1])
    mixed = losses.mix(x, 0.25, perm)
    assert torch.allclose(mixed[0], torch.tensor([0.25 * 1 + 0.75 * 100, 0.25 * 2 + 0.75 * 200]))
    labels = losses.mix(torch.tensor([1.0, 0.0, 0.0]), 0.25, perm)
    assert torch.allclose(labels, torch.tensor([0.25, 0.75, 0.0]))


def test_mixing_lambda_is_beta_half_half() -> None:
    rng = np.random.default_rng(0)
    lam = np.array([losses.sample_mixing_lambda(rng, 0.5) for _ in range(4000)])
    assert abs(lam.mean() - 0.5) < 0.02
    assert abs(lam.var() - 0.125) < 0.01  # Beta(½,½): variance αβ/((α+β)²(α+β+1)) = 1/8
    assert ((lam < 0.1) | (lam > 0.9)).mean() > 0.35  # U-shaped: mass at the ends


def test_soft_cross_entropy_hand_value() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p(COVID) = 0.75
    loss = losses.soft_cross_entropy(logits, torch.tensor([0.6]))
    assert loss.item() == pytest.approx(-(0.6 * math.log(0.75) + 0.4 * math.log(0.25)), rel=1e-6)


def test_attention_loss_eq4_hand_value() -> None:
    cam = torch.tensor([[[1.0, 3.0], [0.0, -1.0]]])  # ReLU → [[1,3],[0,0]] → min-max → [[1/3,1],[0,0]]
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2, 2:] = 1.0  # pooled to 2×2: [[0,1],[0,0]]
    loss = losses.attention_loss(cam, mask, torch.tensor([True]))
    assert loss.item() == pytest.approx((1 / 3) ** 2 / 4, rel=1e-5)


def test_attention_loss_skips_unknown_and_empty_masks() -> None:
    cam = torch.randn(3, 2, 2, requires_grad=True)
    mask = torch.zeros(3, 1, 4, 4)
    mask[0, 0, 0, 0] = 1.0
    only_first = losses.attention_loss(cam[:1], mask[:1], torch.tensor([True]))
    both = losses.attention_loss(cam, mask, torch.tensor([True, False, True]))  # 2nd unknown, 3rd empty
    assert both.item() == pytest.approx(only_first.item())
    none = losses.attention_loss(cam, mask, torch.tensor([False, True, True]))
    assert none.item() == 0.0
    none.backward()  # still part of the graph
    assert cam.grad is not None


def test_class_activation_map_uses_covid_row() -> None:
    features = torch.arange(8.0).reshape(1, 2, 2, 2)
    weight = torch.tensor([[9.0, 9.0], [1.0, -1.0]])
    cam = losses.class_activation_map(features, weight)
    assert torch.equal(cam, features[0, 0:1] - features[0, 1:2])


def test_dice_loss_hand_value() -> None:
    prob = torch.tensor([[1.0, 0.5, 0.0, 0.0]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert losses.dice_loss(prob, target).item() == pytest.approx(1 - (2 * 1.5 + 1) / (3.5 + 1), rel=1e-6)


def test_deep_supervision_bce_dice_eq6_all_side_outputs() -> None:
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    logits = torch.zeros(1, 5, 2, 2)  # every side output p = 0.5
    total, parts = losses.deep_supervision_loss(logits, target)
    per_side = math.log(2.0) + (1 - (2 * 0.5 + 1) / (2.0 + 1 + 1))
    assert parts == pytest.approx([per_side] * 5, rel=1e-6)
    assert total.item() == pytest.approx(5 * per_side, rel=1e-6)


def test_deep_supervision_upsamples_side_outputs_to_label_size() -> None:
    target = torch.ones(1, 1, 8, 8)
    total, parts = losses.deep_supervision_loss(torch.full((1, 1, 2, 2), 20.0), target)
    assert len(parts) == 1 and total.item() < 1e-6


def test_step_schedule_divides_by_ten_every_30_epochs() -> None:
    assert schedules.step_lr(0.1, 0) == pytest.approx(0.1)
    assert schedules.step_lr(0.1, 29.99) == pytest.approx(0.1)
    assert schedules.step_lr(0.1, 30) == pytest.approx(0.01)
    assert schedules.step_lr(0.1, 95) == pytest.approx(1e-4)


def test_poly_schedule_power_09() -> None:
    assert schedules.poly_lr(2.5e-5, 0, 21000) == pytest.approx(2.5e-5)
    assert schedules.poly_lr(2.5e-5, 10500, 21000) == pytest.approx(2.5e-5 * 0.5**0.9)
    assert schedules.poly_lr(2.5e-5, 21000, 21000) == 0.0


def test_warmup_is_linear_then_off() -> None:
    assert schedules.warmup(1.0, 0, 4) == pytest.approx(0.25)
    assert schedules.warmup(1.0, 3, 4) == pytest.approx(1.0)
    assert schedules.warmup(0.5, 10, 4) == 0.5
    assert schedules.warmup(0.5, 0, 0) == 0.5


def test_log_odds_attention_keeps_a_gradient_where_the_covid_map_is_negative() -> None:
    features = torch.rand(1, 2, 4, 4, requires_grad=True)
    weight = torch.tensor([[1.0, 1.0], [-1.0, -2.0]])  # the COVID-19 map is negative on every pixel
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2, :2] = 1.0
    covid_map = losses.class_activation_map(features, weight)
    losses.attention_loss(covid_map, mask, torch.tensor([True])).backward()
    assert features.grad is None or float(features.grad.abs().sum()) == 0.0  # eq. (4) teaches nothing
    cam = losses.log_odds_activation_map(features, weight)
    assert torch.allclose(cam, -2 * features[:, 0] - 3 * features[:, 1])
    loss = losses.attention_loss(cam, mask, torch.tensor([True]), rectify=False)
    loss.backward()
    assert float(features.grad.abs().sum()) > 0


def test_balanced_attention_loss_weighs_lesion_and_free_cells_equally() -> None:
    # One lesion cell of 16: the plain eq. (4) mean is small for a map that is low everywhere, the
    # balanced one charges half of its loss to the missed lesion.
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 1, 2] = 1.0
    flat_low = torch.zeros(1, 4, 4)
    flat_low[0, 3, 3] = 1.0  # min-max: peak 1 on a lesion-free cell, 0 elsewhere
    valid = torch.tensor([True])
    plain = losses.attention_loss(flat_low, mask, valid, rectify=False)
    balanced = losses.attention_loss(flat_low, mask, valid, rectify=False, balanced=True)
    assert plain.item() == pytest.approx(2 / 16)
    assert balanced.item() == pytest.approx(0.5 * 1.0 + 0.5 * 1 / 15)
    on_lesion = torch.zeros(1, 4, 4)
    on_lesion[0, 1, 2] = 1.0
    assert losses.attention_loss(on_lesion, mask, valid, rectify=False, balanced=True).item() < 1e-9


def test_balanced_attention_loss_counts_known_lesion_free_maps() -> None:
    cam = torch.rand(2, 4, 4, requires_grad=True)
    empty = torch.zeros(2, 1, 8, 8)
    loss = losses.attention_loss(cam, empty, torch.tensor([True, False]), rectify=False, balanced=True)
    expected = (losses.normalize_map(cam[:1].detach(), rectify=False) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert cam.grad is not None and cam.grad[0].abs().sum() > 0 and cam.grad[1].abs().sum() == 0
