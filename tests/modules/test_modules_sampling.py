"""The pure draw/log-prob functions against ``torch.distributions`` (same seed, same numbers)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from ppokit.modules.distributions import (
    Categorical,
    IndependentNormal,
    OneHotCategorical,
    TanhNormal,
    categorical_log_prob,
    categorical_sample,
    categorical_sample_and_log_prob,
    normal_log_prob,
    normal_rsample,
    normal_sample_and_log_prob,
)


def _seeded(seed, fn):
    torch.manual_seed(seed)
    return fn()


# --------------------------------------------------------------------------- Gaussian


@pytest.mark.parametrize("sample_shape", [(), (3,), (2, 4)])
def test_normal_rsample_is_torch_normal_rsample(sample_shape):
    loc, scale = torch.randn(5, 2), torch.rand(5, 2) + 0.1
    mine = _seeded(1, lambda: normal_rsample(loc, scale, sample_shape))
    ref = _seeded(1, lambda: D.Normal(loc, scale).rsample(torch.Size(sample_shape)))
    assert mine.shape == (*sample_shape, 5, 2)
    assert torch.equal(mine, ref)


def test_normal_rsample_with_given_noise_by_hand_and_its_gradient():
    # loc + noise * scale = [1 + 0.5 * 2, -1 + (-1) * 3] = [2, -4]; d/dloc = 1, d/dscale = noise
    loc = torch.tensor([1.0, -1.0], requires_grad=True)
    scale = torch.tensor([2.0, 3.0], requires_grad=True)
    noise = torch.tensor([0.5, -1.0])
    out = normal_rsample(loc, scale, noise=noise)
    assert torch.equal(out, torch.tensor([2.0, -4.0]))
    out.sum().backward()
    assert torch.equal(loc.grad, torch.ones(2)) and torch.equal(scale.grad, noise)


@pytest.mark.parametrize("event_dims", [0, 1, 2])
def test_normal_log_prob_is_torch_independent_normal_log_prob(event_dims):
    loc, scale = torch.randn(4, 3, 2), torch.rand(4, 3, 2) + 0.1
    value = torch.randn(5, 4, 3, 2)  # one sample dim
    ref = D.Independent(D.Normal(loc, scale), event_dims).log_prob(value)
    mine = normal_log_prob(value, loc, scale, event_dims)
    assert mine.shape == ref.shape == (5, 4, 3, 2)[: 4 - event_dims]
    assert torch.equal(mine, ref)


def test_normal_log_prob_by_hand():
    # N(1.5; 1, 0.5): -(0.5)^2 / (2 * 0.25) - log 0.5 - log sqrt(2 pi) = -0.5 + 0.6931 - 0.9189
    expected = -0.5 - math.log(0.5) - 0.5 * math.log(2 * math.pi)
    got = normal_log_prob(torch.tensor([1.5]), torch.tensor([1.0]), torch.tensor([0.5]), 1)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_normal_sample_and_log_prob_is_the_class_rsample_and_log_prob():
    loc, scale = torch.randn(6, 3), torch.rand(6, 3) + 0.1
    action, log_prob = _seeded(2, lambda: normal_sample_and_log_prob(loc, scale, 1))
    ref_dist = D.Independent(D.Normal(loc, scale), 1)
    ref_action = _seeded(2, ref_dist.rsample)
    assert torch.equal(action, ref_action)
    assert torch.equal(log_prob, ref_dist.log_prob(ref_action))
    # ppokit's class: same draw (it calls normal_rsample), same log-prob, sample == rsample
    mine = IndependentNormal(loc, scale)
    assert torch.equal(_seeded(2, mine.rsample), ref_action)
    assert torch.equal(_seeded(2, mine.sample), ref_action)
    assert torch.equal(mine.log_prob(ref_action), log_prob)


def test_a_non_positive_scale_shows_as_a_non_finite_log_prob():
    # the unchecked acting step leaves the check to its caller: it must see a NaN/inf
    _, lp = normal_sample_and_log_prob(torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), 1)
    assert not torch.isfinite(lp).all()
    _, lp = normal_sample_and_log_prob(torch.zeros(1, 2), torch.zeros(1, 2), 1)
    assert not torch.isfinite(lp).all()


def test_tanh_normal_draws_with_the_shared_gaussian_draw():
    loc, scale = torch.randn(4, 2), torch.rand(4, 2) + 0.1
    d = TanhNormal(loc, scale, low=-2.0, high=2.0)
    pre = _seeded(3, lambda: D.Normal(loc, scale).rsample())
    # a = mid + half * tanh(x) = 2 tanh(x) (mid 0, half 2), clamped inside (-2, 2)
    torch.testing.assert_close(_seeded(3, d.rsample), 2 * torch.tanh(pre), rtol=0, atol=1e-6)
    action, lp = _seeded(3, d.sample_and_log_prob)
    torch.testing.assert_close(action, 2 * torch.tanh(pre), rtol=0, atol=1e-6)
    torch.testing.assert_close(lp, d.log_prob(action), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- categorical


@pytest.mark.parametrize("sample_shape", [(), (7,), (2, 3)])
def test_categorical_sample_is_torch_categorical_sample(sample_shape):
    probs = torch.softmax(torch.randn(4, 5), -1)
    mine = _seeded(4, lambda: categorical_sample(probs, sample_shape))
    ref = _seeded(4, lambda: D.Categorical(probs=probs).sample(torch.Size(sample_shape)))
    assert mine.dtype == torch.int64 and mine.shape == (*sample_shape, 4)
    assert torch.equal(mine, ref)


def test_categorical_log_prob_is_torch_categorical_log_prob():
    logits = torch.randn(4, 5)
    ref_dist = D.Categorical(logits=logits)
    for value in (torch.randint(0, 5, (4,)), torch.randint(0, 5, (3, 4))):
        assert torch.equal(categorical_log_prob(ref_dist.logits, value), ref_dist.log_prob(value))
    # a scalar action against an unbatched distribution
    single = D.Categorical(logits=logits[0])
    assert torch.equal(
        categorical_log_prob(single.logits, torch.tensor(2)), single.log_prob(torch.tensor(2))
    )


def test_categorical_log_prob_by_hand():
    # p = [0.25, 0.75]: log 0.75 = -0.2877, log 0.25 = -1.3863
    got = categorical_log_prob(torch.tensor([0.25, 0.75]).log(), torch.tensor([1, 0]))
    torch.testing.assert_close(got, torch.tensor([math.log(0.75), math.log(0.25)]))


def test_categorical_sample_and_log_prob_is_the_class_sample_and_log_prob():
    logits = torch.randn(6, 3) * 2
    index, log_prob = _seeded(5, lambda: categorical_sample_and_log_prob(logits))
    ref_dist = D.Categorical(logits=logits)
    ref_index = _seeded(5, ref_dist.sample)
    assert torch.equal(index, ref_index)
    assert torch.equal(log_prob, ref_dist.log_prob(ref_index))
    mine = Categorical(logits=logits)
    assert torch.equal(_seeded(5, mine.sample), ref_index)
    assert torch.equal(mine.log_prob(ref_index), log_prob)


def test_categorical_sample_and_log_prob_bad_logits_raise_the_class_error():
    with pytest.raises(ValueError, match="logits contain NaN"):
        categorical_sample_and_log_prob(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"floating-point tensor of shape \[\*B, num_actions\]"):
        categorical_sample_and_log_prob(torch.tensor([[0, 1]]))


def test_one_hot_categorical_samples_like_torch():
    logits = torch.randn(4, 3)
    mine = _seeded(6, lambda: OneHotCategorical(logits=logits).sample((2,)))
    ref = _seeded(6, lambda: D.OneHotCategorical(logits=logits).sample((2,)))
    assert mine.dtype == torch.int64 and torch.equal(mine, ref.long())
    assert OneHotCategorical(logits=logits).num_actions == 3
