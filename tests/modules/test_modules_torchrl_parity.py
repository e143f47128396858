"""Interop with TorchRL 0.14.1: same numbers from the same weights, modules accepted by its loss."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

torchrl_modules = pytest.importorskip("torchrl.modules")
torchrl_objectives = pytest.importorskip("torchrl.objectives")

from ppokit.modules.actors import (  # noqa: E402
    ActorCriticOperator,
    ActorValueOperator,
    ProbabilisticActor,
    ValueOperator,
)
from ppokit.modules.distributions import (  # noqa: E402
    IndependentNormal,
    NormalParamExtractor,
    OneHotCategorical,
    TanhNormal,
)
from ppokit.modules.mlp import MLP  # noqa: E402

BOUNDS = [
    {},
    {"low": -2.0, "high": 3.0},
    {"low": torch.tensor([-1.0, 0.0, -3.0]), "high": torch.tensor([2.0, 1.0, 3.0])},
]


@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize("event_dims", [0, 1])
def test_tanh_normal_log_prob_and_rsample_match_torchrl(bounds, event_dims):
    torch.manual_seed(0)
    loc, scale = torch.randn(4, 3) * 2, torch.rand(4, 3) + 0.1
    ours = TanhNormal(loc, scale, event_dims=event_dims, **bounds)
    theirs = torchrl_modules.TanhNormal(loc, scale, event_dims=event_dims, **bounds)
    torch.manual_seed(1)
    a_ours = ours.rsample((5,))
    torch.manual_seed(1)
    a_theirs = theirs.rsample((5,))
    torch.testing.assert_close(a_ours, a_theirs, rtol=0, atol=0)
    # each scores the other's samples (and samples at the bounds) the same way
    at_bounds = torch.stack([ours.high.expand(4, 3), ours.low.expand(4, 3)])
    for actions in (a_theirs, a_ours, at_bounds):
        torch.testing.assert_close(
            ours.log_prob(actions), theirs.log_prob(actions), rtol=1e-5, atol=1e-5
        )
    torch.testing.assert_close(ours.deterministic_sample, theirs.deterministic_sample)


def test_tanh_normal_defaults_and_tanh_loc_match_torchrl():
    torch.manual_seed(2)
    loc, scale = torch.randn(6, 2) * 10, torch.rand(6, 2) + 0.1
    a = torch.rand(6, 2) * 2 - 1
    for kw in ({}, {"tanh_loc": True}, {"tanh_loc": True, "upscale": 2.0}, {"safe_tanh": False}):
        ours, theirs = TanhNormal(loc, scale, **kw), torchrl_modules.TanhNormal(loc, scale, **kw)
        torch.testing.assert_close(ours.log_prob(a), theirs.log_prob(a), rtol=1e-5, atol=1e-5)
        assert ours.batch_shape == theirs.batch_shape and ours.event_shape == theirs.event_shape


def test_independent_normal_matches_torchrl():
    torch.manual_seed(3)
    loc, scale = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    ours, theirs = IndependentNormal(loc, scale), torchrl_modules.IndependentNormal(loc, scale)
    a = torch.randn(5, 3)
    torch.testing.assert_close(ours.log_prob(a), theirs.log_prob(a))
    torch.testing.assert_close(ours.entropy(), theirs.entropy())


def test_one_hot_categorical_matches_torchrl():
    torch.manual_seed(4)
    logits = torch.randn(7, 4)
    ours, theirs = (
        OneHotCategorical(logits=logits),
        torchrl_modules.OneHotCategorical(logits=logits),
    )
    torch.manual_seed(5)
    s_ours = ours.sample((3,))
    torch.manual_seed(5)
    s_theirs = theirs.sample((3,))
    assert torch.equal(s_ours, s_theirs) and s_ours.dtype == s_theirs.dtype
    torch.testing.assert_close(ours.log_prob(s_theirs), theirs.log_prob(s_theirs))
    torch.testing.assert_close(theirs.log_prob(s_ours), ours.log_prob(s_ours))
    torch.testing.assert_close(ours.entropy(), theirs.entropy())
    assert torch.equal(ours.deterministic_sample, theirs.deterministic_sample)


def _twin_actors(bounds: dict):
    """A ppokit actor (plain-module form) and a TorchRL actor on the same network."""
    net = nn.Sequential(MLP(3, 4, num_cells=(8,)), NormalParamExtractor())
    ours = ProbabilisticActor(
        net,
        in_keys=["observation"],
        distribution_class=TanhNormal,
        distribution_kwargs=bounds,
        return_log_prob=True,
    )
    theirs = torchrl_modules.ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=torchrl_modules.TanhNormal,
        distribution_kwargs=bounds,
        return_log_prob=True,
    )
    return ours, theirs


def test_actor_and_value_operator_match_torchrl():
    torch.manual_seed(6)
    bounds = {"low": -2.0, "high": 2.0}
    ours, theirs = _twin_actors(bounds)
    assert ours.log_prob_keys == theirs.log_prob_keys
    assert ours.dist_sample_keys == theirs.dist_sample_keys
    td = TensorDict(observation=torch.randn(8, 3), batch_size=[8])
    sampled = theirs(td.clone())
    torch.testing.assert_close(
        ours.get_dist(td.clone()).log_prob(sampled["action"]),
        sampled["action_log_prob"],
        rtol=1e-5,
        atol=1e-5,
    )
    value_net = MLP(3, 1, num_cells=(8,))
    v_ours = ValueOperator(value_net)(td.clone())["state_value"]
    v_theirs = torchrl_modules.ValueOperator(value_net, in_keys=["observation"])(td.clone())[
        "state_value"
    ]
    torch.testing.assert_close(v_ours, v_theirs)


def test_actor_value_operator_matches_torchrl():
    torch.manual_seed(7)
    trunk = TensorDictModule(MLP(3, 8, num_cells=()), in_keys=["observation"], out_keys=["hidden"])
    head_net = nn.Sequential(nn.Linear(8, 4), NormalParamExtractor())
    value_net = nn.Linear(8, 1)
    ours = ActorValueOperator(
        trunk,
        ProbabilisticActor(
            head_net, in_keys=["hidden"], distribution_class=TanhNormal, return_log_prob=True
        ),
        ValueOperator(value_net, in_keys=["hidden"]),
    )
    theirs = torchrl_modules.ActorValueOperator(
        trunk,
        torchrl_modules.ProbabilisticActor(
            TensorDictModule(head_net, in_keys=["hidden"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"],
            distribution_class=torchrl_modules.TanhNormal,
            return_log_prob=True,
        ),
        torchrl_modules.ValueOperator(value_net, in_keys=["hidden"]),
    )
    td = TensorDict(observation=torch.randn(8, 3), batch_size=[8])
    action = theirs(td.clone())["action"]
    torch.testing.assert_close(
        ours.get_policy_operator().get_dist(td.clone()).log_prob(action),
        theirs.get_policy_operator().get_dist(td.clone()).log_prob(action),
        rtol=1e-5,
        atol=1e-5,
    )
    torch.testing.assert_close(
        ours.get_value_operator()(td.clone())["state_value"],
        theirs.get_value_operator()(td.clone())["state_value"],
    )


def _ppo_batch(actor, n: int = 16) -> TensorDict:
    with torch.no_grad():
        td = actor(TensorDict(observation=torch.randn(n, 3), batch_size=[n]))
    td["advantage"] = torch.randn(n, 1)
    td["value_target"] = torch.randn(n, 1)
    return td


def test_torchrl_clip_ppo_loss_gives_the_same_numbers_with_ppokit_modules():
    torch.manual_seed(8)
    ours, theirs = _twin_actors({"low": -1.5, "high": 1.5})
    value_net = MLP(3, 1, num_cells=(8,))
    critic_ours = ValueOperator(value_net)
    critic_theirs = torchrl_modules.ValueOperator(value_net, in_keys=["observation"])
    data = _ppo_batch(theirs)
    loss_ours = torchrl_objectives.ClipPPOLoss(ours, critic_ours, samples_mc_entropy=4)
    loss_theirs = torchrl_objectives.ClipPPOLoss(theirs, critic_theirs, samples_mc_entropy=4)
    torch.manual_seed(9)  # the Monte-Carlo entropy draws the same normals in both
    out_ours = loss_ours(data.clone())
    torch.manual_seed(9)
    out_theirs = loss_theirs(data.clone())
    for key in ("loss_objective", "loss_critic", "loss_entropy", "entropy", "kl_approx"):
        torch.testing.assert_close(out_ours[key], out_theirs[key], rtol=1e-5, atol=1e-5)
    sum(v for k, v in out_ours.items() if k.startswith("loss_")).backward()
    assert all(p.grad is not None for p in ours.parameters())


def test_torchrl_clip_ppo_loss_accepts_ppokit_shared_operator():
    torch.manual_seed(10)
    trunk = TensorDictModule(MLP(3, 8, num_cells=()), in_keys=["observation"], out_keys=["hidden"])
    op = ActorCriticOperator(
        trunk,
        ProbabilisticActor(
            nn.Linear(8, 4),
            in_keys=["hidden"],
            distribution_class=OneHotCategorical,
            return_log_prob=True,
        ),
        ValueOperator(nn.Linear(8, 1), in_keys=["hidden"]),
    )
    loss = torchrl_objectives.ClipPPOLoss(op.get_policy_operator(), op.get_value_operator())
    data = _ppo_batch(op.get_policy_operator())
    out = loss(data.clone())
    assert all(torch.isfinite(v).all() for v in out.values())
    # OneHotCategorical has a closed-form entropy, so the loss reports its batch mean exactly
    with torch.no_grad():
        logits = op.get_policy_operator()(data.select("observation"))["logits"]
    torch.testing.assert_close(out["entropy"], OneHotCategorical(logits=logits).entropy().mean())
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    assert all(p.grad is not None for p in trunk.parameters())
