"""Rollout collection into one preallocated ``[num_envs, T]`` TensorDict.

The rollout TensorDict is allocated once. Every step writes the environment's numpy arrays and
the policy's outputs into its leaves through numpy views of them (a numpy index assignment
costs well under a microsecond, a torch one several), so the hot loop allocates no TensorDict
and converts nothing twice. The standard actor acts through
:class:`~ppokit.train.collect.acting.TensorPolicy` (its networks called directly under
``torch.inference_mode``, then the distribution's own draw and score); any other TensorDict
policy is called as a TensorDict module under ``torch.no_grad``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, set_interaction_type

from ppokit.envs.gym import GymVecEnv
from ppokit.modules.cnn import one_trunk_pass
from ppokit.train.collect.acting import TensorPolicy, tensor_policy
from ppokit.train.collect.device import policy_on_device, setup_device
from ppokit.train.collect.values import RolloutValues
from ppokit.train.normalization import ObservationNormalizer, RewardScaler

if TYPE_CHECKING:
    from ppokit.train.recurrent.sequences import RecurrentRollout

__all__ = ["EpisodeStats", "RolloutCollector", "TensorPolicy", "tensor_policy"]


@dataclass
class EpisodeStats:
    """Undiscounted returns and lengths of the episodes finished since the last ``pop``."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


class RolloutCollector:
    """Fill a ``[num_envs, num_steps]`` rollout with the keys of the data contract.

    Args:
        env: the vector environment.
        policy: a TensorDict module reading ``"observation"`` and writing ``"action"`` and
            ``log_prob_key`` on a ``[num_envs]`` TensorDict (e.g. a ``ProbabilisticActor``).
        num_steps: rollout length ``T`` per environment.
        obs_normalizer: applied to every observation (and the true next observation) with
            the same statistics; updated while collecting unless frozen.
        reward_scaler: scales ``("next", "reward")``; raw returns are still reported.
        log_prob_key: key the policy writes the action's log-probability to.
        seed: seeds the first reset (env ``i`` gets ``seed + i``).
        compile_policy: act through a :class:`TensorPolicy` compiled with ``torch.compile``
            (same random stream; float rounding may differ). Ignored for policies it does
            not reproduce.
        device: where the policy runs (default: the CPU). Off the CPU each step's
            observations cross once through a pinned buffer (:mod:`ppokit.train.device`) and
            :meth:`collect` returns the rollout on the device (one copy per rollout).
        recurrent: the hidden-state bookkeeping of a recurrent policy (carried across steps,
            stored in the rollout, reset where ``done``); ``None`` for feed-forward ones.
        critic: record the critic's values while collecting (:mod:`ppokit.train.collect.values`):
            the rollout then holds ``state_value`` and ``("next", "state_value")`` and no
            ``("next", "observation")`` (each frame stored once). Feed-forward policies only.

    The rollout holds ``observation [N, T, *obs]``, ``action [N, T]`` (discrete, int64) or
    ``[N, T, A]`` (continuous, as sampled, never clipped), ``action_log_prob [N, T]`` and
    ``("next", ·)``: ``observation``, ``reward [N, T, 1]``, ``terminated``/``truncated``/
    ``done [N, T, 1]`` bool (with ``critic``: the two values instead of the next
    observation). :meth:`collect` returns the same TensorDict object each time.

    Example:
        >>> from tensordict.nn import TensorDictModule
        >>> env = GymVecEnv("CartPole-v1", 2)
        >>> def random_policy(obs):
        ...     return torch.randint(0, 2, obs.shape[:1]), torch.full(obs.shape[:1], -0.6931)
        >>> policy = TensorDictModule(random_policy, ["observation"],
        ...                           ["action", "action_log_prob"])
        >>> rollout = RolloutCollector(env, policy, num_steps=5, seed=0).collect()
        >>> rollout.batch_size, rollout["next", "reward"].shape
        (torch.Size([2, 5]), torch.Size([2, 5, 1]))
        >>> env.close()
    """

    def __init__(
        self,
        env: GymVecEnv,
        policy: Callable[[TensorDictBase], TensorDictBase],
        *,
        num_steps: int,
        obs_normalizer: ObservationNormalizer | None = None,
        reward_scaler: RewardScaler | None = None,
        log_prob_key: str = "action_log_prob",
        seed: int | None = None,
        compile_policy: bool = False,
        device: torch.device | None = None,
        recurrent: RecurrentRollout | None = None,
        critic: Callable[[TensorDictBase], TensorDictBase] | None = None,
    ) -> None:
        if num_steps <= 0:
            raise ValueError(f"num_steps must be positive, got {num_steps}.")
        if critic is not None and recurrent is not None:
            raise ValueError(
                "RolloutCollector(critic=...) records values of feed-forward critics only; a "
                "recurrent critic's values come from its own sequence pass. Pass critic=None."
            )
        self.env = env
        self.policy = policy
        self.num_steps = num_steps
        self.obs_normalizer = obs_normalizer
        self.reward_scaler = reward_scaler
        self.log_prob_key = log_prob_key
        n, t = env.num_envs, num_steps
        obs_shape, act_shape = env.obs_shape, env.action_shape
        obs_dtype = getattr(env, "obs_dtype", torch.float32)  # uint8 for images
        self.rollout = TensorDict(
            {
                "observation": torch.zeros(n, t, *obs_shape, dtype=obs_dtype),
                "action": torch.zeros(n, t, *act_shape, dtype=env.action_dtype),
                log_prob_key: torch.zeros(n, t),
                "next": TensorDict(
                    {
                        "reward": torch.zeros(n, t, 1),
                        "terminated": torch.zeros(n, t, 1, dtype=torch.bool),
                        "truncated": torch.zeros(n, t, 1, dtype=torch.bool),
                        "done": torch.zeros(n, t, 1, dtype=torch.bool),
                    },
                    batch_size=[n, t],
                ),
            },
            batch_size=[n, t],
        )
        self.values = None if critic is None else RolloutValues(critic, self.rollout, device)
        if critic is None:  # the values replace the second frame buffer
            self.rollout.set(("next", "observation"), torch.zeros_like(self.rollout["observation"]))
        # the leaves, held once, and numpy views of them (same memory): the loop writes by index
        leaves = {
            "obs": self.rollout.get("observation"),
            "act": self.rollout.get("action"),
            "logp": self.rollout.get(log_prob_key),
            "next_obs": self.rollout.get(("next", "observation"), None),
            "rew": self.rollout.get(("next", "reward")),
            "term": self.rollout.get(("next", "terminated")),
            "trunc": self.rollout.get(("next", "truncated")),
            "done": self.rollout.get(("next", "done")),
        }
        self._act_buf, self._logp_buf = leaves["act"], leaves["logp"]
        self._np = {name: leaf.numpy() for name, leaf in leaves.items() if leaf is not None}
        self._step_td = TensorDict({}, batch_size=[n])
        self._ep_return = np.zeros(n, dtype=np.float64)
        self._ep_length = np.zeros(n, dtype=np.int64)
        self._stats = EpisodeStats()
        self.env_steps = 0
        self._obs: torch.Tensor | None = None
        self._seed = seed
        # fast path for the standard actor layout; any other TensorDict policy also works
        self._act = TensorPolicy.for_actor(
            policy, log_prob_key=log_prob_key, compile=compile_policy
        )
        self._device, self._to_device, self._games = setup_device(env, device)
        self.recurrent = recurrent
        if recurrent is not None:
            recurrent.attach(self.rollout)
            self._act = None  # the state goes through TensorDicts: the generic branch

    def reset(self, *, seed: int | None = None) -> None:
        """Reset the environments (the next :meth:`collect` starts fresh episodes)."""
        raw = torch.from_numpy(self.env.reset_arrays(seed=seed))
        self._obs = self._normalize(raw)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        if self.recurrent is not None:
            self.recurrent.reset()

    def _normalize(self, raw: torch.Tensor) -> torch.Tensor:
        if self.obs_normalizer is None:
            return raw
        return self.obs_normalizer.normalize(raw)

    def collect(self) -> TensorDict:
        """Run ``num_steps`` vector steps and return the filled rollout TensorDict."""
        # sample from the policy (tensordict's probabilistic modules default to the mode)
        with torch.no_grad(), set_interaction_type(InteractionType.RANDOM):
            return self._collect()

    def _collect(self) -> TensorDict:
        if self._obs is None:
            self.reset(seed=self._seed)
        obs = cast(torch.Tensor, self._obs)  # set by reset()
        act = self._act if self._act is not None and self._act.usable() else None
        step_td, log_prob_key = self._step_td, self.log_prob_key
        norm = self.obs_normalizer
        if norm is not None and not norm.enabled:
            norm = None
        scaler = self.reward_scaler
        buf = self._np
        obs_b, act_b, logp_b, next_b = buf["obs"], buf["act"], buf["logp"], buf.get("next_obs")
        rew_b, term_b, trunc_b, done_b = buf["rew"], buf["term"], buf["trunc"], buf["done"]
        ep_return, ep_length = self._ep_return, self._ep_length
        to_device = self._to_device
        rec, values = self.recurrent, self.values
        # the actor and the critic share one trunk pass per step (with a SharedTrunk)
        one_pass = one_trunk_pass if values is not None else contextlib.nullcontext
        for t in range(self.num_steps):
            with one_pass():
                if rec is not None:  # the state in and out of the policy, stored per step
                    action, log_prob = rec.act(obs, t, step_td, self.policy, log_prob_key)
                elif to_device is not None:  # the policy on a GPU: one copy of the observations
                    obs_d = to_device(obs.numpy())
                    action, log_prob = policy_on_device(
                        act, obs_d, self.policy, step_td, log_prob_key
                    )
                elif act is not None:
                    action, log_prob = act(obs_d := obs)
                else:
                    step_td.set("observation", obs_d := obs)
                    self.policy(step_td)
                    action, log_prob = step_td.get("action"), step_td.get(log_prob_key)
                if values is not None:
                    values.record(t, obs_d)
            action_np = action.detach().cpu().numpy()
            obs_b[:, t] = obs.numpy()
            act_b[:, t] = action_np
            logp_b[:, t] = log_prob.detach().cpu().numpy()
            next_obs, obs_np, reward, terminated, truncated = self.env.step_arrays(action_np)
            done = terminated | truncated
            any_done = bool(done.any())
            if rec is not None:
                rec.after_env(done)
            if norm is not None:
                # one statistics update per step (with the observations the policy will see
                # next); the true final observation is mapped with the same statistics
                obs = norm.normalize(torch.from_numpy(obs_np))
                final = (
                    norm.normalize(torch.from_numpy(next_obs), update=False).numpy()
                    if any_done
                    else obs.numpy()
                )
            else:
                obs = torch.from_numpy(obs_np)
                final = next_obs
            if next_b is not None:
                next_b[:, t] = final
            elif any_done:  # V of the true final observations: the bootstrap states
                ended = np.flatnonzero(done)
                values.at_ends(t, torch.from_numpy(final[ended]), ended)  # type: ignore[union-attr]
            ep_return += reward  # float32 rewards summed in float64, reported unscaled
            ep_length += 1
            if scaler is not None and scaler.enabled:
                reward = scaler.scale(torch.from_numpy(reward), torch.from_numpy(done)).numpy()
            rew_b[:, t, 0] = reward
            term_b[:, t, 0] = terminated
            trunc_b[:, t, 0] = truncated
            done_b[:, t, 0] = done
            if any_done:
                idx = np.flatnonzero(done)
                if self._games is not None:  # Atari: the raw score of each whole game
                    scores, lengths = self._games()
                    self._stats.returns.extend(scores)
                    self._stats.lengths.extend(lengths)
                else:
                    self._stats.returns.extend(ep_return[idx].tolist())
                    self._stats.lengths.extend(ep_length[idx].tolist())
                ep_return[idx] = 0.0
                ep_length[idx] = 0
        self._obs = obs
        if values is not None:
            values.finish(obs, self.rollout.get(("next", "done")))
        self.env_steps += self.num_steps * self.env.num_envs
        if self._device is not None:
            return self.rollout.to(self._device, non_blocking=True)
        return self.rollout

    def pop_episode_stats(self) -> EpisodeStats:
        """Episodes finished since the last call (returns are raw, unscaled)."""
        stats, self._stats = self._stats, EpisodeStats()
        return stats

    def check_policy_output(self) -> None:
        """Run the policy once and raise a clear error if it misses a key or shape."""
        if self._obs is None:
            self.reset(seed=self._seed)
        td = TensorDict({"observation": self._obs}, batch_size=[self.env.num_envs])
        if self.recurrent is not None:
            self.recurrent.state.fill(td)
        with torch.no_grad():
            self.policy(td)
        for key, buf in (("action", self._act_buf), (self.log_prob_key, self._logp_buf)):
            if td.get(key, None) is None:
                raise KeyError(f"The policy did not write {key!r}; it wrote {list(td.keys())}.")
            if td.get(key).shape != buf[:, 0].shape:
                raise ValueError(
                    f"The policy wrote {key!r} of shape {tuple(td.get(key).shape)}, expected "
                    f"{tuple(buf[:, 0].shape)} for this environment."
                )
