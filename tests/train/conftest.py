"""Tiny Gymnasium environments registered for the training tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces


class CounterEnv(gym.Env):
    """Observation = steps taken in the episode; terminates after ``length`` steps (or is cut
    by a TimeLimit when ``terminate=False``). Reward 1 per step."""

    def __init__(self, length: int = 3, terminate: bool = True) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.length = length
        self.terminate = terminate
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate and self.t >= self.length
        return np.array([float(self.t)], np.float32), 1.0, terminated, False, {}


class ConstantEnv(gym.Env):
    """Constant observation and reward 1: the infinite-horizon task of SB3's
    ``test_infinite_horizon``. With ``terminate_at`` it ends in a terminal state instead."""

    def __init__(self, terminate_at: int | None = None) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.terminate_at = terminate_at
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.ones(1, np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.ones(1, np.float32), 1.0, terminated, False, {}


class EchoBoxEnv(gym.Env):
    """Continuous actions in [-1, 1]^2; the observation echoes the action it received."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.asarray(action, np.float32).copy(), 0.0, False, False, {}


class MultiDiscreteEnv(gym.Env):
    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.MultiDiscrete([2, 3])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


class TextObsEnv(gym.Env):
    """A Text observation: a space no ppokit network takes (refused before any work)."""

    def __init__(self) -> None:
        self.observation_space = spaces.Text(5)
        self.action_space = spaces.Discrete(2)


def _register(env_id: str, entry_point, **kwargs) -> None:
    if env_id not in gym.envs.registry:
        gym.register(env_id, entry_point=entry_point, **kwargs)


_register("PpokitTest/Counter-v0", CounterEnv, kwargs={"length": 3})
_register(
    "PpokitTest/CounterTruncated-v0", CounterEnv, kwargs={"terminate": False}, max_episode_steps=4
)
_register("PpokitTest/ConstantTruncated-v0", ConstantEnv, max_episode_steps=20)
_register("PpokitTest/ConstantTerminated-v0", ConstantEnv, kwargs={"terminate_at": 20})
_register("PpokitTest/EchoBox-v0", EchoBoxEnv)
_register("PpokitTest/MultiDiscrete-v0", MultiDiscreteEnv)
_register("PpokitTest/TextObs-v0", TextObsEnv)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield
