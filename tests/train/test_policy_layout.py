"""``load_policy`` rebuilds the network layout the run trained, field for field."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict

from ppokit.train.deploy.policy import load_policy
from ppokit.train.trainer import PPOTrainer


class TinyImageEnv(gym.Env):
    """Random 36x36 grey frames (the smallest the Nature CNN reads), two actions, 8 steps."""

    observation_space = spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.integers(0, 256, (36, 36, 1), dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.integers(0, 256, (36, 36, 1), dtype=np.uint8)
        return obs, float(action), False, self.t >= 8, {}


@pytest.mark.parametrize("share_trunk", [True, False])
def test_load_policy_rebuilds_a_cnn_with_or_without_a_shared_trunk(tmp_path, share_trunk):
    trainer = PPOTrainer(
        env=TinyImageEnv,
        run_dir=tmp_path,
        num_envs=2,
        num_steps=8,
        num_epochs=1,
        total_steps=32,
        eval_episodes=0,
        progress=False,
        share_trunk=share_trunk,
    )
    trainer.train()
    actor, _, cfg = load_policy(tmp_path, env=TinyImageEnv)
    assert cfg.share_trunk is share_trunk
    obs = torch.randint(0, 256, (3, 36, 36, 1), dtype=torch.uint8)
    with torch.no_grad():
        want = trainer.actor(TensorDict({"observation": obs}, [3]))["logits"]
        got = actor(TensorDict({"observation": obs}, [3]))["logits"]
    torch.testing.assert_close(got, want)
