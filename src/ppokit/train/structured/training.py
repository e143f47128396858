"""Training on structured spaces: networks, rollout collection and evaluation.

The flat path (:class:`~ppokit.train.collect.collector.RolloutCollector`, numpy views, the tensor
policy) is untouched; a :class:`~ppokit.envs.structured.StructuredVecEnv` takes this one:
the actor acts on tensors (:class:`~ppokit.train.structured.acting.StructuredActing`, the
same numbers as calling it as a TensorDict module, which other actors get), the rollout is a nested
TensorDict ``[num_envs, T]`` mirroring the observation and action spaces, and the
observation normaliser sees the ``vector`` leaves concatenated (never images, one-hot
leaves or masks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, set_interaction_type
from tensordict.utils import NestedKey, unravel_key
from torch import nn

from ppokit.envs.gym import GymVecEnv
from ppokit.envs.structured import StructuredVecEnv
from ppokit.modules.heads import structured_actor, structured_critic
from ppokit.train.collect.collector import EpisodeStats, RolloutCollector
from ppokit.train.evaluation.success import EpisodeSuccess
from ppokit.train.normalization import ObservationNormalizer, RewardScaler
from ppokit.train.structured.acting import StructuredActing

__all__ = [
    "StructuredCollector",
    "build_structured_actor_critic",
    "evaluate_structured",
    "make_collector",
    "normalize_leaves",
]


def build_structured_actor_critic(
    env: StructuredVecEnv,
    *,
    hidden_sizes: tuple[int, ...] = (64, 64),
    activation: str = "tanh",
    init_log_std: float = 0.0,
    ortho_init: bool = True,
    encoders: Mapping[str, nn.Module] | None = None,
    bounded: bool = False,
) -> tuple[Any, Any]:
    """Actor (composite distribution, one head per action leaf) and critic for ``env``.

    ``encoders``: user encoders by leaf name (``"pos"``, ``"arm.joints"``), used by both
    networks' copies (each gets its own deep copy, so the actor and critic do not share
    weights). The action mask, when the env gives one, is read from
    ``("observation", env.mask_key)``.

    Example:
        >>> env = StructuredVecEnv("ppokit/TicTacToe-v0", 1)
        >>> actor, critic = build_structured_actor_critic(env)
        >>> td = actor(TensorDict({"observation": env.reset(seed=0)}, [1]))
        >>> td["action"].shape, bool(td["observation", "action_mask"].gather(
        ...     1, td["action"][:, None]).all())
        (torch.Size([1]), True)
        >>> env.close()
    """
    import copy

    acts = {"tanh": nn.Tanh, "relu": nn.ReLU}
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}.")
    keys = [("observation", *env.leaf_key(leaf)) for leaf in env.obs_leaves]
    mask_key = ("observation", env.mask_key) if env.mask_size is not None else None
    common: dict[str, Any] = dict(
        num_cells=hidden_sizes, activation_class=acts[activation], ortho_init=ortho_init
    )
    actor = structured_actor(
        env.obs_leaves,
        env.heads,
        leaf_keys=keys,
        mask_key=mask_key,
        encoders=copy.deepcopy(dict(encoders)) if encoders else None,
        init_log_std=init_log_std,
        bounded=bounded,
        **common,
    )
    actor.action_mask_key = env.mask_key  # what evaluation reads the mask as
    critic = structured_critic(
        env.obs_leaves,
        leaf_keys=keys,
        encoders=copy.deepcopy(dict(encoders)) if encoders else None,
        **common,
    )
    return actor, critic


def normalize_leaves(
    env: StructuredVecEnv,
    obs: TensorDictBase,
    norm: ObservationNormalizer | None,
    *,
    update: bool,
) -> TensorDictBase:
    """``obs`` with its vector leaves standardised by ``norm`` (one statistic per entry).

    The leaves are flattened and concatenated in order into ``[N, D]`` (``env.obs_shape``),
    mapped, and written back; other leaves are left as they are.
    """
    if norm is None or not norm.enabled or env.obs_shape[0] == 0:
        return obs
    keys = [env.leaf_key(leaf) for leaf in env.obs_leaves if leaf.kind == "vector"]
    parts = [obs.get(k) for k in keys]
    flat = torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=-1)
    mapped = norm.normalize(flat, update=update).split([p[0].numel() for p in parts], -1)
    out = obs.clone(recurse=False)
    for key, part, new in zip(keys, parts, mapped):
        out.set(key, new.reshape(part.shape))
    return out


def _summed_log_prob(policy: Any, td: TensorDictBase, log_prob_key: str) -> torch.Tensor:
    keys = list(getattr(policy, "log_prob_keys", [log_prob_key]))
    return sum((td.get(k) for k in keys[1:]), td.get(keys[0]))


class StructuredCollector:
    """Fill a nested ``[num_envs, num_steps]`` rollout from a :class:`StructuredVecEnv`.

    Same interface and keys as :class:`~ppokit.train.collect.collector.RolloutCollector`:
    ``observation`` (a TensorDict of leaves, with the mask), ``action`` (a tensor or a
    TensorDict of heads, with each head's log-prob), ``action_log_prob [N, T]`` (the heads'
    sum) and ``("next", ·)``. The policy acts under ``torch.no_grad`` in
    ``InteractionType.RANDOM``: on tensors where
    :class:`~ppokit.train.structured.acting.StructuredActing` reproduces it (the actors
    :func:`build_structured_actor_critic` makes, without hooks), else as a TensorDict module.

    Example:
        >>> env = StructuredVecEnv("ppokit/TicTacToe-v0", 2)
        >>> actor, _ = build_structured_actor_critic(env)
        >>> rollout = StructuredCollector(env, actor, num_steps=4, seed=0).collect()
        >>> rollout["observation", "action_mask"].shape, rollout["action_log_prob"].shape
        (torch.Size([2, 4, 9]), torch.Size([2, 4]))
        >>> env.close()
    """

    def __init__(
        self,
        env: StructuredVecEnv,
        policy: Callable[[TensorDictBase], TensorDictBase],
        *,
        num_steps: int,
        obs_normalizer: ObservationNormalizer | None = None,
        reward_scaler: RewardScaler | None = None,
        log_prob_key: str = "action_log_prob",
        seed: int | None = None,
        compile_policy: bool = False,  # the structured path acts eagerly
    ) -> None:
        if num_steps <= 0:
            raise ValueError(f"num_steps must be positive, got {num_steps}.")
        self.env, self.policy, self.num_steps = env, policy, num_steps
        self.obs_normalizer, self.reward_scaler = obs_normalizer, reward_scaler
        self.log_prob_key = log_prob_key
        self.rollout: TensorDict | None = None
        n = env.num_envs
        self._ep_return = np.zeros(n, dtype=np.float64)
        self._ep_length = np.zeros(n, dtype=np.int64)
        self._stats = EpisodeStats()
        self.env_steps = 0
        self._obs: TensorDictBase | None = None
        self._seed = seed
        # the actor on tensors (the same numbers); None: called as a TensorDict module
        self._acting = StructuredActing.for_actor(policy)
        if self._acting is not None and any(k[0] != "observation" for k in self._acting.in_keys):
            self._acting = None  # it reads something besides the observation
        self._columns: dict[NestedKey, torch.Tensor] | None = None

    def reset(self, *, seed: int | None = None) -> None:
        """Reset the environments (the next :meth:`collect` starts fresh episodes)."""
        self._obs = normalize_leaves(
            self.env, self.env.reset(seed=seed), self.obs_normalizer, update=True
        )
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0

    def collect(self) -> TensorDict:
        """Run ``num_steps`` vector steps and return the filled rollout TensorDict."""
        with torch.no_grad(), set_interaction_type(InteractionType.RANDOM):
            return self._collect()

    def _act(self, obs: TensorDictBase) -> tuple[dict[NestedKey, torch.Tensor], torch.Tensor]:
        """The actions (with each head's log-prob) by rollout key, and the summed log-prob."""
        fast = self._acting
        if fast is not None and fast.usable():
            return fast({k: obs.get(k[1:]) for k in fast.in_keys})
        step = TensorDict({"observation": obs}, batch_size=[self.env.num_envs])
        self.policy(step)
        summed = _summed_log_prob(self.policy, step, self.log_prob_key)
        action = step.select("action").exclude(self.log_prob_key)
        return dict(action.items(True, True)), summed

    def _record(self, t: int, entries: dict[NestedKey, torch.Tensor]) -> None:
        """Write one step's tensors into column ``t`` of the rollout (allocated at the first)."""
        n = self.env.num_envs
        if self.rollout is None:  # allocated once, from the first step's layout
            first = TensorDict({}, batch_size=[n])
            for key, value in entries.items():
                first.set(key, value)
            self.rollout = first.unsqueeze(1).expand(n, self.num_steps).clone()
        if t == 0 or self._columns is None:  # the trainer may have replaced a leaf since
            self._columns = {k: self.rollout.get(k) for k in entries}
        for key, value in entries.items():
            self._columns[key][:, t] = value

    def _collect(self) -> TensorDict:
        if self._obs is None:
            self.reset(seed=self._seed)
        env, norm = self.env, self.obs_normalizer
        scaler = self.reward_scaler
        obs = self._obs
        assert obs is not None  # set by reset(); internal invariant, not user input
        for t in range(self.num_steps):
            action, log_prob = self._act(obs)
            next_raw, obs_raw, reward, terminated, truncated = env.step(action)
            done = terminated | truncated
            entries: dict[NestedKey, torch.Tensor] = {
                unravel_key(("observation", k)): v for k, v in obs.items(True, True)
            }
            entries.update(action)
            entries[self.log_prob_key] = log_prob
            obs = normalize_leaves(env, obs_raw, norm, update=True)
            next_obs = normalize_leaves(env, next_raw, norm, update=False) if done.any() else obs
            self._ep_return += reward
            self._ep_length += 1
            if scaler is not None and scaler.enabled:
                reward = scaler.scale(torch.from_numpy(reward), torch.from_numpy(done)).numpy()
            entries.update(
                {unravel_key(("next", "observation", k)): v for k, v in next_obs.items(True, True)}
            )
            for name, flags in (
                ("reward", reward),
                ("terminated", terminated),
                ("truncated", truncated),
                ("done", done),
            ):
                entries[("next", name)] = torch.from_numpy(flags).unsqueeze(-1)
            self._record(t, entries)
            if done.any():
                idx = np.flatnonzero(done)
                self._stats.returns.extend(self._ep_return[idx].tolist())
                self._stats.lengths.extend(self._ep_length[idx].tolist())
                self._ep_return[idx] = 0.0
                self._ep_length[idx] = 0
        self._obs = obs
        self.env_steps += self.num_steps * env.num_envs
        assert self.rollout is not None  # num_steps > 0
        return self.rollout

    def pop_episode_stats(self) -> EpisodeStats:
        """Episodes finished since the last call (returns are raw, unscaled)."""
        stats, self._stats = self._stats, EpisodeStats()
        return stats


def make_collector(
    env: GymVecEnv | StructuredVecEnv,
    policy: Callable[[TensorDictBase], TensorDictBase],
    **kwargs: Any,
) -> RolloutCollector | StructuredCollector:
    """The collector for ``env``: the flat fast path, or :class:`StructuredCollector`.

    Raises:
        ValueError: a structured env with a recurrent policy or a device other than the CPU
            (the structured path does not carry a hidden state or move data yet).
    """
    if isinstance(env, StructuredVecEnv):
        device = kwargs.pop("device", None)
        if kwargs.pop("recurrent", None) is not None:
            raise ValueError(
                f"{env.env_id} has structured spaces (Dict/Tuple/MultiDiscrete/MultiBinary or "
                "an action mask), which recurrent policies do not support yet; use "
                "--recurrent none, or flatten the spaces with Gymnasium's wrappers."
            )
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(
                f"{env.env_id} has structured spaces, which train on the CPU only for now; got "
                f"device {str(device)!r}. Use --device cpu."
            )
        return StructuredCollector(env, policy, **kwargs)
    return RolloutCollector(env, policy, **kwargs)


def evaluate_structured(
    actor: Any,
    env: StructuredVecEnv,
    *,
    seed: int = 0,
    obs_normalizer: ObservationNormalizer | None = None,
    max_steps: int = 1_000_000,
) -> tuple[list[float], list[int], list[bool] | None]:
    """One deterministic episode per sub-env of ``env``: (returns, lengths, successes).

    Actions are the composite distribution's deterministic sample (each head's mode; a
    masked head's most probable legal action). ``successes``: each episode's final
    ``info["is_success"]`` (:class:`~ppokit.train.evaluation.success.EpisodeSuccess`); None where an
    episode ended without one.
    """
    episodes = env.num_envs
    obs = env.reset(seed=seed)
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    active = np.ones(episodes, dtype=bool)
    success = EpisodeSuccess(episodes)
    with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
        for _ in range(max_steps):
            obs = normalize_leaves(env, obs, obs_normalizer, update=False)
            step = actor(TensorDict({"observation": obs}, batch_size=[episodes]))
            _, obs, reward, terminated, truncated = env.step(step)
            returns[active] += reward[active]
            lengths[active] += 1
            ended = active & (terminated | truncated)
            success.update(env.last_info, ended=ended)
            active &= ~ended
            if not active.any():
                break
    return returns.tolist(), lengths.tolist(), success.result()
