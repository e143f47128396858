"""Partially observed classic-control tasks: the velocities hidden, so a policy needs memory.

Registered Gymnasium ids (on ``import ppokit.envs``):

- ``ppokit/CartPoleNoVel-v1``: ``CartPole-v1`` observing ``[x, theta]`` (cart velocity and
  pole angular velocity dropped), 500 steps.
- ``ppokit/PendulumNoVel-v1``: ``Pendulum-v1`` observing ``[cos theta, sin theta]`` (angular
  velocity dropped), 200 steps.

These are the POMDP variants of rl-baselines3-zoo's RecurrentPPO benchmarks (its
``CartPoleNoVel-v1`` and ``PendulumNoVel-v1``), the anchors of ``docs/guide/recurrent.md``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["KeepObservation", "make_cartpole_novel", "make_pendulum_novel", "register_pomdp_envs"]

POMDP_IDS = ("ppokit/CartPoleNoVel-v1", "ppokit/PendulumNoVel-v1")


class KeepObservation(gym.ObservationWrapper[np.ndarray, Any, np.ndarray]):
    """Observe only the entries ``keep`` of a flat Box observation.

    Example:
        >>> env = KeepObservation(gym.make("CartPole-v1"), (0, 2))
        >>> env.observation_space.shape, env.reset(seed=0)[0].shape
        ((2,), (2,))
    """

    def __init__(self, env: gym.Env[np.ndarray, Any], keep: tuple[int, ...]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"KeepObservation needs a flat Box observation space, got {space}.")
        self.keep = np.asarray(keep, dtype=np.int64)
        self.observation_space = gym.spaces.Box(
            space.low[self.keep], space.high[self.keep], dtype=space.dtype
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


def make_cartpole_novel(**kwargs: Any) -> gym.Env[np.ndarray, Any]:
    """CartPole observing ``[x, theta]`` (the velocities at indices 1 and 3 dropped)."""
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    return KeepObservation(CartPoleEnv(**kwargs), (0, 2))


def make_pendulum_novel(**kwargs: Any) -> gym.Env[np.ndarray, Any]:
    """Pendulum observing ``[cos theta, sin theta]`` (the angular velocity dropped)."""
    from gymnasium.envs.classic_control.pendulum import PendulumEnv

    return KeepObservation(PendulumEnv(**kwargs), (0, 1))


def register_pomdp_envs() -> None:
    """Register :data:`POMDP_IDS` with Gymnasium (once; later calls do nothing).

    Example:
        >>> register_pomdp_envs()
        >>> gym.make("ppokit/CartPoleNoVel-v1").observation_space.shape
        (2,)
    """
    if POMDP_IDS[0] in gym.registry:
        return
    gym.register(
        id=POMDP_IDS[0],
        entry_point="ppokit.envs.pomdp:make_cartpole_novel",
        max_episode_steps=500,
        reward_threshold=475.0,
    )
    gym.register(
        id=POMDP_IDS[1],
        entry_point="ppokit.envs.pomdp:make_pendulum_novel",
        max_episode_steps=200,
    )
