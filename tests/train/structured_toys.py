"""One-step toy tasks with a known optimum for the structured action heads.

Each episode is one decision: the observation says what the best action is and the reward
is the fraction of the action that is right, so the optimal mean return is exactly 1.0.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# trainer settings that learn the one-step toys in ~1k steps (contextual bandits: no credit
# assignment)
TOY: dict[str, Any] = dict(
    num_envs=8,
    num_steps=32,
    num_epochs=4,
    num_minibatches=2,
    lr=3e-3,
    entropy_coef=0.0,
    eval_episodes=0,
    progress=False,
)


class MatchMultiDiscrete(gym.Env):
    """Dict observation ``{"target": MultiDiscrete([3, 4]), "noise": Box(2)}``; action
    ``MultiDiscrete([3, 4])``; reward = fraction of entries equal to the target (optimum 1)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's own layout)
    nvec = (3, 4)

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {"target": spaces.MultiDiscrete(self.nvec), "noise": spaces.Box(-1, 1, (2,))}
        )
        self.action_space = spaces.MultiDiscrete(self.nvec)
        self._target = np.zeros(2, dtype=np.int64)

    def _obs(self) -> dict[str, np.ndarray]:
        noise = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return {"target": self._target.copy(), "noise": noise}

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._target = np.array([self.np_random.integers(n) for n in self.nvec])
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        right = np.asarray(action) == self._target
        # is_success as goal-conditioned tasks report it: every entry right
        return self._obs(), float(np.mean(right)), True, False, {"is_success": float(right.all())}


class InvertBits(gym.Env):
    """Observation 4 bits (Box); action MultiBinary(4); reward = fraction of action bits
    equal to the inverted observation bits (optimum 1)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's own layout)

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0, 1, (4,), np.float32)
        self.action_space = spaces.MultiBinary(4)
        self._bits = np.zeros(4, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._bits = self.np_random.integers(0, 2, 4).astype(np.float32)
        return self._bits.copy(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        reward = float(np.mean(np.asarray(action) == 1 - self._bits))
        return self._bits.copy(), reward, True, False, {}


class MaskedBits(gym.Env):
    """Observation 4 bits (Box); action MultiBinary(4) with a per-flag mask in
    ``info["action_mask"]`` (``[4, 2]``: allow 0, allow 1): each step one random flag is
    forced to 0 and another to 1. Reward per step = fraction of the free flags equal to the
    inverted observation bits, or -1 (and the episode ends) for a forbidden value; 5 steps.
    ``illegal`` counts the forbidden values played."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's own layout)

    def __init__(self, *, stuck_at: int | None = None) -> None:
        self.observation_space = spaces.Box(0, 1, (4,), np.float32)
        self.action_space = spaces.MultiBinary(4)
        self.stuck_at = stuck_at  # the step whose mask allows flag 2 neither value (an error)
        self._bits = np.zeros(4, dtype=np.float32)
        self._mask = np.ones((4, 2), dtype=np.int8)
        self._t = 0
        self.illegal = 0

    def _next(self) -> tuple[np.ndarray, dict[str, Any]]:
        self._bits = self.np_random.integers(0, 2, 4).astype(np.float32)
        self._mask = np.ones((4, 2), dtype=np.int8)
        zero, one = self.np_random.choice(4, 2, replace=False)
        self._mask[zero, 1] = 0  # flag `zero` may only be 0
        self._mask[one, 0] = 0  # flag `one` may only be 1
        if self._t == self.stuck_at:
            self._mask[2] = 0
        return self._bits.copy(), {"action_mask": self._mask.copy()}

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._next()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        action = np.asarray(action).astype(np.int64)
        allowed = self._mask[np.arange(4), action].astype(bool)
        free = self._mask.all(-1)
        self._t += 1
        if not allowed.all():
            self.illegal += 1
            obs, info = self._next()
            return obs, -1.0, True, False, info
        reward = float(np.mean(action[free] == 1 - self._bits[free]))
        obs, info = self._next()
        return obs, reward, False, self._t >= 5, info


class InfoMaskGame(gym.Env):
    """Box observation, Discrete(4) action, the legal actions in ``info["action_mask"]``
    (two of four, changing each step); an illegal action ends the episode with -1."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's own layout)

    def __init__(self, *, mask_dtype: Any = np.int8, empty_at: int | None = None) -> None:
        self.observation_space = spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = spaces.Discrete(4)
        self.mask_dtype = mask_dtype
        self.empty_at = empty_at
        self._t = 0
        self._mask = np.ones(4, dtype=np.int8)

    def _info(self) -> dict[str, Any]:
        self._mask = np.zeros(4, dtype=np.int8)
        if self._t != self.empty_at:
            self._mask[self.np_random.choice(4, 2, replace=False)] = 1
        return {"action_mask": self._mask.astype(self.mask_dtype)}

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(3, np.float32), self._info()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        legal = bool(self._mask[int(action)])
        self._t += 1
        obs = np.full(3, self._t / 10, np.float32)
        return obs, 1.0 if legal else -1.0, not legal or self._t >= 5, False, self._info()


class ImageAndMixedAction(gym.Env):
    """Dict observation ``{"img": uint8 (6, 6, 1), "vec": Box(3)}``; Dict action
    ``{"pick": Discrete(3), "push": Box(-1, 1, (2,))}``; reward = [pick == 1] minus the mean
    distance of ``push`` from 0.5 (optimum 1). Ten steps per episode."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's own layout)

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {
                "img": spaces.Box(0, 255, (6, 6, 1), np.uint8),
                "vec": spaces.Box(-1, 1, (3,), np.float32),
            }
        )
        self.action_space = spaces.Dict(
            {"pick": spaces.Discrete(3), "push": spaces.Box(-1, 1, (2,), np.float32)}
        )
        self._t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        img = self.np_random.integers(0, 256, (6, 6, 1)).astype(np.uint8)
        return {"img": img, "vec": self.np_random.uniform(-1, 1, 3).astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        assert self.action_space.contains(action), action  # the adapter's conversion
        self._t += 1
        push = np.asarray(action["push"])
        reward = float(action["pick"] == 1) - float(np.abs(push - 0.5).mean())
        return self._obs(), reward, False, self._t >= 10, {}
