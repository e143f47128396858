"""Deterministic evaluation of a policy, optionally rendered to an mp4.

Each of ``episodes`` environments plays exactly one episode (in one vector env), so the mean
is not biased towards short episodes as "first N episodes to finish" would be. Actions are the
distribution's deterministic sample (argmax for discrete actions, the mean for Gaussians);
observations go through the training normaliser with its statistics frozen.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from ppokit.envs.gym import GymVecEnv  # noqa: F401 (the doctests use it)
from ppokit.envs.sources import EnvSource
from ppokit.envs.structured import StructuredVecEnv, open_env
from ppokit.train.collect.acting import TensorPolicy
from ppokit.train.device import module_device
from ppokit.train.evaluation.success import EpisodeSuccess
from ppokit.train.evaluation.video import video_env, video_fps
from ppokit.train.normalization import ObservationNormalizer
from ppokit.train.recurrent.state import PolicyState

__all__ = ["EvalResult", "deterministic_action", "evaluate_policy", "record_video"]


@dataclass(frozen=True)
class EvalResult:
    """Returns and lengths of the evaluation episodes, and whether each succeeded.

    ``successes``: each episode's final ``info["is_success"]`` (goal-conditioned tasks such
    as Gymnasium-Robotics' Fetch), None where the env does not report it.
    """

    returns: list[float]
    lengths: list[int]
    successes: list[bool] | None = None

    @property
    def success_rate(self) -> float | None:
        """The fraction of successful episodes (None: the env reports no success flag)."""
        if self.successes is None:
            return None
        return float(np.mean(self.successes)) if self.successes else math.nan

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.returns)) if self.returns else math.nan


def deterministic_action(
    actor: Any,
    obs: torch.Tensor,
    *,
    policy: TensorPolicy | None = None,
    state: PolicyState | None = None,
) -> torch.Tensor:
    """The actor's deterministic action for ``[B, *obs]`` observations (no grad).

    ``policy``: ``TensorPolicy.for_actor(actor, sampling=False)``, made once by the caller,
    builds the same distribution without TensorDict bookkeeping. ``state``: a recurrent
    actor's carried state (:class:`~ppokit.train.recurrent.state.PolicyState`), filled in
    here; call its ``advance`` after the env step.

    Example:
        >>> from ppokit.train.build import build_actor_critic
        >>> env = GymVecEnv("CartPole-v1", 1)
        >>> actor, _ = build_actor_critic(env)
        >>> deterministic_action(actor, torch.zeros(2, 4)).shape
        torch.Size([2])
        >>> env.close()
    """
    with torch.no_grad():
        if policy is not None and policy.usable():
            dist = policy.distribution(obs)
        else:
            td = TensorDict({"observation": obs}, batch_size=obs.shape[:1])
            # state.fill keeps td: the cores write the next state into it
            dist = actor.get_dist(td if state is None else state.fill(td))
        for attr in ("deterministic_sample", "mode", "mean"):
            try:
                return getattr(dist, attr)
            except (AttributeError, NotImplementedError):
                continue
    raise TypeError(f"{type(dist).__name__} has no deterministic sample, mode or mean.")


def evaluate_policy(
    actor: Any,
    env: EnvSource,
    *,
    episodes: int = 20,
    seed: int = 0,
    obs_normalizer: ObservationNormalizer | None = None,
    max_steps: int = 1_000_000,
    env_kwargs: dict[str, Any] | None = None,
) -> EvalResult:
    """Play ``episodes`` deterministic episodes (env ``i`` seeded ``seed + i``).

    ``env``: a Gymnasium id (with ``env_kwargs`` for ``gymnasium.make``) or a callable
    returning an Env; ``episodes`` fresh envs are built from it (a ``VectorEnv`` with exactly
    ``episodes`` sub-environments also works; it is closed afterwards).

    Example:
        >>> from ppokit.train.build import build_actor_critic
        >>> env = GymVecEnv("CartPole-v1", 1)
        >>> actor, _ = build_actor_critic(env)
        >>> res = evaluate_policy(actor, "CartPole-v1", episodes=3, seed=0)
        >>> len(res.returns), all(r >= 1 for r in res.returns)
        (3, True)
        >>> env.close()
    """
    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}.")
    was_training = getattr(actor, "training", False)
    if hasattr(actor, "eval"):
        actor.eval()
    # training=False: Atari plays whole games with raw scores (ppokit.envs.atari)
    mask_key = getattr(actor, "action_mask_key", "action_mask")
    venv = open_env(env, episodes, env_kwargs=env_kwargs, mask_key=mask_key, training=False)
    policy = TensorPolicy.for_actor(actor, sampling=False)
    device = module_device(actor)  # the env's CPU observations go where the actor is
    state = PolicyState.for_modules(actor, batch=episodes)  # None: a feed-forward actor
    try:
        if isinstance(venv, StructuredVecEnv):  # Dict/Tuple/MultiDiscrete spaces, masks
            from ppokit.train.structured.training import evaluate_structured

            return EvalResult(
                *evaluate_structured(
                    actor, venv, seed=seed, obs_normalizer=obs_normalizer, max_steps=max_steps
                )
            )
        obs = venv.reset_tensors(seed=seed)
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        active = np.ones(episodes, dtype=bool)
        success = EpisodeSuccess(episodes)
        for _ in range(max_steps):
            if obs_normalizer is not None:
                obs = obs_normalizer.normalize(obs, update=False)
            action = deterministic_action(actor, obs.to(device), policy=policy, state=state)
            res = venv.step_tensors(action)
            returns[active] += res.reward.numpy()[active]
            lengths[active] += 1
            done = (res.terminated | res.truncated).numpy()
            if state is not None:
                state.advance(state.step_td, done)
            success.update(venv.last_info, ended=active & done)
            active &= ~done
            if not active.any():
                break
            obs = res.obs
    finally:
        venv.close()
        if was_training and hasattr(actor, "train"):
            actor.train()
    return EvalResult(returns.tolist(), lengths.tolist(), success.result())


def record_video(
    actor: Any,
    env_id: str,
    video_dir: str | Path,
    *,
    episodes: int = 1,
    seed: int = 0,
    obs_normalizer: ObservationNormalizer | None = None,
) -> list[Path]:
    """Render ``episodes`` deterministic episodes to ``video_dir/<env>-episode-<i>.mp4``.

    Headless: MuJoCo renders offscreen through EGL (``MUJOCO_GL=egl`` unless already set),
    classic control through pygame into an array; frames are encoded with imageio-ffmpeg.
    Returns the paths written.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym
    import imageio.v2 as imageio

    video_dir = Path(video_dir)
    video_dir.mkdir(parents=True, exist_ok=True)
    try:
        env = video_env(env_id)  # Atari: the preprocessed game, rendering raw RGB frames
    except gym.error.DependencyNotInstalled as err:
        raise RuntimeError(
            f"Rendering {env_id} needs an extra package: {err}. Install ppokit[gym]."
        ) from err
    fps = video_fps(env_id, env)
    paths = []
    policy = TensorPolicy.for_actor(actor, sampling=False)
    device = module_device(actor)
    state = PolicyState.for_modules(actor, batch=1)  # None: a feed-forward actor
    try:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            if state is not None:
                state.reset()
            frames: list[Any] = [env.render()]
            done = False
            while not done:
                obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32).unsqueeze(0)
                if obs_normalizer is not None:
                    obs_t = obs_normalizer.normalize(obs_t, update=False)
                raw = (
                    deterministic_action(actor, obs_t.to(device), policy=policy, state=state)[0]
                    .cpu()
                    .numpy()
                )
                if state is not None:
                    state.advance(state.step_td, np.zeros(1, dtype=bool))
                space: Any = env.action_space
                action: Any = (
                    np.clip(raw, space.low, space.high)
                    if isinstance(space, gym.spaces.Box)
                    else int(raw)
                )
                obs, _, terminated, truncated, _ = env.step(action)
                frames.append(env.render())
                done = terminated or truncated
            path = video_dir / f"{env_id.replace('/', '_')}-episode-{ep}.mp4"
            # macro_block_size 1: keep odd frame sizes instead of resizing with a warning
            imageio.mimsave(path, frames, fps=fps, macro_block_size=1)
            paths.append(path)
    finally:
        env.close()
    return paths
