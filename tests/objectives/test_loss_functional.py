"""Hand-worked checks of the pure PPO math in ppokit.objectives.functional."""

import math

import pytest
import torch
from torch.testing import assert_close

from ppokit.objectives import diagnostics as PD
from ppokit.objectives import functional as PF


def test_clipped_surrogate_hand_worked():
    eps = 0.2
    # log r, A -> expected loss = -min(r A, clip(r) A)
    cases = [
        # r = e^0 = 1: both terms 1 * 3 = 3 -> -3
        (0.0, 3.0, -3.0),
        # r = e^0.5 = 1.6487, A = 2 > 0: clip at 1.2 -> min(3.2974, 2.4) = 2.4 -> -2.4
        (0.5, 2.0, -2.4),
        # r = 1.6487, A = -2 < 0: min(-3.2974, -2.4) = -3.2974 (no clipping benefit) -> 3.2974
        (0.5, -2.0, 2.0 * math.exp(0.5)),
        # r = e^-1 = 0.3679, A = 1: min(0.3679, 0.8) = 0.3679 -> -0.3679
        (-1.0, 1.0, -math.exp(-1.0)),
        # r = 0.3679, A = -1: min(-0.3679, -0.8) = -0.8 -> 0.8
        (-1.0, -1.0, 0.8),
    ]
    lw = torch.tensor([[c[0]] for c in cases])
    adv = torch.tensor([[c[1]] for c in cases])
    expected = torch.tensor([[c[2]] for c in cases])
    assert_close(PF.clipped_surrogate(lw, adv, eps), expected)


def test_clipped_surrogate_gradient_vanishes_when_clipped():
    # A > 0 and r above 1 + eps: the clipped branch is active, so no gradient flows.
    lw = torch.tensor([[0.5], [0.05]], requires_grad=True)
    PF.clipped_surrogate(lw, torch.ones(2, 1), 0.2).sum().backward()
    assert lw.grad[0, 0] == 0.0
    # inside the trust region: d(-r A)/d log r = -r A = -e^0.05
    assert_close(lw.grad[1, 0], torch.tensor(-math.exp(0.05)))


def test_clip_fraction_counts_both_sides():
    lw = torch.tensor([[math.log(1.3)], [math.log(0.7)], [0.0], [math.log(1.1)]])
    assert_close(PF.clip_fraction(lw, 0.2), torch.tensor(0.5))
    mask = torch.tensor([[True], [False], [True], [True]])
    assert_close(PF.clip_fraction(lw, 0.2, mask), torch.tensor(1 / 3))


@pytest.mark.parametrize(
    "loss_type, expected",
    [
        # diffs: 0.5 and 3
        ("l1", [0.5, 3.0]),
        ("l2", [0.25, 9.0]),
        # Huber(delta=1): 0.5 d^2 for |d| < 1, |d| - 0.5 otherwise
        ("smooth_l1", [0.125, 2.5]),
    ],
)
def test_value_distance(loss_type, expected):
    target = torch.tensor([[1.0], [4.0]])
    value = torch.tensor([[1.5], [1.0]])
    assert_close(PF.value_distance(target, value, loss_type), torch.tensor(expected)[:, None])


def test_value_distance_rejects_unknown_type():
    with pytest.raises(ValueError, match="loss_critic_type must be one of"):
        PF.value_distance(torch.zeros(1, 1), torch.zeros(1, 1), "huber")


def test_clipped_value_loss_takes_worse_of_two():
    target = torch.tensor([[3.0], [0.0], [1.0]])
    value = torch.tensor([[2.0], [2.0], [1.1]])
    old = torch.tensor([[1.0], [1.0], [1.0]])
    loss, clipped = PF.clipped_value_loss(target, value, old, 0.5, "l2")
    # row 0: plain (3-2)^2 = 1; clipped V = 1.5 -> (3-1.5)^2 = 2.25; max = 2.25
    # row 1: plain (0-2)^2 = 4; clipped V = 1.5 -> 2.25; max = 4
    # row 2: |1.1 - 1| < 0.5 -> unclipped, both (1-1.1)^2 = 0.01
    assert_close(loss, torch.tensor([[2.25], [4.0], [0.01]]))
    assert clipped.squeeze(-1).tolist() == [True, True, False]


def test_standardize_matches_unbiased_formula_and_mask():
    x = torch.tensor([2.0, 4.0, 9.0, 100.0])
    # unbiased std of [2, 4, 9]: mean 5, squares 9 + 1 + 16 = 26, /2 = 13
    mask = torch.tensor([True, True, True, False])
    expected = torch.tensor([-3.0, -1.0, 4.0, 0.0]) / math.sqrt(13.0)
    assert_close(PF.standardize(x, mask), expected)
    assert_close(PF.standardize(x[:3]), expected[:3])
    # constant input: std 0 is clamped, no NaN
    assert torch.isfinite(PF.standardize(torch.ones(5))).all()


def test_explained_variance_hand_worked():
    target = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    pred = torch.tensor([[1.0], [2.0], [3.0], [2.0]])
    # residual [0, 0, 0, 2]: biased var = mean 0.5, E[r^2] = 1 -> 1 - 0.25 = 0.75
    # target biased var = 1.25 -> EV = 1 - 0.75 / 1.25 = 0.4
    assert_close(PD.explained_variance(target, pred), torch.tensor(0.4), atol=1e-6, rtol=0)
    mask = torch.tensor([[True], [True], [True], [False]])
    assert_close(PD.explained_variance(target, pred, mask), torch.tensor(1.0))


def test_effective_sample_size():
    # weights 1, 1, 2: (sum w)^2 / sum w^2 = 16 / 6, normalised by 3 -> 8/9
    lw = torch.log(torch.tensor([[1.0], [1.0], [2.0]]))
    assert_close(PD.effective_sample_size(lw), torch.tensor(8 / 9))
    mask = torch.tensor([[True], [True], [False]])
    assert_close(PD.effective_sample_size(lw, mask), torch.tensor(1.0))


def test_reduce_loss_modes_and_mask_ignore_nan():
    loss = torch.tensor([[1.0], [2.0], [float("nan")]])
    mask = torch.tensor([[True], [True], [False]])
    assert_close(PF.reduce_loss(loss, "mean", mask), torch.tensor(1.5))
    assert_close(PF.reduce_loss(loss, "sum", mask), torch.tensor(3.0))
    assert_close(PF.reduce_loss(loss, "none", mask), torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        PF.reduce_loss(loss, "max")
