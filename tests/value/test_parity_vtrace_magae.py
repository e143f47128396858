"""V-trace and multi-agent GAE against TorchRL 0.14.1's numbers (the reference)."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    NormalParamExtractor,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    set_interaction_type,
)
from torch import nn

from ppokit.value.estimators import MultiAgentGAE, VTrace
from ppokit.value.functional_multiagent import multi_agent_generalized_advantage_estimate
from ppokit.value.functional_vtrace import vtrace_advantage_estimate

torchrl_value = pytest.importorskip("torchrl.objectives.value")
torchrl_functional = pytest.importorskip("torchrl.objectives.value.functional")

TOL = {"atol": 1e-5, "rtol": 1e-5}


def random_flags(shape, gen, p=0.1):
    terminated = torch.rand(shape, generator=gen) < p
    return terminated | (torch.rand(shape, generator=gen) < p), terminated


@pytest.mark.parametrize("shape", [(3, 17, 1), (2, 4, 40, 1), (1, 1, 1), (5, 300, 1)])
@pytest.mark.parametrize("thresh", [(1.0, 1.0), (1.5, 0.7), (0.5, 2.0)])
def test_vtrace_functional_parity(shape, thresh):
    gen = torch.Generator().manual_seed(len(shape) * 100 + shape[-2])
    done, terminated = random_flags(shape, gen)
    value, next_value, reward = (torch.randn(shape, generator=gen) for _ in range(3))
    log_pi = torch.randn(shape, generator=gen) * 0.5
    log_mu = torch.randn(shape, generator=gen) * 0.5
    rho, c = thresh
    ours = vtrace_advantage_estimate(
        0.97,
        log_pi,
        log_mu,
        value,
        next_value,
        reward,
        done,
        terminated,
        rho_thresh=rho,
        c_thresh=c,
    )
    theirs = torchrl_functional.vtrace_advantage_estimate(
        0.97, log_pi, log_mu, value, next_value, reward, done, terminated, rho, c
    )
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_vtrace_functional_time_first_matches_time_second():
    gen = torch.Generator().manual_seed(7)
    shape = (4, 12, 1)
    done, terminated = random_flags(shape, gen)
    inputs = [torch.randn(shape, generator=gen) for _ in range(5)]
    ref = vtrace_advantage_estimate(0.9, *inputs, done, terminated, rho_thresh=1.2)
    moved = [x.transpose(0, 1) for x in (*inputs, done, terminated)]
    out = vtrace_advantage_estimate(0.9, *moved, rho_thresh=1.2, time_dim=0)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a.transpose(0, 1), b)


def test_vtrace_functional_mask_equals_cut_rollout():
    # a right-padded row gives the same numbers as the row cut at its last valid step
    gen = torch.Generator().manual_seed(3)
    shape = (2, 10, 1)
    done, terminated = random_flags(shape, gen)
    inputs = [torch.randn(shape, generator=gen) for _ in range(5)]
    mask = torch.ones(shape, dtype=torch.bool)
    mask[0, 6:] = False
    adv, vs = vtrace_advantage_estimate(0.9, *inputs, done, terminated, mask=mask)
    cut = [x[0:1, :6] for x in (*inputs, done, terminated)]
    adv_cut, vs_cut = vtrace_advantage_estimate(0.9, *cut)
    torch.testing.assert_close(adv[0:1, :6], adv_cut)
    torch.testing.assert_close(vs[0:1, :6], vs_cut)
    assert (adv[0, 6:] == 0).all()
    torch.testing.assert_close(vs[0, 6:], inputs[2][0, 6:])  # target = V(s_t) when padded


def make_gaussian_actor(seed=0):
    torch.manual_seed(seed)
    return ProbabilisticTensorDictSequential(
        TensorDictModule(
            nn.Sequential(nn.Linear(3, 2), NormalParamExtractor()),
            ["observation"],
            ["loc", "scale"],
        ),
        ProbabilisticTensorDictModule(
            ["loc", "scale"], ["action"], distribution_class=torch.distributions.Normal
        ),
    )


def make_vtrace_rollout(actor, batch=3, steps=9, seed=1):
    gen = torch.Generator().manual_seed(seed)
    done, terminated = random_flags((batch, steps, 1), gen)
    td = TensorDict(
        {
            "observation": torch.randn(batch, steps, 3, generator=gen),
            "action_log_prob": torch.randn(batch, steps, generator=gen) * 0.3 - 1.0,
            "next": {
                "observation": torch.randn(batch, steps, 3, generator=gen),
                "reward": torch.randn(batch, steps, 1, generator=gen),
                "done": done,
                "terminated": terminated,
            },
        },
        [batch, steps],
    )
    # TorchRL scores the policy's own (here: deterministic) action instead of the stored
    # one (see ppokit.value.vtrace); storing exactly that action makes both compute the same.
    with torch.no_grad():
        td["action"] = actor.get_dist(td.select("observation")).mean
    return td


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gamma": 0.9},
        {"gamma": 0.99, "rho_thresh": 1.5, "c_thresh": 0.8},
        {"gamma": 0.95, "average_adv": True},
    ],
)
def test_vtrace_module_parity(kwargs):
    actor = make_gaussian_actor()
    torch.manual_seed(5)
    critic = TensorDictModule(nn.Linear(3, 1), ["observation"], ["state_value"])
    td = make_vtrace_rollout(actor)
    ours = VTrace(actor_network=actor, value_network=critic, **kwargs)(td.clone())
    with set_interaction_type(InteractionType.DETERMINISTIC):
        theirs = torchrl_value.VTrace(actor_network=actor, value_network=critic, **kwargs)(
            td.clone()
        )
    for key in ("advantage", "value_target", "state_value", ("next", "state_value")):
        torch.testing.assert_close(ours[key], theirs[key], **TOL)


def test_vtrace_scores_the_stored_action():
    # log pi must be the current policy's log-prob of the action that was taken: with a
    # stored action away from the mean, the result equals the functional fed that log-prob
    actor = make_gaussian_actor()
    td = make_vtrace_rollout(actor)
    td["action"] = td["action"] + 0.7
    td["state_value"] = torch.randn(3, 9, 1)
    td["next", "state_value"] = torch.randn(3, 9, 1)
    with torch.no_grad():
        dist = actor.get_dist(td.select("observation"))
        log_pi = dist.log_prob(td["action"])
    ours = VTrace(gamma=0.9, actor_network=actor, value_network=None)(td.clone())
    adv, target = vtrace_advantage_estimate(
        0.9,
        log_pi,
        td["action_log_prob"].unsqueeze(-1),
        td["state_value"],
        td["next", "state_value"],
        td["next", "reward"],
        td["next", "done"],
        td["next", "terminated"],
    )
    torch.testing.assert_close(ours["advantage"], adv)
    torch.testing.assert_close(ours["value_target"], target)
    assert "loc" not in ours.keys()  # the actor's intermediate outputs stay out of the data


def make_marl_rollout(batch=4, steps=11, agents=3, seed=2, per_agent_reward=False):
    gen = torch.Generator().manual_seed(seed)
    signal_shape = (batch, steps, agents, 1) if per_agent_reward else (batch, steps, 1)
    done, terminated = random_flags(signal_shape, gen)
    return TensorDict(
        {
            "observation": torch.randn(batch, steps, agents, 3, generator=gen),
            "next": {
                "observation": torch.randn(batch, steps, agents, 3, generator=gen),
                "reward": torch.randn(signal_shape, generator=gen),
                "done": done,
                "terminated": terminated,
            },
        },
        [batch, steps],
    )


@pytest.mark.parametrize("average_gae", [False, True])
@pytest.mark.parametrize("per_agent_reward", [False, True])
def test_magae_module_parity(average_gae, per_agent_reward):
    torch.manual_seed(4)
    critic = TensorDictModule(nn.Linear(3, 1), ["observation"], ["state_value"])
    td = make_marl_rollout(per_agent_reward=per_agent_reward)
    kwargs = {"gamma": 0.97, "lmbda": 0.9, "average_gae": average_gae}
    ours = MultiAgentGAE(value_network=critic, **kwargs)(td.clone())
    theirs = torchrl_value.MultiAgentGAE(value_network=critic, **kwargs)(td.clone())
    assert ours["advantage"].shape == (4, 11, 3, 1)
    for key in ("advantage", "value_target", "state_value"):
        torch.testing.assert_close(ours[key], theirs[key], **TOL)


def test_magae_functional_parity_and_agent_dim():
    gen = torch.Generator().manual_seed(9)
    value, next_value = torch.randn(2, 3, 20, 1, generator=gen), torch.randn(2, 3, 20, 1)
    reward = torch.randn(2, 20, 1, generator=gen)
    done, terminated = random_flags((2, 20, 1), gen)
    # agents at dim 1, time at dim 2: TorchRL's module with agent_dim=1 / time_dim=1 of a
    # [B, n_agents, T] tensordict computes the same thing
    ours = multi_agent_generalized_advantage_estimate(
        0.9, 0.8, value, next_value, reward, done, terminated, agent_dim=1, time_dim=2
    )
    td = TensorDict(
        {
            "state_value": value,
            "next": {
                "state_value": next_value,
                "reward": reward.unsqueeze(1).expand(2, 3, 20, 1),
                "done": done.unsqueeze(1).expand(2, 3, 20, 1),
                "terminated": terminated.unsqueeze(1).expand(2, 3, 20, 1),
            },
        },
        [2, 3, 20],
    )
    theirs = torchrl_value.GAE(gamma=0.9, lmbda=0.8, value_network=None, time_dim=2)(td)
    torch.testing.assert_close(ours[0], theirs["advantage"], **TOL)
    torch.testing.assert_close(ours[1], theirs["value_target"], **TOL)


def test_magae_team_mask_equals_cut_rollout():
    # a team-level [B, T] mask pads every agent alike: the padded row's valid part equals
    # the row cut there
    td = make_marl_rollout(batch=2, steps=8)
    td["state_value"] = torch.randn(2, 8, 3, 1)
    td["next", "state_value"] = torch.randn(2, 8, 3, 1)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    td["mask"] = mask
    est = MultiAgentGAE(gamma=0.9, lmbda=0.8, value_network=None).set_keys(mask="mask")
    out = est(td.clone())
    cut = MultiAgentGAE(gamma=0.9, lmbda=0.8, value_network=None)(td[1:, :5].clone())
    torch.testing.assert_close(out["advantage"][1:, :5], cut["advantage"])
    assert (out["advantage"][1, 5:] == 0).all()
    full = MultiAgentGAE(gamma=0.9, lmbda=0.8, value_network=None)(td[:1].clone())
    torch.testing.assert_close(out["advantage"][:1], full["advantage"])


def test_vtrace_gives_the_actor_no_gradient():
    actor = make_gaussian_actor()
    critic = TensorDictModule(nn.Linear(3, 1), ["observation"], ["state_value"])
    td = make_vtrace_rollout(actor)
    est = VTrace(gamma=0.9, actor_network=actor, value_network=critic, differentiable=True)
    out = est(td)
    out["advantage"].sum().backward()
    assert all(p.grad is None for p in actor.parameters())
    assert critic.module.weight.grad is not None  # differentiable: V(s_t) keeps its graph


def test_in_and_out_keys_match_torchrl():
    critic = TensorDictModule(nn.Linear(3, 1), ["observation"], ["state_value"])
    ours = MultiAgentGAE(gamma=0.9, lmbda=0.9, value_network=critic)
    theirs = torchrl_value.MultiAgentGAE(gamma=0.9, lmbda=0.9, value_network=critic)
    assert ours.in_keys == theirs.in_keys
    assert ours.out_keys == theirs.out_keys == ["advantage", "value_target"]
    actor = make_gaussian_actor()
    ours = VTrace(gamma=0.9, actor_network=actor, value_network=critic)
    theirs = torchrl_value.VTrace(gamma=0.9, actor_network=actor, value_network=critic)
    # TorchRL lists the behaviour log-prob; ppokit also reads the stored action (it scores
    # it) and the actor's inputs
    assert ours.in_keys[: len(theirs.in_keys)] == theirs.in_keys
    assert ours.in_keys[len(theirs.in_keys) :] == ["action"]
    ours.set_keys(mask="valid", reward="r")
    assert ("next", "r") in ours.in_keys and "valid" in ours.in_keys
    no_net = MultiAgentGAE(gamma=0.9, lmbda=0.9, value_network=None)
    assert no_net.in_keys == [
        "state_value",
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
        ("next", "state_value"),
    ]
