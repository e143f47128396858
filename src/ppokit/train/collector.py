"""Rollout collection into one preallocated ``[num_envs, T]`` TensorDict.

The rollout TensorDict is allocated once. Every step writes the environment's numpy arrays and
the policy's outputs into its leaves through numpy views of them (a numpy index assignment
costs well under a microsecond, a torch one several), so the hot loop allocates no TensorDict
and converts nothing twice. The standard actor acts through :class:`TensorPolicy` (its
networks called directly under ``torch.inference_mode``); any other TensorDict policy is
called as a TensorDict module under ``torch.no_grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    set_interaction_type,
)
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ppokit.envs.gym import GymVecEnv
from ppokit.fast.compile import with_own_code
from ppokit.fast.direct import ModulePlan
from ppokit.modules.distributions import Categorical, IndependentNormal
from ppokit.train.normalization import ObservationNormalizer, RewardScaler

__all__ = ["EpisodeStats", "RolloutCollector", "TensorPolicy", "tensor_policy"]


class TensorPolicy:
    """A tensordict actor run on plain tensors: ``obs [N, *obs] -> (action, log_prob [N])``.

    Made by :meth:`for_actor` for the actors whose semantics it reproduces exactly: a
    ``ProbabilisticTensorDictSequential`` (e.g. ``ProbabilisticActor``) made of plain
    ``TensorDictModule``\\ s reading ``"observation"`` and ending in one
    ``ProbabilisticTensorDictModule`` that writes ``"action"`` and its log-prob (the structure
    check is :class:`ppokit.fast.direct.ModulePlan`'s). A call runs the very same networks
    on the same tensors, then samples as tensordict does in ``InteractionType.RANDOM``
    (``rsample()`` when the distribution has one, else ``sample()``) and scores the sample with
    the distribution's ``log_prob``: the same numbers, without the per-step TensorDict writes.

    For ppokit's :class:`~ppokit.modules.distributions.Categorical` (``logits``) and
    :class:`~ppokit.modules.distributions.IndependentNormal` the distribution object is not
    built: the sample and log-prob are computed with the ops those classes run (same random
    stream, same numbers), without their per-step parameter checks. Instead a call raises
    ``ValueError`` when a log-prob is not finite (NaN/Inf/invalid parameters always lead
    there), after rebuilding the checked distribution so its message names the bad parameter.
    The environment never receives such an action.

    A network wrapped in ``DistributedDataParallel`` is called through its ``.module`` (acting
    needs no gradient synchronisation; the parameters are the same tensors). The returned
    tensors are inference tensors (made under ``torch.inference_mode``): the collector copies
    them into its rollout; ``.clone()`` them before any use in autograd.

    Example:
        >>> from ppokit.envs import GymVecEnv
        >>> from ppokit.train.trainer import build_actor_critic
        >>> env = GymVecEnv("CartPole-v1", 1)
        >>> act = TensorPolicy.for_actor(build_actor_critic(env)[0])
        >>> action, log_prob = act(torch.zeros(3, 4))
        >>> action.shape, log_prob.shape
        (torch.Size([3]), torch.Size([3]))
        >>> env.close()
    """

    def __init__(self, plan: ModulePlan, *, obs_key: NestedKey = "observation",
                 compile: bool = False) -> None:
        self.plan = plan
        self.obs_key = obs_key
        dist_module = plan.dist_module
        self.dist_cls = dist_module.distribution_class
        self.dist_kwargs = dict(dist_module.distribution_kwargs or {})
        self.param_keys = [
            (dk[-1] if isinstance(dk, tuple) else dk, ik)
            for dk, ik in zip(dist_module.dist_keys, dist_module.in_keys)
        ]
        self.lean = _lean_kind(self.dist_cls, [dk for dk, _ in self.param_keys],
                               self.dist_kwargs)
        self.event_dims = int(self.dist_kwargs.get("event_dims", 1))
        # compile=True: the networks and the sample's arithmetic run as one torch.compile
        # graph; the random numbers are still drawn eagerly from torch's generator (the same
        # stream as the eager path), so only float rounding can differ. Gaussian policies
        # only: a compiled call has a fixed cost (guards, input marshalling) that the ~18
        # small eager ops of a Gaussian step (network, sample, log-prob) repay (~12 % faster
        # per step, HalfCheetah), but a categorical step, whose sampling stays eager, does not
        # (~25 % slower, CartPole); see benchmarks/README.md. DistributedDataParallel's
        # forward does not trace: such policies act eagerly.
        self._compile = compile and self.lean == "normal" and not any(
            isinstance(step.net, DistributedDataParallel) and _has_buffers(step.net.module)
            for step in plan.steps)
        self._core: Callable[..., Any] | None = None  # built at the first (eager) call
        # obs shape -> (shape, dtype) of the standard-normal noise a step draws
        self._noise: dict[tuple[int, ...], tuple[torch.Size, torch.dtype]] = {}

    @classmethod
    def for_actor(cls, actor: object, *, log_prob_key: NestedKey = "action_log_prob",
                  obs_key: NestedKey = "observation", sampling: bool = True,
                  compile: bool = False) -> TensorPolicy | None:
        """The tensor view of ``actor``, or ``None`` when its structure is not reproduced.

        ``sampling=False``: only :meth:`distribution` will be used (evaluation), so the
        actor's sample and log-prob keys do not matter. ``compile=True``: sampling from
        ppokit's ``IndependentNormal`` runs the networks and the sample's arithmetic as one
        ``torch.compile`` graph (after one eager call per batch size); other distributions
        act eagerly (for them the compiled call costs more than it saves).
        """
        if not isinstance(actor, nn.Module):
            return None
        plan = ModulePlan.for_actor(actor)
        if plan is None:
            return None
        last = plan.dist_module
        if sampling and (
            type(actor).forward is not ProbabilisticTensorDictSequential.forward
            or type(last).forward is not ProbabilisticTensorDictModule.forward
            or not last.return_log_prob
            or last.num_samples is not None
            or last.log_prob_key != log_prob_key
            or list(last.dist_sample_keys) != ["action"]
        ):
            return None
        if (
            plan.external_keys() != [obs_key]
            or not (isinstance(last.distribution_class, type)
                    and issubclass(last.distribution_class, D.Distribution))
        ):
            return None
        return cls(plan, obs_key=obs_key, compile=compile)

    def usable(self) -> bool:
        """False when hooks, ``set_skip_existing`` or a swapped network forbid the fast path."""
        return self.plan.usable()

    def params(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the networks; the distribution's keyword parameters (e.g. ``loc``, ``scale``)."""
        values: dict[NestedKey, Any] = {self.obs_key: obs}
        n = obs.shape[:1]
        for step in self.plan.steps:
            net = step.net
            if isinstance(net, DistributedDataParallel) and not _has_buffers(net.module):
                net = net.module  # no gradient to synchronise; buffers would need DDP's sync
            out = net(*(values[k] for k in step.in_keys))
            if isinstance(out, (dict, TensorDictBase)) and all(k in out for k in step.out_keys):
                out = tuple(out.get(k) for k in step.out_keys)  # as TensorDictModule reads it
            elif not isinstance(out, tuple):
                out = (out,)
            if len(out) != len(step.out_keys):
                raise RuntimeError(
                    f"{type(step.wrapper).__name__} declares out_keys {list(step.out_keys)} "
                    f"but its module returned {len(out)} value(s)."
                )
            for key, value in zip(step.out_keys, out):
                if key == "_":  # tensordict's "discard this output"
                    continue
                if not isinstance(value, torch.Tensor) or value.shape[:1] != n:
                    raise ValueError(
                        f"{type(step.wrapper).__name__} wrote {key!r} as "
                        f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}; expected "
                        f"a tensor starting with the batch dim {tuple(n)}."
                    )
                values[key] = value
        return {dk: values[ik] for dk, ik in self.param_keys}

    def distribution(self, obs: torch.Tensor) -> D.Distribution:
        """The actor's distribution at ``obs``, built (and checked) by its class."""
        return self.dist_cls(**self.params(obs), **self.dist_kwargs)

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``action [N, *act]`` and its log-prob ``[N]`` (no gradient)."""
        with torch.inference_mode():
            if self._core is not None and tuple(obs.shape) in self._noise:
                action, log_prob = self._compiled_sample(obs)
                return self._checked(obs, action, log_prob)
            params = self.params(obs)
            if self._compile and params["scale"].shape == params["loc"].shape:
                # the eager call for this batch size: remember the noise it needs
                loc = params["loc"]
                self._noise[tuple(obs.shape)] = (loc.shape, loc.dtype)
                if self._core is None:
                    # its own code object: a closure's code is shared by every policy, and
                    # dynamo's per-code cache would hit its limit at the ninth one
                    self._core = torch.compile(with_own_code(self._make_core(obs)),
                                               fullgraph=True, dynamic=False)
            if self.lean == "categorical":
                action, log_prob = _categorical_sample(params["logits"])
            elif self.lean == "normal" and params["scale"].shape == params["loc"].shape:
                action, log_prob = _normal_sample(params["loc"], params["scale"],
                                                  self.event_dims)
            else:
                dist = self.dist_cls(**params, **self.dist_kwargs)
                action = dist.rsample() if dist.has_rsample else dist.sample()
                return action, dist.log_prob(action)
        return self._checked(obs, action, log_prob)

    def _checked(self, obs: torch.Tensor, action: torch.Tensor, log_prob: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        # numpy's check costs ~2 us on a few numbers, torch's ~10 (two ops and a sync)
        finite = (np.isfinite(log_prob.numpy()).all() if log_prob.device.type == "cpu"
                  else bool(torch.isfinite(log_prob).all()))
        if not finite:
            self._raise_non_finite(obs)
        return action, log_prob

    def _make_core(self, obs: torch.Tensor) -> Callable[..., Any]:
        """The function to compile: networks, then ``loc + noise * scale`` and its log-prob.

        It closes over as little as possible: each call first checks dynamo's guards on what
        the function reads, and with the whole policy object that check costs more than the
        graph saves. One network on the observation (ppokit's and most actors) is called
        directly; other chains go through :meth:`params`.
        """
        event_dims = self.event_dims
        names = tuple(dk for dk, _ in self.param_keys)
        steps = self.plan.steps
        net = steps[0].net if len(steps) == 1 else None
        if isinstance(net, DistributedDataParallel) and not _has_buffers(net.module):
            net = net.module
        if net is not None and steps[0].in_keys == (self.obs_key,) and isinstance(
                net(obs), (tuple, torch.Tensor)):
            out_keys = steps[0].out_keys
            where = tuple(out_keys.index(ik) for _, ik in self.param_keys)

            def run(obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
                out = net(obs)
                out = out if isinstance(out, tuple) else (out,)
                return tuple(out[i] for i in where)
        else:
            params = self.params

            def run(obs: torch.Tensor) -> tuple[torch.Tensor, ...]:
                values = params(obs)
                return tuple(values[name] for name in names)

        def core(obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            dist_params = dict(zip(names, run(obs)))
            return _normal_from_noise(dist_params["loc"], dist_params["scale"], noise,
                                      event_dims)

        return core

    def _compiled_sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torch.normal(loc, scale) draws exactly these numbers: loc + randn() * scale
        shape, dtype = self._noise[tuple(obs.shape)]
        return self._core(obs, torch.randn(shape, dtype=dtype))

    def _raise_non_finite(self, obs: torch.Tensor) -> None:
        with torch.no_grad():
            self.distribution(obs)  # the checked constructor names the bad parameter
        raise ValueError(
            "The policy produced a non-finite action log-prob from finite-looking "
            f"{self.dist_cls.__name__} parameters (overflow?). Check the observations and "
            "lower the learning rate."
        )


def _has_buffers(module: nn.Module) -> bool:
    return any(True for _ in module.buffers())


def _lean_kind(cls: type, keys: list[str], kwargs: dict[str, Any]) -> str | None:
    # exact classes only: a subclass may sample or score differently
    if cls is Categorical and keys == ["logits"] and not kwargs:
        return "categorical"
    if cls is IndependentNormal and sorted(keys) == ["loc", "scale"] and set(kwargs) <= {
            "event_dims"}:
        event_dims = kwargs.get("event_dims", 1)
        if isinstance(event_dims, int) and not isinstance(event_dims, bool) and event_dims >= 0:
            return "normal"
    return None


def _categorical_sample(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Categorical(logits).sample()`` and its ``log_prob``, as torch computes them."""
    if logits.ndim == 0 or not logits.is_floating_point():
        raise ValueError(
            f"Categorical: logits must be a floating-point tensor of shape [*B, num_actions], "
            f"got {logits.dtype} {list(logits.shape)}."
        )
    n = logits.shape[-1]
    norm = logits - logits.logsumexp(dim=-1, keepdim=True)
    try:
        index = torch.multinomial(norm.softmax(-1).reshape(-1, n), 1, True)
    except RuntimeError:  # NaN/inf probabilities: let the checked class say why
        Categorical(logits=logits)
        raise
    log_prob = norm.reshape(-1, n).gather(-1, index)
    return index.reshape(logits.shape[:-1]), log_prob.reshape(logits.shape[:-1])


def _normal_sample(loc: torch.Tensor, scale: torch.Tensor,
                   event_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``IndependentNormal(loc, scale).rsample()`` and its ``log_prob``, as torch computes them."""
    if event_dims > loc.ndim:
        IndependentNormal(loc, scale, event_dims=event_dims)  # raises the clear error
    try:
        action = torch.normal(loc, scale)  # = loc + N(0, 1) * scale, Normal.rsample's stream
    except RuntimeError:  # a NaN or negative scale: let the checked class say which
        IndependentNormal(loc, scale, event_dims=event_dims)
        raise
    return action, _normal_log_prob(action, loc, scale, event_dims)


def _normal_from_noise(loc: torch.Tensor, scale: torch.Tensor, noise: torch.Tensor,
                       event_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``loc + noise * scale`` and its ``IndependentNormal`` log-prob (traceable)."""
    action = loc + noise * scale
    return action, _normal_log_prob(action, loc, scale, event_dims)


def _normal_log_prob(action: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                     event_dims: int) -> torch.Tensor:
    """``IndependentNormal(loc, scale, event_dims).log_prob(action)`` with torch's ops."""
    log_prob = -((action - loc) ** 2) / (2 * scale**2) - scale.log() - _LOG_SQRT_2PI
    if event_dims:
        log_prob = log_prob.reshape((*log_prob.shape[:-event_dims], -1)).sum(-1)
    return log_prob


_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def tensor_policy(actor: object) -> TensorPolicy | None:
    """``TensorPolicy.for_actor(actor)``: a tensor-in/tensor-out view, or ``None``.

    Example:
        >>> from tensordict.nn import TensorDictModule
        >>> tensor_policy(TensorDictModule(nn.Linear(4, 2), ["observation"], ["action"])) is None
        True
    """
    return TensorPolicy.for_actor(actor)


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
        compile_policy: bool = False,
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
        # the leaves, held once, and numpy views of them (same memory): the loop writes by index
        leaves = {
            "obs": self.rollout.get("observation"),
            "act": self.rollout.get("action"),
            "logp": self.rollout.get(log_prob_key),
            "next_obs": self.rollout.get(("next", "observation")),
            "rew": self.rollout.get(("next", "reward")),
            "term": self.rollout.get(("next", "terminated")),
            "trunc": self.rollout.get(("next", "truncated")),
            "done": self.rollout.get(("next", "done")),
        }
        self._act_buf, self._logp_buf = leaves["act"], leaves["logp"]
        self._np = {name: leaf.numpy() for name, leaf in leaves.items()}
        self._step_td = TensorDict({}, batch_size=[n])
        self._ep_return = np.zeros(n, dtype=np.float64)
        self._ep_length = np.zeros(n, dtype=np.int64)
        self._stats = EpisodeStats()
        self.env_steps = 0
        self._obs: torch.Tensor | None = None
        self._seed = seed
        # fast path for the standard actor layout; any other TensorDict policy also works
        self._act = TensorPolicy.for_actor(policy, log_prob_key=log_prob_key,
                                           compile=compile_policy)

    def reset(self, *, seed: int | None = None) -> None:
        """Reset the environments (the next :meth:`collect` starts fresh episodes)."""
        raw = torch.from_numpy(self.env.reset_arrays(seed=seed))
        self._obs = self._normalize(raw)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0

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
        act = self._act if self._act is not None and self._act.usable() else None
        step_td, log_prob_key = self._step_td, self.log_prob_key
        norm = self.obs_normalizer
        if norm is not None and not norm.enabled:
            norm = None
        scaler = self.reward_scaler
        buf = self._np
        obs_b, act_b, logp_b, next_b = buf["obs"], buf["act"], buf["logp"], buf["next_obs"]
        rew_b, term_b, trunc_b, done_b = buf["rew"], buf["term"], buf["trunc"], buf["done"]
        ep_return, ep_length = self._ep_return, self._ep_length
        for t in range(self.num_steps):
            if act is not None:
                action, log_prob = act(obs)
            else:
                step_td.set("observation", obs)
                self.policy(step_td)
                action, log_prob = step_td.get("action"), step_td.get(log_prob_key)
            action_np = action.detach().cpu().numpy()
            obs_b[:, t] = obs.numpy()
            act_b[:, t] = action_np
            logp_b[:, t] = log_prob.detach().cpu().numpy()
            next_obs, obs_np, reward, terminated, truncated = self.env.step_arrays(action_np)
            done = terminated | truncated
            any_done = bool(done.any())
            if norm is not None:
                # one statistics update per step (with the observations the policy will see
                # next); the true final observation is mapped with the same statistics
                obs = norm.normalize(torch.from_numpy(obs_np))
                next_b[:, t] = (norm.normalize(torch.from_numpy(next_obs), update=False).numpy()
                                if any_done else obs.numpy())
            else:
                obs = torch.from_numpy(obs_np)
                next_b[:, t] = next_obs
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
                self._stats.returns.extend(ep_return[idx].tolist())
                self._stats.lengths.extend(ep_length[idx].tolist())
                ep_return[idx] = 0.0
                ep_length[idx] = 0
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
