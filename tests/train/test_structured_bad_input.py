"""The issue's bad inputs, through the entry points a user calls: each a clear error."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from structured_toys import InfoMaskGame

from ppokit.envs.structured import StructuredVecEnv
from ppokit.train.structured.training import build_structured_actor_critic
from ppokit.train.trainer import PPOTrainer


class _Spaces(gym.Env):
    """An env with the given spaces, observations sampled from its space (10-step episodes)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's own layout)

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


def test_a_mask_of_the_wrong_shape_is_refused_with_the_expected_one():
    obs = spaces.Dict({"x": spaces.Box(-1, 1, (2,)), "action_mask": spaces.MultiBinary(3)})
    with pytest.raises(ValueError, match=r"mask space has shape \(3,\), expected \(4,\)"):
        StructuredVecEnv(lambda: _Spaces(obs, spaces.Discrete(4)), 1)
    # MultiBinary(3): (allow 0, allow 1) per flag, 6 flags
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(6,\).*2n flags"):
        StructuredVecEnv(lambda: _Spaces(obs, spaces.MultiBinary(3)), 1)


def _short(env: Any, run_dir: Any) -> PPOTrainer:
    """A trainer of 2 envs x 16 steps (only its first rollout is collected)."""
    return PPOTrainer(
        env=env, run_dir=run_dir, total_steps=32, num_envs=2, num_steps=16, progress=False
    )


def test_a_float_mask_is_refused_when_training_starts(tmp_path):
    trainer = _short(lambda: InfoMaskGame(mask_dtype=np.float32), tmp_path)
    with pytest.raises(ValueError, match=r"info\['action_mask'\] has dtype float32; expected bool"):
        trainer.collect()


def test_a_state_without_a_legal_action_names_the_env_and_step_not_a_nan(tmp_path):
    trainer = _short(lambda: InfoMaskGame(empty_at=3), tmp_path)
    # both envs play legal moves (the mask), so both reach their 3rd step together
    with pytest.raises(ValueError, match=r"action_mask'\] of env 0 at step 3 allows no action"):
        trainer.collect()


def test_an_unsupported_dict_leaf_is_named(tmp_path):
    obs = spaces.Dict({"pos": spaces.Box(-1, 1, (2,)), "note": spaces.Text(8)})
    with pytest.raises(ValueError, match=r"observation leaf 'note' is Text"):
        PPOTrainer(
            env=lambda: _Spaces(obs, spaces.Discrete(2)),
            run_dir=tmp_path,
            total_steps=32,
            progress=False,
        )


def test_infinite_box_bounds_are_refused_by_a_bounded_head():
    obs = spaces.Dict({"pos": spaces.Box(-1, 1, (2,))})
    act = spaces.Dict({"push": spaces.Box(-np.inf, np.inf, (2,), np.float32)})
    with StructuredVecEnv(lambda: _Spaces(obs, act), 1) as env:
        build_structured_actor_critic(env)  # a Gaussian (clipped when sent): fine
        with pytest.raises(
            ValueError, match=r"'push' is a Box with infinite bounds.*bounded=False"
        ):
            build_structured_actor_critic(env, bounded=True)
