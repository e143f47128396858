"""Rollout collection into one preallocated ``[num_envs, T]`` TensorDict.

The rollout TensorDict is allocated once; every step writes plain tensors into its leaves by
index, so the hot loop allocates no TensorDict (only the policy's own outputs). The policy
acts under ``torch.no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, set_interaction_type

from ppokit.envs.gym import GymVecEnv
from ppokit.normalization import ObservationNormalizer, RewardScaler

__all__ = ["EpisodeStats", "RolloutCollector", "tensor_policy"]

PolicyFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def tensor_policy(actor: object) -> PolicyFn | None:
    """A tensor-in/tensor-out view ``obs -> (action, log_prob)`` of a two-stage actor.

    For ``ProbabilisticTensorDictSequential(TensorDictModule(net, ["observation"], params),
    ProbabilisticTensorDictModule(params, distribution_class))`` (what ``ProbabilisticActor``
    builds) this calls ``net`` and the distribution directly, skipping the per-step TensorDict
    bookkeeping that dominates the cost of a small policy. Same parameters, same sampling
    (``dist.sample()``) and log-prob as the TensorDict call. ``None`` for other actors.

    Example:
        >>> from ppokit.envs import GymVecEnv
        >>> from ppokit.trainer import build_actor_critic
        >>> env = GymVecEnv("CartPole-v1", 1)
        >>> act = tensor_policy(build_actor_critic(env)[0])
        >>> action, log_prob = act(torch.zeros(3, 4))
        >>> action.shape, log_prob.shape
        (torch.Size([3]), torch.Size([3]))
        >>> env.close()
    """
    from tensordict.nn import (
        ProbabilisticTensorDictModule,
        ProbabilisticTensorDictSequential,
        TensorDictModule,
    )

    if not isinstance(actor, ProbabilisticTensorDictSequential):
        return None
    stages = list(actor.module)
    if len(stages) != 2:
        return None
    net_td, prob = stages
    if not (isinstance(net_td, TensorDictModule) and isinstance(prob,
                                                                ProbabilisticTensorDictModule)):
        return None
    if list(net_td.in_keys) != ["observation"] or list(prob.out_keys)[:1] != ["action"]:
        return None
    out_keys = list(net_td.out_keys)
    if not all(k in out_keys for k in prob.in_keys):
        return None
    positions = [out_keys.index(k) for k in prob.in_keys]
    dist_keys = list(prob.dist_keys)
    dist_cls = prob.distribution_class
    dist_kwargs = dict(prob.distribution_kwargs or {})
    net = net_td.module

    def act(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = net(obs)
        if not isinstance(out, tuple):
            out = (out,)
        params = {dk: out[i] for dk, i in zip(dist_keys, positions)}
        dist = dist_cls(**params, **dist_kwargs)
        action = dist.sample()
        return action, dist.log_prob(action)

    return act


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

    The rollout holds ``observation [N, T, *obs]``, ``action [N, T]`` (discrete, int64) or
    ``[N, T, A]`` (continuous, as sampled, never clipped), ``action_log_prob [N, T]`` and
    ``("next", ·)``: ``observation``, ``reward [N, T, 1]``, ``terminated``/``truncated``/
    ``done [N, T, 1]`` bool. :meth:`collect` returns the same TensorDict object each time.

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
    ) -> None:
        if num_steps <= 0:
            raise ValueError(f"num_steps must be positive, got {num_steps}.")
        self.env = env
        self.policy = policy
        self.num_steps = num_steps
        self.obs_normalizer = obs_normalizer
        self.reward_scaler = reward_scaler
        self.log_prob_key = log_prob_key
        n, t = env.num_envs, num_steps
        obs_shape, act_shape = env.obs_shape, env.action_shape
        self.rollout = TensorDict(
            {
                "observation": torch.zeros(n, t, *obs_shape),
                "action": torch.zeros(n, t, *act_shape, dtype=env.action_dtype),
                log_prob_key: torch.zeros(n, t),
                "next": TensorDict(
                    {
                        "observation": torch.zeros(n, t, *obs_shape),
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
        # the leaves, held once: the loop writes into them by index
        self._obs_buf = self.rollout.get("observation")
        self._act_buf = self.rollout.get("action")
        self._logp_buf = self.rollout.get(log_prob_key)
        nxt = self.rollout.get("next")
        self._next_obs_buf = nxt.get("observation")
        self._rew_buf = nxt.get("reward")
        self._term_buf = nxt.get("terminated")
        self._trunc_buf = nxt.get("truncated")
        self._done_buf = nxt.get("done")
        self._step_td = TensorDict({}, batch_size=[n])
        self._ep_return = torch.zeros(n, dtype=torch.float64)
        self._ep_length = torch.zeros(n, dtype=torch.int64)
        self._stats = EpisodeStats()
        self.env_steps = 0
        self._obs: torch.Tensor | None = None
        self._seed = seed
        # fast path for the standard actor layout; any other TensorDict policy also works
        self._act = tensor_policy(policy) if log_prob_key == "action_log_prob" else None

    def reset(self, *, seed: int | None = None) -> None:
        """Reset the environments (the next :meth:`collect` starts fresh episodes)."""
        raw = self.env.reset_tensors(seed=seed)
        self._obs = self._normalize(raw)
        self._ep_return.zero_()
        self._ep_length.zero_()

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
        obs = self._obs
        step_td = self._step_td
        for t in range(self.num_steps):
            if self._act is not None:
                action, log_prob = self._act(obs)
            else:
                step_td.set("observation", obs)
                self.policy(step_td)
                action, log_prob = step_td.get("action"), step_td.get(self.log_prob_key)
            self._obs_buf[:, t] = obs
            self._act_buf[:, t] = action
            self._logp_buf[:, t] = log_prob
            res = self.env.step_tensors(action)
            done = res.terminated | res.truncated
            if self.obs_normalizer is not None and self.obs_normalizer.enabled:
                # one statistics update per step (with the observations the policy will see
                # next); the true final observation is mapped with the same statistics
                obs = self.obs_normalizer.normalize(res.obs)
                next_obs = (
                    self.obs_normalizer.normalize(res.next_obs, update=False)
                    if done.any() else obs
                )
            else:
                obs, next_obs = res.obs, res.next_obs
            self._next_obs_buf[:, t] = next_obs
            reward = res.reward
            self._ep_return += reward.to(torch.float64)
            self._ep_length += 1
            if self.reward_scaler is not None:
                reward = self.reward_scaler.scale(reward, done)
            self._rew_buf[:, t, 0] = reward
            self._term_buf[:, t, 0] = res.terminated
            self._trunc_buf[:, t, 0] = res.truncated
            self._done_buf[:, t, 0] = done
            if done.any():
                idx = done.nonzero().squeeze(-1)
                self._stats.returns.extend(self._ep_return[idx].tolist())
                self._stats.lengths.extend(self._ep_length[idx].tolist())
                self._ep_return[idx] = 0.0
                self._ep_length[idx] = 0
        self._obs = obs
        self.env_steps += self.num_steps * self.env.num_envs
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
