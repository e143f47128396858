"""Gymnasium vector environments seen as torch tensors and TensorDict steps.

Gymnasium >= 1.0 vector envs reset a finished sub-environment on the step *after* ``done`` by
default (autoreset mode NEXT_STEP), which makes that extra step a no-op transition that naive
collectors store as real data. :class:`GymVecEnv` builds the vector env with
``AutoresetMode.SAME_STEP`` instead: the reset happens inside the step that ends the episode,
the observation returned is already the first one of the next episode, and the true last
observation arrives in ``info["final_obs"]``. Both are returned, so a time-limit cut can
bootstrap from ``V(final observation)`` while the policy acts on the new episode.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from tensordict import TensorDict

from ppokit.envs.images import is_image_space
from ppokit.envs.sources import EnvSource, check_env_id, env_label, make_vector_env
from ppokit.envs.spaces import check_flat_spaces, check_spaces

__all__ = ["GymVecEnv", "StepResult", "check_env_id", "check_spaces"]


class StepResult(NamedTuple):
    """One vector step as tensors (``N`` = number of environments).

    Attributes:
        next_obs: ``[N, *obs]`` float32 observation after the action; the TRUE final
            observation where the episode ended.
        obs: ``[N, *obs]`` float32 observation to act on next (the reset one where it ended).
        reward: ``[N]`` float32.
        terminated: ``[N]`` bool, reached a terminal state (no bootstrap).
        truncated: ``[N]`` bool, cut by a time limit (bootstrap from ``next_obs``).
    """

    next_obs: torch.Tensor
    obs: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor


class GymVecEnv:
    """A Gymnasium vector env stepping with torch tensors, true final observations kept.

    Args:
        env: a Gymnasium id (``"module:EnvId"`` imports ``module`` first), a callable
            returning a ``gymnasium.Env``, or a ``gymnasium.vector.VectorEnv`` built with
            ``AutoresetMode.SAME_STEP`` (see :mod:`ppokit.envs.sources`).
        num_envs: parallel environments ``N`` (None: a VectorEnv's own count).
        mode: ``"sync"`` (one process) or ``"async"`` (one subprocess per env).
        env_kwargs: keyword arguments for ``gymnasium.make`` (an id only).
        training: for Atari ids, the training preprocessing (episodic life, clipped rewards);
            False plays whole games with raw scores (evaluation). See :mod:`ppokit.envs.atari`.

    Observations are float32, except images (rank-3 uint8 ``Box``), which stay uint8
    (``obs_dtype``).

    Box actions are clipped to the action bounds only when sent to the environment; the caller
    keeps the sampled action. Discrete actions are sent as integers.

    Example:
        >>> env = GymVecEnv("CartPole-v1", 2)
        >>> td = env.reset(seed=0)
        >>> td["observation"].shape
        torch.Size([2, 4])
        >>> td, root = env.step_and_maybe_reset(td.set("action", torch.tensor([0, 1])))
        >>> sorted(td["next"].keys())
        ['done', 'observation', 'reward', 'terminated', 'truncated']
        >>> env.close()
    """

    def __init__(
        self,
        env: EnvSource,
        num_envs: int | None = None,
        *,
        mode: str = "sync",
        env_kwargs: dict[str, Any] | None = None,
        training: bool = True,
    ) -> None:
        import gymnasium as gym

        self.env = make_vector_env(
            env, num_envs, mode=mode, env_kwargs=env_kwargs, training=training
        )
        self.env_id = env_label(env)
        self.num_envs: int = self.env.num_envs
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        check_flat_spaces(self.observation_space, self.action_space, env_id=self.env_id)
        # check_flat_spaces has accepted a flat Box observation and a Discrete or 1-D Box action
        action_space: Any = self.action_space
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.obs_shape: tuple[int, ...] = tuple(self.observation_space.shape or ())
        #: the info of the last step (Gymnasium's vector layout)
        self.last_info: dict[str, Any] = {}
        # images stay bytes (a quarter of float32's memory); the CNN scales them
        image = is_image_space(self.observation_space)
        self._obs_np_dtype: Any = np.uint8 if image else np.float32
        self.obs_dtype = torch.uint8 if image else torch.float32
        if self.discrete:
            self.action_shape: tuple[int, ...] = ()
            self.action_dtype = torch.int64
            self.num_actions = int(action_space.n)
        else:
            self.action_shape = tuple(action_space.shape)
            self.action_dtype = torch.float32
            self.num_actions = int(np.prod(self.action_shape))
            self._low = action_space.low.astype(np.float32)
            self._high = action_space.high.astype(np.float32)

    # -- array API (the collector's hot path: numpy in, numpy out, nothing converted twice) --
    def reset_arrays(self, *, seed: int | None = None) -> np.ndarray:
        """Reset every env; env ``i`` is seeded with ``seed + i``. Returns ``[N, *obs]``."""
        # a list seeds each sub-env (Gymnasium accepts it; its annotation says int only)
        seeds: Any = None if seed is None else [seed + i for i in range(self.num_envs)]
        obs, _ = self.env.reset(seed=seeds)
        return np.asarray(obs, dtype=self._obs_np_dtype)

    def step_arrays(self, action: np.ndarray) -> tuple[np.ndarray, ...]:
        """Step with a numpy ``action`` (``[N]`` ints or ``[N, A]`` floats, as sampled).

        Returns:
            ``(next_obs, obs, reward, terminated, truncated)`` as numpy arrays with the
            shapes and meaning of :class:`StepResult` (float32 observations and rewards, bool
            flags). ``next_obs`` is ``obs`` itself (same array) where no episode ended.
        """
        if not self.discrete:
            action = np.clip(action, self._low, self._high)  # a copy: the caller keeps its own
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.last_info = info  # evaluation reads the episodes' final info["is_success"]
        obs = np.asarray(obs, dtype=self._obs_np_dtype)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        next_obs = obs
        if terminated.any() or truncated.any():
            mask = info.get("_final_obs")
            if mask is None:
                raise RuntimeError(
                    "The vector env ended an episode without info['final_obs']; ppokit needs "
                    "autoreset_mode=SAME_STEP to store the true final observation."
                )
            next_obs = obs.copy()
            finals = info["final_obs"]
            for i in np.flatnonzero(mask):
                next_obs[i] = np.asarray(finals[i], dtype=self._obs_np_dtype)
        return next_obs, obs, np.asarray(reward, dtype=np.float32), terminated, truncated

    # -- tensor API ---------------------------------------------------------------------------
    def reset_tensors(self, *, seed: int | None = None) -> torch.Tensor:
        """Reset every env; env ``i`` is seeded with ``seed + i``. Returns ``[N, *obs]``."""
        return torch.from_numpy(self.reset_arrays(seed=seed))

    def step_tensors(self, action: torch.Tensor) -> StepResult:
        """Step with ``action`` (``[N]`` ints or ``[N, A]`` floats, as sampled)."""
        next_obs, obs, reward, terminated, truncated = self.step_arrays(
            action.detach().cpu().numpy()
        )
        return StepResult(
            *(torch.from_numpy(x) for x in (next_obs, obs, reward, terminated, truncated))
        )

    # -- TensorDict API (TorchRL-style, for users and tests) --------------------------------
    def reset(self, *, seed: int | None = None) -> TensorDict:
        """Reset and return ``TensorDict(observation=[N, *obs], batch_size=[N])``."""
        obs = self.reset_tensors(seed=seed)
        return TensorDict({"observation": obs}, batch_size=[self.num_envs])

    def step_and_maybe_reset(self, td: TensorDict) -> tuple[TensorDict, TensorDict]:
        """Read ``td["action"]``, write ``td["next"]`` and return the root of the next step.

        Returns:
            ``(td, next_root)``: ``td`` now holds the ``"next"`` sub-TensorDict of the data
            contract (``("next", "observation")`` is the true final observation where an
            episode ended) and ``next_root`` is ``TensorDict(observation=...)`` to act on next
            (the reset observation where an episode ended), as TorchRL's method of that name.
        """
        res = self.step_tensors(td.get("action"))
        nxt = TensorDict(
            {
                "observation": res.next_obs,
                "reward": res.reward.unsqueeze(-1),
                "terminated": res.terminated.unsqueeze(-1),
                "truncated": res.truncated.unsqueeze(-1),
                "done": (res.terminated | res.truncated).unsqueeze(-1),
            },
            batch_size=[self.num_envs],
        )
        td.set("next", nxt)
        return td, TensorDict({"observation": res.obs}, batch_size=[self.num_envs])

    def close(self) -> None:
        """Close the underlying vector env (ends async worker processes)."""
        self.env.close()

    def __enter__(self) -> GymVecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
