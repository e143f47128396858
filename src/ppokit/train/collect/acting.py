"""Acting on plain tensors: the actor's networks, then the distribution's own draw and score.

One acting path. :class:`TensorPolicy` runs an actor's networks on an observation tensor and
hands their outputs to a sampling step taken from :mod:`ppokit.modules.distributions`:

* ppokit's ``Categorical`` (``logits``):
  :func:`~ppokit.modules.distributions.categorical_sample_and_log_prob`;
* ppokit's ``IndependentNormal``:
  :func:`~ppokit.modules.distributions.normal_sample_and_log_prob`;
* any other ``torch.distributions`` class: the class itself, ``rsample()`` (or ``sample()``)
  and ``log_prob``, as tensordict acts in ``InteractionType.RANDOM``.

Those functions are what the classes' own ``sample``/``rsample``/``log_prob`` call, so the
numbers are those of the TensorDict actor (same random stream), without building the
distribution object or writing a TensorDict per step. The compiled variant
(``compile=True``) is ``torch.compile`` of the same two calls (networks, then
``normal_sample_and_log_prob`` with the noise drawn eagerly); the deterministic (evaluation)
action is the built distribution's ``deterministic_sample``. Data-parallel networks are called
through their ``.module`` (acting synchronises no gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictModule, ProbabilisticTensorDictSequential
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ppokit.fast.compile import with_own_code
from ppokit.internals.direct import ModulePlan
from ppokit.modules.distributions import (
    Categorical,
    IndependentNormal,
    categorical_sample_and_log_prob,
    normal_sample_and_log_prob,
)

__all__ = ["TensorPolicy", "tensor_policy"]

Params = tuple[torch.Tensor, ...]
Sampler = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class TensorPolicy:
    """A tensordict actor run on plain tensors: ``obs [N, *obs] -> (action, log_prob [N])``.

    Made by :meth:`for_actor` for the actors whose semantics it reproduces exactly: a
    ``ProbabilisticTensorDictSequential`` (e.g. ``ProbabilisticActor``) made of plain
    ``TensorDictModule``\\ s reading ``"observation"`` and ending in one
    ``ProbabilisticTensorDictModule`` that writes ``"action"`` and its log-prob (the structure
    check is :class:`ppokit.internals.direct.ModulePlan`'s). A call runs the very same networks
    on the same tensors and draws and scores with the distribution's own functions (module
    docstring): the same numbers, without the per-step TensorDict writes.

    The lean steps (``lean`` is ``"categorical"`` or ``"normal"``) skip the distribution's
    per-step parameter checks; instead a call raises ``ValueError`` when a log-prob is not
    finite (NaN/Inf/invalid parameters always lead there), after rebuilding the checked
    distribution so its message names the bad parameter. The environment never receives such
    an action. The returned tensors are inference tensors (made under
    ``torch.inference_mode``): ``.clone()`` them before any use in autograd.

    Args:
        plan: the actor's module plan (``ModulePlan.for_actor``).

    Keyword Args:
        obs_key: the one key the networks read.
        compile: for ``IndependentNormal`` policies, run the networks and the draw's arithmetic
            as one ``torch.compile`` graph after one eager call per batch size (a compiled
            call's fixed cost outweighs the few eager ops of a categorical step, so those
            stay eager). Networks whose ``DistributedDataParallel`` wrapper syncs buffers act
            eagerly.

    Example:
        >>> from ppokit.envs import GymVecEnv
        >>> from ppokit.train.trainer import build_actor_critic
        >>> env = GymVecEnv("CartPole-v1", 1)
        >>> act = TensorPolicy.for_actor(build_actor_critic(env)[0])
        >>> action, log_prob = act(torch.zeros(3, 4))
        >>> action.shape, log_prob.shape, act.lean
        (torch.Size([3]), torch.Size([3]), 'categorical')
        >>> env.close()
    """

    def __init__(
        self, plan: ModulePlan, *, obs_key: NestedKey = "observation", compile: bool = False
    ) -> None:
        dist_module = plan.dist_module
        if dist_module is None:
            raise ValueError(
                "TensorPolicy needs an actor's plan (ModulePlan.for_actor), "
                "got a critic's (no distribution module)."
            )
        self.plan = plan
        self.obs_key = obs_key
        self.dist_cls = dist_module.distribution_class
        self.dist_kwargs = dict(dist_module.distribution_kwargs or {})
        #: the distribution's keyword parameter names, in the order the networks' outputs are read
        self.names = tuple(dk[-1] if isinstance(dk, tuple) else dk for dk in dist_module.dist_keys)
        self.lean = _lean_kind(self.dist_cls, list(self.names), self.dist_kwargs)
        self.event_dims = int(self.dist_kwargs.get("event_dims", 1))
        self._networks = _network_function(plan, obs_key, tuple(dist_module.in_keys))
        self._sample = self._sampler()
        # compile: the random numbers are still drawn eagerly from torch's generator (the
        # same stream as the eager path), so only float rounding can differ
        self._compile = (
            compile
            and self.lean == "normal"
            and not any(_syncs_buffers(step.net) for step in plan.steps)
        )
        self._core: Callable[..., Any] | None = None  # built at the first (eager) call
        # obs shape -> (graph, shape and torch.randn keywords of the noise a step draws)
        self._noise: dict[
            tuple[int, ...], tuple[Callable[..., Any], torch.Size, dict[str, Any]]
        ] = {}

    @classmethod
    def for_actor(
        cls,
        actor: object,
        *,
        log_prob_key: NestedKey = "action_log_prob",
        obs_key: NestedKey = "observation",
        sampling: bool = True,
        compile: bool = False,
    ) -> TensorPolicy | None:
        """The tensor view of ``actor``, or ``None`` when its structure is not reproduced.

        ``sampling=False``: only :meth:`distribution` will be used (evaluation), so the
        actor's sample and log-prob keys do not matter. ``compile``: as in the class.
        """
        if not isinstance(actor, nn.Module):
            return None
        plan = ModulePlan.for_actor(actor)
        # a composite distribution's parameter sub-tree is not handed over as leaf tensors
        if plan is None or plan.dist_module is None or plan.subtrees:
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
        if plan.external_keys() != [obs_key] or not (
            isinstance(last.distribution_class, type)
            and issubclass(last.distribution_class, D.Distribution)
        ):
            return None
        return cls(plan, obs_key=obs_key, compile=compile)

    def usable(self) -> bool:
        """False when hooks, ``set_skip_existing`` or a swapped network forbid the fast path."""
        return self.plan.usable()

    def params(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the networks; the distribution's keyword parameters (e.g. ``loc``, ``scale``)."""
        return dict(zip(self.names, self._networks(obs)))

    def distribution(self, obs: torch.Tensor) -> D.Distribution:
        """The actor's distribution at ``obs``, built (and checked) by its class."""
        return self.dist_cls(**self.params(obs), **self.dist_kwargs)

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``action [N, *act]`` and its log-prob ``[N]`` (no gradient)."""
        with torch.inference_mode():
            if tuple(obs.shape) in self._noise:  # a graph exists for this batch size
                action, log_prob = self._compiled_sample(obs)
            else:
                values = self._networks(obs)
                if self._compile:
                    self._prepare_compiled(obs, values)
                action, log_prob = self._sample(*values)
        # numpy's check costs ~2 us on a few numbers, torch's ~10 (two ops and a sync)
        finite = (
            np.isfinite(log_prob.numpy()).all()
            if log_prob.device.type == "cpu"
            else bool(torch.isfinite(log_prob).all())
        )
        if not finite:
            self._raise_non_finite(obs)
        return action, log_prob

    def _sampler(self) -> Sampler:
        """The draw-and-score step for this distribution, on the network outputs in order."""
        names, cls, kwargs = self.names, self.dist_cls, self.dist_kwargs

        def with_class(*values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            dist = cls(**dict(zip(names, values)), **kwargs)
            action = dist.rsample() if dist.has_rsample else dist.sample()
            return action, dist.log_prob(action)

        if self.lean == "categorical":
            return categorical_sample_and_log_prob
        if self.lean == "normal":
            event_dims, i_loc, i_scale = self.event_dims, names.index("loc"), names.index("scale")

            def normal(*values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                loc, scale = values[i_loc], values[i_scale]
                if scale.shape != loc.shape or event_dims > loc.ndim:
                    return with_class(*values)  # broadcasting or a bad event_dims: the class
                return normal_sample_and_log_prob(loc, scale, event_dims)

            return normal
        return with_class

    def _prepare_compiled(self, obs: torch.Tensor, values: Params) -> None:
        """At an eager call: remember the noise this batch size needs; build the graph once."""
        loc, scale = values[self.names.index("loc")], values[self.names.index("scale")]
        if scale.shape != loc.shape or self.event_dims > loc.ndim:
            return
        if self._core is None:
            # only locals in the closure: dynamo checks its guards on what the function reads
            # at every call, and guarding the whole policy object costs more than the graph
            # saves; its own code object, as dynamo's per-code cache would hit its limit at
            # the ninth policy sharing one
            networks, event_dims = self._networks, self.event_dims
            i_loc, i_scale = self.names.index("loc"), self.names.index("scale")

            def core(obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                out = networks(obs)
                return normal_sample_and_log_prob(out[i_loc], out[i_scale], event_dims, noise=noise)

            self._core = torch.compile(with_own_code(core), fullgraph=True, dynamic=False)
        # randn's device argument has a per-call parsing cost: given only off the CPU
        kw: dict[str, Any] = {"dtype": loc.dtype}
        if loc.device.type != "cpu":
            kw["device"] = loc.device
        self._noise[tuple(obs.shape)] = (self._core, loc.shape, kw)

    def _compiled_sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the noise normal_rsample would draw (torch.randn: the eager path's random stream)
        core, shape, kw = self._noise[tuple(obs.shape)]
        return core(obs, torch.randn(shape, **kw))

    def _raise_non_finite(self, obs: torch.Tensor) -> None:
        with torch.no_grad():
            self.distribution(obs)  # the checked constructor names the bad parameter
        raise ValueError(
            "The policy produced a non-finite action log-prob from finite-looking "
            f"{self.dist_cls.__name__} parameters (overflow?). Check the observations and "
            "lower the learning rate."
        )


def tensor_policy(actor: object) -> TensorPolicy | None:
    """``TensorPolicy.for_actor(actor)``: a tensor-in/tensor-out view, or ``None``.

    Example:
        >>> from tensordict.nn import TensorDictModule
        >>> tensor_policy(TensorDictModule(nn.Linear(4, 2), ["observation"], ["action"])) is None
        True
    """
    return TensorPolicy.for_actor(actor)


def _lean_kind(cls: type, keys: list[str], kwargs: dict[str, Any]) -> str | None:
    # exact classes only: a subclass may sample or score differently
    if cls is Categorical and keys == ["logits"] and not kwargs:
        return "categorical"
    if (
        cls is IndependentNormal
        and sorted(keys) == ["loc", "scale"]
        and set(kwargs) <= {"event_dims"}
    ):
        event_dims = kwargs.get("event_dims", 1)
        if isinstance(event_dims, int) and not isinstance(event_dims, bool) and event_dims >= 0:
            return "normal"
    return None


def _syncs_buffers(net: nn.Module) -> bool:
    """A data-parallel network whose forward must run (it broadcasts buffers)."""
    return isinstance(net, DistributedDataParallel) and any(True for _ in net.module.buffers())


def _acting_net(net: nn.Module) -> nn.Module:
    # no gradient to synchronise when acting; buffers would need DDP's own forward
    if isinstance(net, DistributedDataParallel) and not _syncs_buffers(net):
        return net.module
    return net


def _outputs(
    name: str, out_keys: tuple[NestedKey, ...], out: Any, batch: torch.Size
) -> tuple[torch.Tensor, ...]:
    """A network's return value as the tuple ``TensorDictModule`` would write, checked."""
    if isinstance(out, (dict, TensorDictBase)) and all(k in out for k in out_keys):
        out = tuple(out.get(k) for k in out_keys)  # as TensorDictModule reads it
    elif not isinstance(out, tuple):
        out = (out,)
    if len(out) != len(out_keys):
        raise RuntimeError(
            f"{name} declares out_keys {list(out_keys)} but its module returned "
            f"{len(out)} value(s)."
        )
    for key, value in zip(out_keys, out):
        if key != "_" and (not isinstance(value, torch.Tensor) or value.shape[:1] != batch):
            raise ValueError(
                f"{name} wrote {key!r} as {type(value).__name__} "
                f"{tuple(getattr(value, 'shape', ()))}; expected a tensor starting with the "
                f"batch dim {tuple(batch)}."
            )
    return out


def _network_function(
    plan: ModulePlan, obs_key: NestedKey, in_keys: tuple[NestedKey, ...]
) -> Callable[[torch.Tensor], Params]:
    """``obs -> (the distribution's inputs in order)``: the plan's networks, no TensorDict.

    It closes over the networks and key tuples only (not the plan), which keeps the compiled
    graph's guards few. ``"_"`` is tensordict's "discard this output".
    """
    steps = [
        (type(s.wrapper).__name__, _acting_net(s.net), s.in_keys, s.out_keys) for s in plan.steps
    ]
    if len(steps) == 1 and steps[0][2] == (obs_key,) and all(k in steps[0][3] for k in in_keys):
        name, net, _, out_keys = steps[0]
        where = tuple(out_keys.index(k) for k in in_keys)

        def one_network(obs: torch.Tensor) -> Params:
            out = _outputs(name, out_keys, net(obs), obs.shape[:1])
            return tuple(out[i] for i in where)

        return one_network

    def chain(obs: torch.Tensor) -> Params:
        values: dict[NestedKey, torch.Tensor] = {obs_key: obs}
        batch = obs.shape[:1]
        for name, net, step_in, out_keys in steps:
            out = _outputs(name, out_keys, net(*(values[k] for k in step_in)), batch)
            values.update((k, v) for k, v in zip(out_keys, out) if k != "_")
        return tuple(values[k] for k in in_keys)

    return chain
