"""Vector-env adapter and collector: keys, shapes, dtypes, true final observations, clipping."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from ppokit.envs.gym import GymVecEnv, check_env_id, check_spaces
from ppokit.envs.spaces import check_flat_spaces
from ppokit.train.collect.collector import RolloutCollector, tensor_policy
from ppokit.train.normalization import ObservationNormalizer
from ppokit.train.trainer import build_actor_critic


def _const_policy(action: torch.Tensor) -> TensorDictModule:
    """A TensorDict policy that always takes ``action`` (batched to the obs batch)."""

    def fn(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = obs.shape[0]
        return action.expand(n, *action.shape).clone(), torch.full((n,), -0.5)

    return TensorDictModule(fn, ["observation"], ["action", "action_log_prob"])


def test_rollout_keys_shapes_dtypes_cartpole():
    env = GymVecEnv("CartPole-v1", 3)
    actor, _ = build_actor_critic(env)
    col = RolloutCollector(env, actor, num_steps=7, seed=0)
    ro = col.collect()
    env.close()
    assert ro.batch_size == torch.Size([3, 7])
    expected = {
        "observation": ((3, 7, 4), torch.float32),
        "action": ((3, 7), torch.int64),
        "action_log_prob": ((3, 7), torch.float32),
        ("next", "observation"): ((3, 7, 4), torch.float32),
        ("next", "reward"): ((3, 7, 1), torch.float32),
        ("next", "terminated"): ((3, 7, 1), torch.bool),
        ("next", "truncated"): ((3, 7, 1), torch.bool),
        ("next", "done"): ((3, 7, 1), torch.bool),
    }
    for key, (shape, dtype) in expected.items():
        assert ro.get(key).shape == torch.Size(shape), key
        assert ro.get(key).dtype == dtype, key
    # CartPole pays 1 per step; log-probs of a 2-action policy lie in (log 0, 0]
    assert torch.equal(ro["next", "reward"], torch.ones(3, 7, 1))
    assert (ro["action_log_prob"] <= 0).all() and (ro["action_log_prob"] > -10).all()
    assert not ro["action_log_prob"].requires_grad
    # where no episode ended, the next observation is the following step's observation
    same = ~ro["next", "done"][:, :-1, 0]
    assert torch.equal(ro["next", "observation"][:, :-1][same], ro["observation"][:, 1:][same])


def test_continuous_rollout_shapes_and_log_prob_matches_distribution():
    env = GymVecEnv("Pendulum-v1", 2)
    actor, _ = build_actor_critic(env)
    ro = RolloutCollector(env, actor, num_steps=5, seed=0).collect()
    env.close()
    assert ro["action"].shape == (2, 5, 1) and ro["action"].dtype == torch.float32
    assert ro["action_log_prob"].shape == (2, 5)
    # recompute log pi(a|s) independently: Normal(loc, exp(log_std)) summed over action dims
    with torch.no_grad():
        params = actor.module[0](TensorDict({"observation": ro["observation"]}, [2, 5]))
        ref = torch.distributions.Normal(params["loc"], params["scale"]).log_prob(ro["action"])
    torch.testing.assert_close(ro["action_log_prob"], ref.sum(-1))


def test_true_final_observation_at_auto_reset_terminated():
    # Counter: obs = steps so far, terminates after 3 steps. Episode: obs 0,1,2 -> next 1,2,3.
    env = GymVecEnv("PpokitTest/Counter-v0", 2)
    ro = RolloutCollector(env, _const_policy(torch.tensor(0)), num_steps=7, seed=0).collect()
    env.close()
    obs = ro["observation"][0, :, 0].tolist()
    nxt = ro["next", "observation"][0, :, 0].tolist()
    assert obs == [0, 1, 2, 0, 1, 2, 0]
    assert nxt == [1, 2, 3, 1, 2, 3, 1]  # the true final obs 3, not the reset obs 0
    assert ro["next", "terminated"][0, :, 0].tolist() == [False, False, True] * 2 + [False]
    assert not ro["next", "truncated"].any()
    assert torch.equal(ro["next", "done"], ro["next", "terminated"])


def test_true_final_observation_at_time_limit_is_truncated_not_terminated():
    # never terminates; TimeLimit cuts at 4 steps -> truncated at t = 3, final obs 4
    env = GymVecEnv("PpokitTest/CounterTruncated-v0", 1)
    ro = RolloutCollector(env, _const_policy(torch.tensor(1)), num_steps=6, seed=0).collect()
    env.close()
    assert ro["observation"][0, :, 0].tolist() == [0, 1, 2, 3, 0, 1]
    assert ro["next", "observation"][0, :, 0].tolist() == [1, 2, 3, 4, 1, 2]
    assert ro["next", "truncated"][0, :, 0].tolist() == [False, False, False, True, False, False]
    assert not ro["next", "terminated"].any()
    assert torch.equal(ro["next", "done"], ro["next", "truncated"])


def test_box_actions_stored_as_sampled_and_clipped_only_for_the_env():
    env = GymVecEnv("PpokitTest/EchoBox-v0", 2)
    ro = RolloutCollector(
        env, _const_policy(torch.tensor([5.0, -0.25])), num_steps=3, seed=0
    ).collect()
    env.close()
    assert torch.equal(ro["action"], torch.tensor([5.0, -0.25]).expand(2, 3, 2))
    # the env echoes what it received: clipped to the [-1, 1] bounds
    assert torch.equal(ro["next", "observation"], torch.tensor([1.0, -0.25]).expand(2, 3, 2))


def test_rollout_tensordict_is_preallocated_and_reused():
    env = GymVecEnv("CartPole-v1", 2)
    actor, _ = build_actor_critic(env)
    col = RolloutCollector(env, actor, num_steps=4, seed=0)
    first = col.collect()
    ptrs = {k: v.data_ptr() for k, v in first.items(True, True)}
    first_obs = first["observation"].clone()
    second = col.collect()
    env.close()
    assert second is first
    assert {k: v.data_ptr() for k, v in second.items(True, True)} == ptrs
    assert not torch.equal(second["observation"], first_obs)  # new data, same storage
    assert col.env_steps == 16


def test_tensor_fast_path_samples_like_the_tensordict_actor():
    env = GymVecEnv("Pendulum-v1", 1)
    actor, _ = build_actor_critic(env)
    env.close()
    act = tensor_policy(actor)
    assert act is not None
    obs = torch.randn(6, 3)
    torch.manual_seed(3)
    a1, lp1 = act(obs)
    torch.manual_seed(3)
    from tensordict.nn import InteractionType, set_interaction_type

    with set_interaction_type(InteractionType.RANDOM):
        td = actor(TensorDict({"observation": obs}, [6]))
    torch.testing.assert_close(a1, td["action"])
    torch.testing.assert_close(lp1, td["action_log_prob"])
    assert tensor_policy(_const_policy(torch.tensor(0))) is None  # not a two-stage actor


def test_observation_normalizer_applied_to_obs_and_next_obs_consistently():
    env = GymVecEnv("CartPole-v1", 2)
    actor, _ = build_actor_critic(env)
    norm = ObservationNormalizer((4,), clip=10.0)
    ro = RolloutCollector(env, actor, num_steps=16, obs_normalizer=norm, seed=0).collect()
    env.close()
    same = ~ro["next", "done"][:, :-1, 0]
    assert torch.equal(ro["next", "observation"][:, :-1][same], ro["observation"][:, 1:][same])
    # normalised values: roughly standardised over the rollout, within the clip
    assert ro["observation"].abs().max() <= 10.0
    assert ro["observation"].std() < 3.0
    assert norm.rms.count > 30  # one update per step of two envs, plus the reset


def test_episode_stats_report_raw_returns():
    env = GymVecEnv("PpokitTest/Counter-v0", 2)
    col = RolloutCollector(env, _const_policy(torch.tensor(0)), num_steps=7, seed=0)
    col.collect()
    env.close()
    stats = col.pop_episode_stats()
    assert stats.returns == [3.0, 3.0, 3.0, 3.0] and stats.lengths == [3, 3, 3, 3]
    assert col.pop_episode_stats().returns == []


def test_env_id_errors_suggest_close_names():
    with pytest.raises(ValueError, match=r"Unknown environment id 'CartPol-v1'.*CartPole-v1"):
        check_env_id("CartPol-v1")
    with pytest.raises(ValueError, match=r"Hopper-v5"):
        check_env_id("hopper")
    with pytest.raises(ValueError, match="supports Discrete and 1-D Box"):
        GymVecEnv("PpokitTest/MultiDiscrete-v0", 1)


def test_unsupported_spaces_and_bad_arguments():
    from gymnasium import spaces

    with pytest.raises(ValueError, match="flat Box observation"):
        check_flat_spaces(spaces.Discrete(3), spaces.Discrete(2))
    with pytest.raises(ValueError, match="starting at 0"):
        check_spaces(spaces.Box(-1, 1, (2,)), spaces.Discrete(3, start=1))
    with pytest.raises(ValueError, match="mode must be 'sync' or 'async'"):
        GymVecEnv("CartPole-v1", 1, mode="threads")
    with pytest.raises(ValueError, match="num_envs must be positive"):
        GymVecEnv("CartPole-v1", 0)


def test_async_vector_env_gives_the_same_final_observations():
    env = GymVecEnv("PpokitTest/Counter-v0", 2, mode="async")
    ro = RolloutCollector(env, _const_policy(torch.tensor(0)), num_steps=4, seed=0).collect()
    env.close()
    assert ro["next", "observation"][:, :, 0].tolist() == [[1, 2, 3, 1]] * 2
    assert ro["observation"][:, :, 0].tolist() == [[0, 1, 2, 0]] * 2
