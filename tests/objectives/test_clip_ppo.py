"""ClipPPOLoss against an independent per-sample reference, and its contract.

The reference below recomputes every output with a plain Python loop over samples, straight
from the paper's formulas (ratio-space clipping, unbiased advantage std), so it shares no code
with ppokit.objectives.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from loss_builders import OBS, critic, discrete_actor, make_batch, normal_actor, total_loss
from tensordict.nn import (
    NormalParamExtractor,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import distributions as D
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close

from ppokit import ClipPPOLoss


def _distance(t: float, v: torch.Tensor, kind: str) -> torch.Tensor:
    d = v - t
    if kind == "l1":
        return d.abs()
    if kind == "l2":
        return d * d
    return 0.5 * d * d if d.abs() < 1 else d.abs() - 0.5


def reference(
    actor_net,
    critic_net,
    td,
    *,
    eps=0.2,
    entropy_coef=0.01,
    critic_coef=1.0,
    loss_type="smooth_l1",
    normalize=False,
    clip_value=None,
    reduction="mean",
    entropy_bonus=True,
):
    """Per-sample loop for a Categorical actor (logits = actor_net(obs))."""
    obs = td["observation"].reshape(-1, OBS)
    n = obs.shape[0]
    actions = td["action"].reshape(-1)
    old_lp = td["action_log_prob"].reshape(-1)
    adv = td["advantage"].reshape(-1)
    vt = td["value_target"].reshape(-1)
    old_v = td["state_value"].reshape(-1)
    if normalize:
        mean = sum(adv[i] for i in range(n)) / n
        var = sum((adv[i] - mean) ** 2 for i in range(n)) / (n - 1)
        adv = torch.stack([(adv[i] - mean) / max(var.sqrt(), torch.tensor(1e-6)) for i in range(n)])
    objs, ents, crits = [], [], []
    for i in range(n):
        logits = actor_net(obs[i])
        logp = logits - torch.logsumexp(logits, 0)
        ratio = torch.exp(logp[actions[i]] - old_lp[i])
        clipped = torch.clamp(ratio, 1 - eps, 1 + eps)
        objs.append(-torch.minimum(ratio * adv[i], clipped * adv[i]))
        ents.append(-(logp.exp() * logp).sum())
        v = critic_net(obs[i])[0]
        c = _distance(vt[i], v, loss_type)
        if clip_value is not None:
            v_clip = old_v[i] + torch.clamp(v - old_v[i], -clip_value, clip_value)
            c = torch.maximum(c, _distance(vt[i], v_clip, loss_type))
        crits.append(critic_coef * c)
    out = {"loss_objective": torch.stack(objs), "loss_critic": torch.stack(crits)}
    if entropy_bonus:
        out["loss_entropy"] = -entropy_coef * torch.stack(ents)
    shape = td.batch_size
    for k, v in out.items():
        out[k] = {"mean": v.mean(), "sum": v.sum(), "none": v.reshape(shape)}[reduction]
    out["entropy"] = torch.stack(ents).mean().detach()
    return out


GRID = list(
    itertools.product(
        [0.1, 0.2],  # clip_epsilon
        [False, True],  # normalize_advantage
        ["l1", "l2", "smooth_l1"],  # loss_critic_type
        [None, 0.05],  # clip_value
        ["mean", "sum", "none"],  # reduction
        [True, False],  # functional
    )
)


@pytest.mark.parametrize("eps, normalize, loss_type, clip_value, reduction, functional", GRID)
def test_matches_per_sample_reference(eps, normalize, loss_type, clip_value, reduction, functional):
    actor_net, critic_net = nn.Linear(OBS, 4).double(), nn.Linear(OBS, 1).double()
    actor = discrete_actor(actor_net)
    td = make_batch(actor, (3, 4), dtype=torch.float64)
    loss = ClipPPOLoss(
        actor,
        critic(critic_net),
        clip_epsilon=eps,
        entropy_coef=0.05,
        critic_coef=0.7,
        loss_critic_type=loss_type,
        normalize_advantage=normalize,
        clip_value=False if clip_value is None else clip_value,
        reduction=reduction,
        functional=functional,
    )
    out = loss(td)
    ref = reference(
        actor_net,
        critic_net,
        td,
        eps=eps,
        entropy_coef=0.05,
        critic_coef=0.7,
        loss_type=loss_type,
        normalize=normalize,
        clip_value=clip_value,
        reduction=reduction,
    )
    for key in ("loss_objective", "loss_critic", "loss_entropy", "entropy"):
        assert_close(out[key], ref[key], msg=key)
    params = list(actor_net.parameters()) + list(critic_net.parameters())
    got = torch.autograd.grad(total_loss(out), params)
    want = torch.autograd.grad(total_loss(ref), params)
    for g, w in zip(got, want):
        assert_close(g, w)


def test_diagnostics_hand_checked():
    actor_net = nn.Linear(OBS, 4)
    actor = discrete_actor(actor_net)
    td = make_batch(actor, (10,))
    out = ClipPPOLoss(actor, critic(), clip_epsilon=0.2)(td)
    logits = actor_net(td["observation"])
    lp = torch.log_softmax(logits, -1).gather(-1, td["action"][:, None]).squeeze(-1)
    lw = (lp - td["action_log_prob"]).detach()
    w = lw.exp()
    assert_close(out["kl_approx"], (-lw).mean())
    assert_close(out["ESS"], w.sum() ** 2 / (w**2).sum() / 10)
    assert_close(out["clip_fraction"], ((w < 0.8) | (w > 1.2)).float().mean())
    assert_close(out["max_ratio"], w.max())
    assert_close(out["mean_ratio"], w.mean())
    assert 0 < float(out["clip_fraction"]) < 1, "the fixture should clip some samples"
    for key in out.keys():
        if not key.startswith("loss_"):
            assert not out[key].requires_grad, key
    assert out.batch_size == torch.Size([])


def test_output_keys_follow_options():
    actor = discrete_actor()
    td = make_batch(actor)
    out = ClipPPOLoss(actor, critic(), clip_value=True)(td)
    assert set(out.keys()) == {
        "loss_objective",
        "loss_critic",
        "loss_entropy",
        "entropy",
        "clip_fraction",
        "kl_approx",
        "ESS",
        "explained_variance",
        "value_clip_fraction",
        "max_ratio",
        "mean_ratio",
    }
    out = ClipPPOLoss(actor, critic(), entropy_bonus=False, critic_coef=0.0)(td)
    assert "loss_entropy" not in out.keys() and "loss_critic" not in out.keys()
    # actor only: no critic at all, the advantage comes from the data
    out = ClipPPOLoss(actor, None, critic_coef=0)(td)
    assert "loss_critic" not in out.keys()


def test_clip_value_true_uses_clip_epsilon():
    actor = discrete_actor()
    td = make_batch(actor)
    c = critic()
    a = ClipPPOLoss(actor, c, clip_epsilon=0.15, clip_value=True)(td)
    b = ClipPPOLoss(actor, c, clip_epsilon=0.15, clip_value=0.15)(td)
    assert_close(a["loss_critic"], b["loss_critic"])
    plain = ClipPPOLoss(actor, c, clip_epsilon=0.15)(td)
    assert not torch.allclose(a["loss_critic"], plain["loss_critic"])


def test_entropy_bonus_off_changes_only_entropy_terms():
    actor_net, critic_net = nn.Linear(OBS, 4), nn.Linear(OBS, 1)
    actor = discrete_actor(actor_net)
    td = make_batch(actor)
    out = ClipPPOLoss(actor, critic(critic_net), entropy_bonus=False)(td)
    ref = reference(actor_net, critic_net, td, entropy_bonus=False)
    assert "loss_entropy" not in out.keys() and "entropy" not in out.keys()
    assert_close(out["loss_objective"], ref["loss_objective"])


def test_reduction_none_on_two_batch_dims_keeps_shape():
    actor = discrete_actor()
    td = make_batch(actor, (2, 5))
    out = ClipPPOLoss(actor, critic(), reduction="none")(td)
    for key in ("loss_objective", "loss_critic", "loss_entropy"):
        assert out[key].shape == (2, 5)
    mean = ClipPPOLoss(actor, critic(), reduction="mean")(td)
    assert_close(out["loss_objective"].mean(), mean["loss_objective"])


def test_continuous_closed_form_entropy_consumes_no_randomness():
    actor_net = nn.Linear(OBS, 4)
    actor = normal_actor(actor_net)
    td = make_batch(actor)
    loss = ClipPPOLoss(actor, critic())
    state = torch.get_rng_state()
    out = loss(td)
    assert torch.equal(state, torch.get_rng_state())
    _, raw = actor_net(td["observation"]).chunk(2, -1)
    scale = tensordict_scale(raw)
    # H[N(mu, s)] = 0.5 log(2 pi e s^2), summed over the 2 action dims
    expected = (0.5 * torch.log(2 * math.pi * math.e * scale**2)).sum(-1).mean()
    assert_close(out["entropy"], expected)


def tensordict_scale(raw: torch.Tensor) -> torch.Tensor:
    # tensordict's default NormalParamExtractor: softplus(x + b) + 0.01 with b chosen so
    # that x = 0 maps to 1.0, i.e. softplus(b) = 0.99 -> b = log(expm1(0.99)); floor 1e-4
    bias = math.log(math.expm1(0.99))
    return (F.softplus(raw + bias) + 0.01).clamp_min(1e-4)


class _NoEntropyNormal(D.Independent):
    """A reparameterisable distribution without a closed-form entropy."""

    def __init__(self, loc, scale):
        super().__init__(D.Normal(loc, scale), 1)

    def entropy(self):
        raise NotImplementedError


@pytest.mark.parametrize("samples", [1, 7])
def test_mc_entropy_uses_reparameterised_samples(samples):
    actor_net = nn.Linear(OBS, 4)
    actor = _no_entropy_actor(actor_net)
    td = make_batch(actor)
    loss = ClipPPOLoss(actor, critic(), samples_mc_entropy=samples, entropy_coef=1.0)
    torch.manual_seed(123)
    out = loss(td)
    # Reference: same seed, draw the same [samples, B, 2] standard normals by hand.
    loc, raw = actor_net(td["observation"]).chunk(2, -1)
    scale = tensordict_scale(raw)
    torch.manual_seed(123)
    x = loc + scale * torch.randn(samples, *loc.shape)
    log_p = D.Normal(loc, scale).log_prob(x).sum(-1)
    expected = -log_p.mean(0)
    assert_close(out["entropy"], expected.mean().detach())
    # the estimate is differentiable: the bonus pushes the scale parameters
    (g,) = torch.autograd.grad(out["loss_entropy"], [actor_net.bias])
    assert g[2:].abs().sum() > 0


def _no_entropy_actor(actor_net: nn.Module) -> ProbabilisticTensorDictSequential:
    return ProbabilisticTensorDictSequential(
        TensorDictModule(
            nn.Sequential(actor_net, NormalParamExtractor()), ["observation"], ["loc", "scale"]
        ),
        ProbabilisticTensorDictModule(
            ["loc", "scale"], ["action"], distribution_class=_NoEntropyNormal, return_log_prob=True
        ),
    )


def test_mc_entropy_close_to_truth_with_many_samples():
    actor_net = nn.Linear(OBS, 4)
    actor = _no_entropy_actor(actor_net)
    td = make_batch(actor)
    out = ClipPPOLoss(actor, critic(), samples_mc_entropy=4000)(td)
    _, raw = actor_net(td["observation"]).chunk(2, -1)
    truth = (0.5 * torch.log(2 * math.pi * math.e * tensordict_scale(raw) ** 2)).sum(-1).mean()
    assert abs(float(out["entropy"]) - float(truth)) < 0.05
