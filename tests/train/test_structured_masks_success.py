"""MultiBinary action masks end to end, and the success rate evaluation reports."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from structured_toys import TOY, InvertBits, MaskedBits, MatchMultiDiscrete
from tensordict import TensorDict

from ppokit.envs.gym import GymVecEnv
from ppokit.envs.structured import StructuredVecEnv
from ppokit.train.build import build_actor_critic
from ppokit.train.evaluation.evaluate import evaluate_policy
from ppokit.train.structured.training import build_structured_actor_critic
from ppokit.train.trainer import PPOTrainer


def test_a_multibinary_mask_is_read_per_flag_and_a_stuck_flag_names_the_step():
    with StructuredVecEnv(MaskedBits, 2) as env:
        assert env.mask_size == 8  # (allow 0, allow 1) for each of 4 flags
        obs = env.reset(seed=0)
        pairs = obs["action_mask"].reshape(2, 4, 2)
        # each state forces one flag to 0 and another to 1; the other two are free
        assert pairs.all(-1).sum(-1).tolist() == [2, 2]
        assert (~pairs[..., 1]).sum(-1).tolist() == [1, 1]
    with StructuredVecEnv(lambda: MaskedBits(stuck_at=1), 2) as env:
        pairs = env.reset(seed=0)["action_mask"].reshape(2, 4, 2)
        legal = (~pairs[..., 0]).float()  # 1 where only 1 is allowed, else 0
        action = TensorDict({"action": legal}, [2])
        with pytest.raises(
            ValueError, match=r"flag 2 of head 0 has no legal choice in env 0 at step 1"
        ):
            env.step(action)


def test_masked_multibinary_training_plays_no_forbidden_value(tmp_path):
    trainer = PPOTrainer(env=MaskedBits, run_dir=tmp_path, total_steps=512, **TOY)
    rollout = trainer.collect()
    # a forbidden value would have scored -1: with the mask every reward is in [0, 1]
    assert (rollout["next", "reward"] >= 0).all()
    pairs = rollout["observation", "action_mask"].reshape(8, 32, 4, 2)
    allowed = pairs.gather(-1, rollout["action"].long().unsqueeze(-1)).squeeze(-1)
    assert allowed.all()
    trainer.train()
    with StructuredVecEnv(MaskedBits, 20) as venv:
        res = evaluate_policy(trainer.actor, venv.env, episodes=20, seed=0)
        assert sum(venv.env.get_attr("illegal")) == 0
    assert min(res.returns) >= 0 and res.lengths == [5] * 20


def test_success_rate_is_the_fraction_of_episodes_reporting_is_success():
    with StructuredVecEnv(MatchMultiDiscrete, 1) as env:
        torch.manual_seed(0)
        actor, _ = build_structured_actor_critic(env)
    res = evaluate_policy(actor, MatchMultiDiscrete, episodes=60, seed=0)
    # MatchMultiDiscrete reports success exactly when both entries are right: return 1.0
    expected = float(np.mean(np.asarray(res.returns) == 1.0))
    assert res.successes is not None and len(res.successes) == 60
    assert res.success_rate == pytest.approx(expected)
    assert 0 < expected < 1  # an untrained policy: some of each, so the test can fail
    # an env without the flag reports none
    with StructuredVecEnv(InvertBits, 1) as env:
        bits_actor, _ = build_structured_actor_critic(env)
    assert evaluate_policy(bits_actor, InvertBits, episodes=3).success_rate is None


class _GuessXor(gym.Env):
    """Flat: Box(2) observation, Discrete(2) action; one step, success = the action is
    whether the two entries' signs differ (an untrained policy gets it right only sometimes)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's own layout)

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._x = np.zeros(2, np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._x = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._x.copy(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        right = int(action) == int((self._x[0] > 0) != (self._x[1] > 0))
        return self._x.copy(), float(right), True, False, {"is_success": right}


def test_the_flat_path_reports_the_success_rate_too():
    with GymVecEnv(_GuessXor, 1) as env:
        torch.manual_seed(0)
        actor, _ = build_actor_critic(env)
    res = evaluate_policy(actor, _GuessXor, episodes=40, seed=0)
    # success is a right guess, which is exactly a return of 1
    assert res.successes == [r == 1.0 for r in res.returns]
    assert 0 < sum(res.successes) < 40  # an untrained policy: some of each
