"""The collector's tensor fast path (TensorPolicy) against the TensorDict path it replaces."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    set_interaction_type,
)
from torch import nn

from ppokit.envs.gym import GymVecEnv
from ppokit.modules.actors import ProbabilisticActor
from ppokit.modules.distributions import (
    Categorical,
    IndependentNormal,
    NormalParamExtractor,
    TanhNormal,
)
from ppokit.train.collect.collector import RolloutCollector, TensorPolicy
from ppokit.train.normalization import ObservationNormalizer, RewardScaler
from ppokit.train.trainer import build_actor_critic

torch.set_num_threads(1)


def _force_tensordict_path(actor: nn.Module) -> list[int]:
    """A no-op forward hook: the fast path steps aside; returns a list counting the calls."""
    calls: list[int] = []
    actor.register_forward_hook(lambda *args: calls.append(1))
    return calls


def _rollout(env_id: str, num_envs: int, *, slow: bool, normalize: bool) -> TensorDict:
    env = GymVecEnv(env_id, num_envs)
    torch.manual_seed(0)
    actor, _ = build_actor_critic(env)
    calls = _force_tensordict_path(actor) if slow else None
    norm = ObservationNormalizer(env.obs_shape) if normalize else None
    scaler = RewardScaler(num_envs, gamma=0.99) if normalize else None
    col = RolloutCollector(
        env, actor, num_steps=40, obs_normalizer=norm, reward_scaler=scaler, seed=3
    )
    assert (col._act is not None) and (col._act.usable() is not slow)
    torch.manual_seed(123)
    ro = col.collect().clone()
    env.close()
    if slow:
        assert len(calls) == 40  # the TensorDict actor really ran, once per step
    return ro


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("normalize", [False, True])
def test_fast_and_tensordict_paths_give_identical_rollouts(env_id, normalize):
    # same networks, same seeds, same random stream: every stored number is bit-identical
    fast = _rollout(env_id, 3, slow=False, normalize=normalize)
    slow = _rollout(env_id, 3, slow=True, normalize=normalize)
    assert set(fast.keys(True, True)) == set(slow.keys(True, True))
    for key in fast.keys(True, True):
        assert torch.equal(fast.get(key), slow.get(key)), key


def test_categorical_log_prob_matches_a_hand_computed_softmax():
    # logits [0, log 3] -> p = [1/4, 3/4]; log-probs log(1/4) = -1.3863, log(3/4) = -0.2877
    net = nn.Linear(1, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, math.log(3.0)]))
    actor = ProbabilisticActor(
        TensorDictModule(net, ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    act = TensorPolicy.for_actor(actor)
    assert act is not None and act.lean == "categorical"
    torch.manual_seed(0)
    action, log_prob = act(torch.zeros(20000, 1))
    assert action.dtype == torch.int64 and action.shape == (20000,)
    expected = {0: math.log(0.25), 1: math.log(0.75)}
    for a, lp in zip(action[:50].tolist(), log_prob[:50].tolist()):
        assert lp == pytest.approx(expected[a], abs=1e-6)
    # the sampler draws with the right frequencies: 3/4 of ones, +- 5 standard errors
    assert abs(action.float().mean().item() - 0.75) < 5 * math.sqrt(0.75 * 0.25 / 20000)


def test_normal_sample_and_log_prob_match_an_independent_formula():
    # loc = [1, -2], scale = [0.5, 2]; log N(a) = sum_i -(a_i - m_i)^2 / (2 s_i^2) - log s_i
    # - log sqrt(2 pi)
    loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])

    class Head(nn.Module):
        def forward(self, obs):
            n = obs.shape[0]
            return loc.expand(n, 2), scale.expand(n, 2)

    actor = ProbabilisticActor(
        TensorDictModule(Head(), ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=IndependentNormal,
        return_log_prob=True,
    )
    act = TensorPolicy.for_actor(actor)
    assert act is not None and act.lean == "normal"
    torch.manual_seed(0)
    action, log_prob = act(torch.zeros(20000, 1))
    assert action.shape == (20000, 2) and log_prob.shape == (20000,)
    a = action[:5].tolist()
    for i in range(5):
        ref = sum(
            -((a[i][j] - loc[j].item()) ** 2) / (2 * scale[j].item() ** 2)
            - math.log(scale[j].item())
            - 0.5 * math.log(2 * math.pi)
            for j in range(2)
        )
        assert log_prob[i].item() == pytest.approx(ref, abs=1e-5)
    torch.testing.assert_close(action.mean(0), loc, atol=0.05, rtol=0)
    torch.testing.assert_close(action.std(0), scale, atol=0.05, rtol=0)


def test_other_distributions_sample_through_the_class_like_tensordict():
    # TanhNormal is not special-cased: built per step, rsample() + log_prob, as tensordict does
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 4)

        def forward(self, obs):
            loc, raw = self.net(obs).chunk(2, -1)
            return loc, raw.exp()

    actor = ProbabilisticActor(
        TensorDictModule(Head(), ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        return_log_prob=True,
    )
    act = TensorPolicy.for_actor(actor)
    assert act is not None and act.lean is None
    obs = torch.randn(5, 3)
    torch.manual_seed(7)
    action, log_prob = act(obs)
    torch.manual_seed(7)
    with torch.no_grad(), set_interaction_type(InteractionType.RANDOM):
        td = actor(TensorDict(observation=obs, batch_size=[5]))
    assert torch.equal(action, td["action"]) and torch.equal(log_prob, td["action_log_prob"])


def _same_as_tensordict(actor, obs, seed):
    act = TensorPolicy.for_actor(actor)
    assert act is not None and act.usable()
    torch.manual_seed(seed)
    action, log_prob = act(obs)
    torch.manual_seed(seed)
    with torch.no_grad(), set_interaction_type(InteractionType.RANDOM):
        td = actor(TensorDict(observation=obs, batch_size=obs.shape[:1]))
    assert torch.equal(action, td["action"]) and torch.equal(log_prob, td["action_log_prob"])
    return act


def test_a_chain_of_networks_acts_like_the_tensordict_actor():
    # trunk -> head -> distribution: the networks run in order on the tensors they write
    torch.manual_seed(0)
    trunk = TensorDictModule(nn.Linear(3, 8), ["observation"], ["hidden"])
    head = TensorDictModule(
        nn.Sequential(nn.Tanh(), nn.Linear(8, 4), NormalParamExtractor()),
        ["hidden"],
        ["loc", "scale"],
    )
    sampler = ProbabilisticTensorDictModule(
        in_keys=["loc", "scale"],
        out_keys=["action"],
        distribution_class=IndependentNormal,
        return_log_prob=True,
        log_prob_key="action_log_prob",
    )
    actor = ProbabilisticTensorDictSequential(trunk, head, sampler)
    act = _same_as_tensordict(actor, torch.randn(5, 3), seed=11)
    assert act.lean == "normal"
    assert set(act.params(torch.randn(2, 3))) == {"loc", "scale"}


def test_dict_outputs_and_param_order_are_read_like_tensordict():
    # the network returns a dict; the distribution reads scale before loc
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 4)

        def forward(self, obs):
            loc, raw = self.net(obs).chunk(2, -1)
            return {"scale": raw.exp(), "loc": loc}

    actor = ProbabilisticActor(
        TensorDictModule(Head(), ["observation"], ["loc", "scale"]),
        in_keys=["scale", "loc"],
        distribution_class=IndependentNormal,
        return_log_prob=True,
    )
    _same_as_tensordict(actor, torch.randn(4, 3), seed=12)


def test_a_network_writing_the_wrong_batch_shape_is_named():
    class Bad(nn.Module):
        def forward(self, obs):
            return torch.zeros(obs.shape[0] + 1, 2)

    actor = ProbabilisticActor(
        TensorDictModule(Bad(), ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    with pytest.raises(
        ValueError,
        match=r"wrote 'logits' as Tensor \(4, 2\); expected a tensor "
        r"starting with the batch dim \(3,\)",
    ):
        TensorPolicy.for_actor(actor)(torch.zeros(3, 1))


def test_nan_logits_raise_the_distribution_error_before_the_env_steps():
    env = GymVecEnv("CartPole-v1", 2)
    actor, _ = build_actor_critic(env)
    with torch.no_grad():
        next(actor.parameters()).fill_(float("nan"))
    col = RolloutCollector(env, actor, num_steps=4, seed=0)
    with pytest.raises(ValueError, match="logits contain NaN"):
        col.collect()
    env.close()


def test_nan_gaussian_raises_and_the_env_never_receives_the_action():
    env = GymVecEnv("PpokitTest/EchoBox-v0", 2)
    received: list = []
    step = env.step_arrays
    env.step_arrays = lambda a: received.append(a.copy()) or step(a)
    actor, _ = build_actor_critic(env)
    with torch.no_grad():
        for p in actor.parameters():  # NaN loc (2 envs x 2 dims) and NaN scale
            p.fill_(float("nan"))
    col = RolloutCollector(env, actor, num_steps=4, seed=0)
    with pytest.raises(ValueError, match="loc has 4 NaN/Inf entries"):
        col.collect()
    env.close()
    assert received == []


def test_nan_or_non_positive_scale_raises_the_scale_error():
    env = GymVecEnv("PpokitTest/EchoBox-v0", 1)
    actor, _ = build_actor_critic(env)
    env.close()
    with torch.no_grad():
        actor.module[0].module.log_std.fill_(float("nan"))
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        TensorPolicy.for_actor(actor)(torch.zeros(3, 2))


def test_negative_and_zero_scale_raise_the_scale_error():
    class Head(nn.Module):
        def forward(self, obs):
            return torch.zeros(obs.shape[0], 1), torch.full((obs.shape[0], 1), -1.0)

    class ZeroScale(nn.Module):  # torch.normal accepts 0; the log-prob is NaN
        def forward(self, obs):
            return torch.zeros(obs.shape[0], 1), torch.zeros(obs.shape[0], 1)

    actor = ProbabilisticActor(
        TensorDictModule(Head(), ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=IndependentNormal,
        return_log_prob=True,
    )
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        TensorPolicy.for_actor(actor)(torch.zeros(3, 2))
    zero = ProbabilisticActor(
        TensorDictModule(ZeroScale(), ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=IndependentNormal,
        return_log_prob=True,
    )
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        TensorPolicy.for_actor(zero)(torch.zeros(3, 2))


def test_structures_the_fast_path_does_not_reproduce_are_left_to_tensordict():
    env = GymVecEnv("CartPole-v1", 1)
    actor, _ = build_actor_critic(env)
    env.close()
    assert TensorPolicy.for_actor(actor) is not None
    # another log-prob key than the collector stores, or a plain TensorDictModule policy
    assert TensorPolicy.for_actor(actor, log_prob_key="sample_log_prob") is None
    assert (
        TensorPolicy.for_actor(TensorDictModule(nn.Linear(4, 1), ["observation"], ["action"]))
        is None
    )
    assert TensorPolicy.for_actor(lambda td: td) is None
    # an actor reading another key than "observation"
    other = ProbabilisticActor(
        TensorDictModule(nn.Linear(4, 2), ["pixels"], ["logits"]),
        in_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    assert TensorPolicy.for_actor(other) is None


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_evaluation_fast_path_plays_the_same_episodes(env_id):
    from ppokit.train.evaluation.evaluate import deterministic_action, evaluate_policy

    env = GymVecEnv(env_id, 1)
    torch.manual_seed(1)
    actor, _ = build_actor_critic(env)
    env.close()
    policy = TensorPolicy.for_actor(actor, sampling=False)
    obs = torch.randn(7, *env.obs_shape)
    # the deterministic action is the argmax (discrete) or the mean (Gaussian) either way
    with torch.no_grad():
        ref = actor.get_dist(TensorDict(observation=obs, batch_size=[7])).deterministic_sample
    assert torch.equal(deterministic_action(actor, obs, policy=policy), ref)
    fast = evaluate_policy(actor, env_id, episodes=2, seed=5, max_steps=60)
    _force_tensordict_path(actor)  # a hook: evaluation now builds it through get_dist
    assert not policy.usable()
    slow = evaluate_policy(actor, env_id, episodes=2, seed=5, max_steps=60)
    assert fast == slow
