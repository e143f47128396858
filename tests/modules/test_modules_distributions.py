"""Distributions: numbers against hand-written references, numerics at the bounds, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from ppokit.modules.distributions import (
    Categorical,
    IndependentNormal,
    NormalParamExtractor,
    OneHotCategorical,
    TanhNormal,
    biased_softplus,
)

# --------------------------------------------------------------------------- NormalParamExtractor


def test_param_extractor_default_mapping_by_hand():
    # biased softplus with f(0) = 1: softplus(x + b) + 0.01 with softplus(b) = 0.99,
    # i.e. b = log(exp(0.99) - 1) = log(1.6912) = 0.52547
    b = math.log(math.exp(0.99) - 1.0)
    raw = [0.0, 2.0, -30.0]
    loc, scale = NormalParamExtractor()(torch.tensor([[1.0, -2.0, 3.0, *raw]]))
    expected = [max(math.log1p(math.exp(r + b)) + 0.01, 1e-4) for r in raw]
    torch.testing.assert_close(loc, torch.tensor([[1.0, -2.0, 3.0]]))
    torch.testing.assert_close(scale, torch.tensor([expected]))
    assert abs(expected[0] - 1.0) < 1e-12  # an input of 0 maps to scale 1


def test_param_extractor_exp_is_clamped_at_scale_lb():
    _, scale = NormalParamExtractor("exp", scale_lb=1e-3)(torch.tensor([0.0, 1.0, -30.0, 0.5]))
    # exp(-30) = 9.4e-14 is below the lower bound 1e-3
    torch.testing.assert_close(scale, torch.tensor([1e-3, math.exp(0.5)]))


@pytest.mark.parametrize(
    "mapping",
    ["biased_softplus_1.0", "exp", "softplus", "biased_softplus_0.5", "biased_softplus_2.0_0.1"],
)
def test_param_extractor_matches_tensordict(mapping):
    from tensordict.nn import NormalParamExtractor as TDNormalParamExtractor

    x = torch.randn(6, 8) * 3
    for mine, theirs in zip(NormalParamExtractor(mapping)(x), TDNormalParamExtractor(mapping)(x)):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)


def test_biased_softplus_with_min_val():
    torch.testing.assert_close(
        biased_softplus(torch.zeros(1), bias=2.0, min_val=0.1), torch.tensor([2.0])
    )


def test_param_extractor_bad_inputs():
    with pytest.raises(ValueError, match=r"last dim must be even .* got shape \[2, 3\]"):
        NormalParamExtractor()(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"unknown scale_mapping 'relu6'"):
        NormalParamExtractor("relu6")
    with pytest.raises(ValueError, match=r"unknown scale_mapping 'biased_softplus_x'"):
        NormalParamExtractor("biased_softplus_x")
    with pytest.raises(ValueError, match=r"scale_lb must be a finite number >= 0"):
        NormalParamExtractor(scale_lb=-1.0)


# --------------------------------------------------------------------------- IndependentNormal


def _normal_logpdf(x: float, mu: float, sigma: float) -> float:
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def test_independent_normal_log_prob_and_entropy_by_hand():
    loc = torch.tensor([[0.0, 1.0], [-1.0, 2.0]])
    scale = torch.tensor([[1.0, 0.5], [2.0, 0.1]])
    action = torch.tensor([[0.3, 0.9], [1.0, 2.05]])
    dist = IndependentNormal(loc, scale)
    expected_lp = [
        sum(
            _normal_logpdf(action[i, j].item(), loc[i, j].item(), scale[i, j].item())
            for j in range(2)
        )
        for i in range(2)
    ]
    # entropy of N(mu, s^2) is 0.5 * log(2 pi e s^2), summed over the event dim
    expected_h = [
        sum(0.5 * math.log(2 * math.pi * math.e * scale[i, j].item() ** 2) for j in range(2))
        for i in range(2)
    ]
    torch.testing.assert_close(dist.log_prob(action), torch.tensor(expected_lp))
    torch.testing.assert_close(dist.entropy(), torch.tensor(expected_h))
    assert torch.equal(dist.deterministic_sample, loc) and torch.equal(dist.mode, loc)
    assert dist.batch_shape == (2,) and dist.event_shape == (2,)


def test_independent_normal_scale_as_float_and_event_dims_zero():
    dist = IndependentNormal(torch.zeros(3), 2.0, event_dims=0)
    torch.testing.assert_close(
        dist.log_prob(torch.tensor([0.0, 1.0, 2.0])),
        torch.tensor([_normal_logpdf(v, 0.0, 2.0) for v in (0.0, 1.0, 2.0)]),
    )


@pytest.mark.parametrize("cls", [IndependentNormal, TanhNormal])
def test_normal_bad_parameters(cls):
    with pytest.raises(ValueError, match=r"loc has 1 NaN/Inf entries"):
        cls(torch.tensor([0.0, float("nan")]), torch.ones(2))
    with pytest.raises(ValueError, match=r"scale must be finite and > 0.*\[0\.0\]"):
        cls(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"scale must be finite and > 0.*-1\.0"):
        cls(torch.zeros(2), torch.tensor([-1.0, 1.0]))
    with pytest.raises(
        ValueError, match=r"scale of shape \[2\] does not broadcast to loc's shape \[4, 3\]"
    ):
        cls(torch.zeros(4, 3), torch.ones(2))
    with pytest.raises(ValueError, match=r"event_dims must be in \[0, loc.ndim=1\], got 2"):
        cls(torch.zeros(3), torch.ones(3), event_dims=2)
    with pytest.raises(
        ValueError, match=r"expected an action of shape \[\*sample, 4, 3\].*got \[4, 1\]"
    ):
        cls(torch.zeros(4, 3), torch.ones(4, 3)).log_prob(torch.zeros(4, 1))


# --------------------------------------------------------------------------- TanhNormal


def _tanh_normal_logpdf_reference(action, loc, scale, low, high) -> list[float]:
    """Change of variables written out per element in float64 python math.

    a = mid + half * tanh(x)  =>  log p(a) = sum_j [log N(x_j) - log(1 - u_j^2) - log(half_j)],
    u = (a - mid) / half, x = atanh(u).
    """
    out = []
    for i in range(len(action)):
        total = 0.0
        for j in range(len(action[i])):
            mid, half = (high[j] + low[j]) / 2, (high[j] - low[j]) / 2
            u = (action[i][j] - mid) / half
            x = math.atanh(u)
            total += (
                _normal_logpdf(x, loc[i][j], scale[i][j]) - math.log(1 - u * u) - math.log(half)
            )
        out.append(total)
    return out


@pytest.mark.parametrize(
    ("low", "high"), [([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]), ([-2.0, 0.0, -0.5], [2.0, 3.0, 0.5])]
)
def test_tanh_normal_log_prob_change_of_variables(low, high):
    loc = [[0.1, -0.5, 1.0], [2.0, 0.0, -1.5]]
    scale = [[0.5, 1.0, 0.3], [1.5, 0.2, 0.8]]
    # actions strictly inside the bounds, at fractions of the range
    frac = [[0.1, 0.5, 0.95], [0.99, 0.02, 0.4]]
    action = [[low[j] + f * (high[j] - low[j]) for j, f in enumerate(row)] for row in frac]
    dist = TanhNormal(
        torch.tensor(loc, dtype=torch.float64),
        torch.tensor(scale, dtype=torch.float64),
        low=torch.tensor(low, dtype=torch.float64),
        high=torch.tensor(high, dtype=torch.float64),
    )
    got = dist.log_prob(torch.tensor(action, dtype=torch.float64))
    ref = _tanh_normal_logpdf_reference(action, loc, scale, low, high)
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64), rtol=1e-9, atol=1e-9)


def test_tanh_normal_float_bounds_equal_tensor_bounds():
    loc, scale = torch.tensor([[0.3, -0.2]]), torch.tensor([[0.7, 1.1]])
    a = torch.tensor([[1.0, -1.5]])
    lp_float = TanhNormal(loc, scale, low=-2.0, high=2.0).log_prob(a)
    lp_tensor = TanhNormal(
        loc, scale, low=torch.tensor([-2.0, -2.0]), high=torch.full((2,), 2.0)
    ).log_prob(a)
    torch.testing.assert_close(lp_float, lp_tensor)
    ref = _tanh_normal_logpdf_reference(
        a.tolist(), loc.tolist(), scale.tolist(), [-2.0] * 2, [2.0] * 2
    )
    torch.testing.assert_close(lp_float, torch.tensor(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tanh_normal_action_exactly_at_the_bounds_is_finite(dtype):
    loc = torch.tensor([[0.5, -0.5], [3.0, -3.0]], dtype=dtype, requires_grad=True)
    scale = torch.tensor([[0.5, 1.0], [0.2, 0.3]], dtype=dtype, requires_grad=True)
    dist = TanhNormal(
        loc,
        scale,
        low=torch.tensor([-2.0, 0.0], dtype=dtype),
        high=torch.tensor([2.0, 1.0], dtype=dtype),
    )
    action = torch.tensor([[2.0, 0.0], [-2.0, 1.0]], dtype=dtype)  # every entry on a bound
    lp = dist.log_prob(action)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()


def test_tanh_normal_samples_stay_inside_and_are_reparameterised():
    loc = torch.tensor([50.0, -50.0, 0.0], requires_grad=True)  # saturates tanh in float32
    dist = TanhNormal(loc, torch.full((3,), 0.1), low=-3.0, high=1.0)
    a = dist.rsample((1000,))
    assert ((a > -3.0) & (a < 1.0)).all()
    assert torch.isfinite(dist.log_prob(a)).all()
    a[:, 2].sum().backward()  # gradient through tanh at the unsaturated entry
    assert loc.grad[2] > 0
    assert dist.has_rsample and not dist.sample().requires_grad


def test_tanh_normal_rsample_and_log_prob_agree_with_log_prob():
    torch.manual_seed(0)
    dist = TanhNormal(torch.randn(5, 2), torch.rand(5, 2) + 0.2, low=-2.0, high=2.0)
    a, lp = dist.rsample_and_log_prob((4,))
    assert a.shape == (4, 5, 2) and lp.shape == (4, 5)
    torch.testing.assert_close(lp, dist.log_prob(a), rtol=1e-4, atol=1e-4)
    a2, lp2 = dist.sample_and_log_prob()
    torch.testing.assert_close(lp2, dist.log_prob(a2), rtol=1e-4, atol=1e-4)


def test_tanh_normal_deterministic_sample_is_squashed_loc():
    loc = torch.tensor([[0.2, -1.0]])
    dist = TanhNormal(
        loc, torch.ones(1, 2), low=torch.tensor([0.0, -4.0]), high=torch.tensor([2.0, 4.0])
    )
    # mid + half * tanh(loc): [1 + 1 * tanh(0.2), 0 + 4 * tanh(-1)]
    expected = torch.tensor([[1.0 + math.tanh(0.2), 4.0 * math.tanh(-1.0)]])
    torch.testing.assert_close(dist.deterministic_sample, expected)
    torch.testing.assert_close(dist.mode, expected)


def test_tanh_normal_tanh_loc_soft_limits_the_location():
    dist = TanhNormal(torch.tensor([100.0, 1.0]), torch.ones(2), tanh_loc=True, upscale=5.0)
    torch.testing.assert_close(
        dist.loc, torch.tensor([5.0 * math.tanh(20.0), 5.0 * math.tanh(0.2)])
    )


def test_tanh_normal_has_no_closed_form_entropy():
    dist = TanhNormal(torch.zeros(2), torch.ones(2))
    with pytest.raises(NotImplementedError):
        dist.entropy()
    # not overridden at all: TorchRL's ClipPPOLoss detects "no analytic entropy" this way
    assert type(dist).entropy is D.Distribution.entropy
    with pytest.raises(NotImplementedError):
        _ = dist.mean


def test_tanh_normal_monte_carlo_entropy_matches_quadrature():
    mu, sigma, low, high = 0.4, 0.9, -2.0, 3.0
    half = (high - low) / 2
    # Independent reference: H[a] = H[x] + E_x[log(1 - tanh(x)^2)] + log(half), x ~ N(mu, sigma),
    # with the expectation by the trapezoid rule over mu +- 12 sigma in float64.
    x = torch.linspace(mu - 12 * sigma, mu + 12 * sigma, 200_001, dtype=torch.float64)
    pdf = torch.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    log_jac = torch.log1p(-(torch.tanh(x) ** 2))
    expected = (
        0.5 * math.log(2 * math.pi * math.e * sigma**2)
        + torch.trapezoid(pdf * log_jac, x).item()
        + math.log(half)
    )
    torch.manual_seed(123)
    dist = TanhNormal(torch.tensor([mu]), torch.tensor([sigma]), low=low, high=high)
    a = dist.rsample((40_000,))
    mc = -dist.log_prob(a).mean().item()
    # the estimator's std is ~std(log p)/sqrt(40000) ~ 0.005; allow ~4 sigma
    assert abs(mc - expected) < 0.02, (mc, expected)
    _, lp = dist.rsample_and_log_prob((40_000,))
    assert abs(-lp.mean().item() - expected) < 0.02


def test_tanh_normal_bad_bounds_and_actions():
    with pytest.raises(ValueError, match=r"high must be > low everywhere"):
        TanhNormal(torch.zeros(2), torch.ones(2), low=1.0, high=1.0)
    with pytest.raises(ValueError, match=r"high must be > low everywhere"):
        TanhNormal(
            torch.zeros(2),
            torch.ones(2),
            low=torch.tensor([-1.0, 2.0]),
            high=torch.tensor([1.0, 0.0]),
        )
    with pytest.raises(
        ValueError, match=r"low of shape \[3\] does not broadcast to loc's shape \[4, 2\]"
    ):
        TanhNormal(torch.zeros(4, 2), torch.ones(4, 2), low=torch.zeros(3))
    with pytest.raises(ValueError, match=r"low and high must be finite"):
        TanhNormal(torch.zeros(2), torch.ones(2), high=float("inf"))
    dist = TanhNormal(torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"1 action entries lie outside \[low, high\].*2\.0"):
        dist.log_prob(torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match=r"action must be floating point"):
        dist.log_prob(torch.tensor([0, 1]))


# --------------------------------------------------------------------------- discrete


def test_categorical_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, math.log(2.0)]])
    dist = Categorical(logits=logits)
    # log p_k = l_k - log(sum_j exp(l_j))
    lse0 = math.log(math.e + math.e**2 + math.e**3)
    expected_lp = [2.0 - lse0, 0.0 - math.log(4.0)]  # second row: probs [1/4, 1/4, 1/2]
    torch.testing.assert_close(dist.log_prob(torch.tensor([1, 0])), torch.tensor(expected_lp))
    p0 = [math.exp(v - lse0) for v in (1.0, 2.0, 3.0)]
    expected_h = [
        -sum(p * math.log(p) for p in p0),
        -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)),
    ]
    torch.testing.assert_close(dist.entropy(), torch.tensor(expected_h))
    assert torch.equal(dist.deterministic_sample, torch.tensor([2, 2]))
    # integer-valued float actions are accepted; sample dims in front are allowed
    torch.testing.assert_close(
        dist.log_prob(torch.tensor([[1.0, 0.0]]))[0], torch.tensor(expected_lp)
    )


def test_categorical_from_probs():
    dist = Categorical(probs=torch.tensor([0.2, 0.8]))
    torch.testing.assert_close(dist.log_prob(torch.tensor(1)), torch.tensor(math.log(0.8)))


def test_categorical_bad_inputs():
    with pytest.raises(ValueError, match=r"exactly one of logits or probs, got both"):
        Categorical(logits=torch.zeros(2), probs=torch.ones(2) / 2)
    with pytest.raises(ValueError, match=r"got neither"):
        Categorical()
    with pytest.raises(ValueError, match=r"logits contain NaN"):
        Categorical(logits=torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match=r"probs must be finite, >= 0"):
        Categorical(probs=torch.tensor([-0.1, 1.1]))
    with pytest.raises(ValueError, match=r"shape \[\*B, num_actions\]"):
        Categorical(logits=torch.tensor(1.0))
    dist = Categorical(logits=torch.zeros(4, 3))
    with pytest.raises(
        ValueError, match=r"expected an integer action of shape \[\*sample, 4\].*got \[4, 1\]"
    ):
        dist.log_prob(torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"actions must be in \[0, 2\], got values from 0 to 3"):
        dist.log_prob(torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"must be integer indices"):
        dist.log_prob(torch.tensor([0.5, 1.0, 2.0, 0.0]))


def test_masked_logits_are_allowed():
    dist = Categorical(logits=torch.tensor([0.0, -float("inf"), 0.0]))
    torch.testing.assert_close(dist.log_prob(torch.tensor(2)), torch.tensor(math.log(0.5)))
    torch.testing.assert_close(dist.entropy(), torch.tensor(math.log(2.0)))


def test_one_hot_categorical_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.0]])
    dist = OneHotCategorical(logits=logits)
    lse0 = math.log(math.e + math.e**2 + math.e**3)
    lse1 = math.log(2 * math.exp(0.5) + 1.0)
    action = torch.tensor([[1, 0, 0], [0, 0, 1]])
    torch.testing.assert_close(dist.log_prob(action), torch.tensor([1.0 - lse0, 0.0 - lse1]))
    torch.testing.assert_close(
        dist.log_prob(action.float()), torch.tensor([1.0 - lse0, 0.0 - lse1])
    )
    p1 = [math.exp(0.5 - lse1)] * 2 + [math.exp(-lse1)]
    p0 = [math.exp(v - lse0) for v in (1.0, 2.0, 3.0)]
    expected_h = [-sum(p * math.log(p) for p in ps) for ps in (p0, p1)]
    torch.testing.assert_close(dist.entropy(), torch.tensor(expected_h))
    # argmax, the first index on a tie
    assert torch.equal(dist.deterministic_sample, torch.tensor([[0, 0, 1], [1, 0, 0]]))
    sample = dist.sample((50,))
    assert sample.dtype == torch.int64 and sample.shape == (50, 2, 3)
    assert torch.equal(sample.sum(-1), torch.ones(50, 2, dtype=torch.long))


def test_one_hot_samples_follow_the_probabilities():
    torch.manual_seed(0)
    dist = OneHotCategorical(probs=torch.tensor([0.1, 0.6, 0.3]))
    freq = dist.sample((20_000,)).float().mean(0)
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.6, 0.3]), atol=0.015, rtol=0)


def test_one_hot_bad_actions():
    dist = OneHotCategorical(logits=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"must be one-hot"):
        dist.log_prob(torch.tensor([[1, 1, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match=r"must be one-hot"):
        dist.log_prob(torch.zeros(2, 3))
    with pytest.raises(
        ValueError, match=r"expected a one-hot action of shape \[\*sample, 2, 3\].*got \[2\]"
    ):
        dist.log_prob(torch.tensor([0, 2]))
