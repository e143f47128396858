"""A tiny image environment whose episodes both terminate and get truncated."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class EndingImageEnv(gym.Env):
    """Random 36x36 grey frames (the smallest the Nature CNN reads), two actions.

    An episode terminates at a random step from the 3rd on (probability 0.3 per step) or is
    truncated at the 6th: short rollouts see both kinds of end, with true final frames that
    differ from the reset frames that follow them.
    """

    observation_space = spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def _frame(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (36, 36, 1), dtype=np.uint8)

    def step(self, action):
        self.t += 1
        terminated = self.t >= 3 and bool(self.np_random.random() < 0.3)
        return self._frame(), float(action), terminated, self.t >= 6 and not terminated, {}
