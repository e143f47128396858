"""Acting with a recurrent actor on plain tensors: the collector's step without TensorDicts.

A TensorDict module call costs far more than the small networks it runs, and a recurrent step
runs two chains (the actor, and a critic with its own core). :class:`RecurrentActing`
reproduces a chain made only of plain ``TensorDictModule``\\ s and ppokit recurrent cores,
ending in ``Categorical(logits)`` or ``IndependentNormal(loc, scale)`` (what
``--recurrent lstm/gru`` builds): the same networks on the same tensors, drawn and scored by
the distributions' own functions (as :class:`~ppokit.train.collect.acting.TensorPolicy` does for
feed-forward actors). Any other actor returns ``None`` and is called as a TensorDict module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from tensordict.nn import (
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictSequential,
)
from tensordict.utils import NestedKey
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ppokit.modules.distributions import (
    Categorical,
    IndependentNormal,
    categorical_sample_and_log_prob,
    normal_sample_and_log_prob,
)
from ppokit.modules.recurrent import RecurrentModuleBase

__all__ = ["RecurrentActing", "TensorChain"]

Values = dict[NestedKey, torch.Tensor]


def _plain(module: nn.Module) -> bool:
    return (
        type(module).forward is TensorDictModule.forward
        and getattr(module, "method", None) is None
        and not module._forward_hooks  # noqa: SLF001 (a hook would not run here)
        and not module._forward_pre_hooks  # noqa: SLF001
    )


def _steps(module: nn.Module) -> Iterator[nn.Module] | None:
    """The leaf modules of a TensorDict chain in call order (None: a leaf)."""
    if isinstance(module, TensorDictSequential) and type(module).forward in (
        TensorDictSequential.forward,
        ProbabilisticTensorDictSequential.forward,
    ):
        return iter(module.module)
    return None


def _flatten(module: nn.Module) -> list[nn.Module]:
    inner = _steps(module)
    if inner is None:
        return [module]
    return [leaf for sub in inner for leaf in _flatten(sub)]


def _net(module: nn.Module) -> nn.Module:
    # a data-parallel wrapper synchronises gradients only: acting calls the network itself
    net: Any = module.module
    return net.module if isinstance(net, DistributedDataParallel) else net


class TensorChain:
    """A chain of plain TensorDict modules and recurrent cores run on a dict of tensors.

    The cores run one step; their next states go to ``values[("next", key)]``.
    """

    def __init__(self, leaves: list[nn.Module]) -> None:
        self.leaves = leaves
        self.calls: list[Callable[[Values], None]] = [self._call(m) for m in leaves]

    @classmethod
    def of(cls, module: nn.Module) -> TensorChain | None:
        """The chain of ``module``, or ``None`` when it holds anything else."""
        leaves = _flatten(module)
        if not all(isinstance(m, RecurrentModuleBase) or _plain(m) for m in leaves):
            return None
        return cls(leaves)

    @staticmethod
    def _call(module: nn.Module) -> Callable[[Values], None]:
        if isinstance(module, RecurrentModuleBase):
            core = module

            def step_core(values: Values) -> None:
                y, finals = core.run_tensors(
                    values[core.in_key],
                    values["is_init"],
                    [values[k] for k in core.state_keys],
                    sequence=False,
                )
                values[core.out_key] = y
                for key, s in zip(core.state_keys, finals or ()):
                    values[("next", key)] = s

            return step_core
        td_module: Any = module
        net, in_keys, out_keys = _net(module), list(td_module.in_keys), list(td_module.out_keys)

        def step_net(values: Values) -> None:
            out = net(*(values[k] for k in in_keys))
            out = out if isinstance(out, tuple) else (out,)
            values.update((k, v) for k, v in zip(out_keys, out) if k != "_")

        return step_net

    def __call__(self, values: Values) -> Values:
        for call in self.calls:
            call(values)
        return values


class RecurrentActing:
    """One acting step of a recurrent actor (and a critic core stepped beside it) on tensors.

    ``act(values)`` reads ``"observation"``, ``"is_init"`` and the states from ``values`` and
    returns ``(action, log_prob)``, leaving the next states under ``("next", key)``.

    Example:
        >>> from ppokit.envs.gym import GymVecEnv
        >>> from ppokit.train.build import build_actor_critic
        >>> with GymVecEnv("CartPole-v1", 1) as env:
        ...     actor, critic = build_actor_critic(env, recurrent="gru", recurrent_size=8)
        >>> RecurrentActing.for_modules(actor, critic, step_critic=True) is not None
        True
    """

    def __init__(
        self,
        actor: TensorChain,
        sample: Callable[[Values], tuple[torch.Tensor, torch.Tensor]],
        critic: TensorChain | None,
    ) -> None:
        self.actor, self.sample, self.critic = actor, sample, critic

    @classmethod
    def for_modules(
        cls,
        actor: nn.Module,
        critic: nn.Module,
        *,
        step_critic: bool,
        log_prob_key: NestedKey = "action_log_prob",
    ) -> RecurrentActing | None:
        """The tensor path for ``actor`` (and ``critic`` if ``step_critic``), or ``None``."""
        if not isinstance(actor, ProbabilisticTensorDictSequential):
            return None
        leaves = _flatten(actor)
        last = leaves[-1]
        if (
            not isinstance(last, ProbabilisticTensorDictModule)
            or type(last).forward is not ProbabilisticTensorDictModule.forward
            or not last.return_log_prob
            or last.log_prob_key != log_prob_key
            or list(last.dist_sample_keys) != ["action"]
        ):
            return None
        chain = TensorChain.of(TensorDictSequential(*leaves[:-1]))
        critic_chain = TensorChain.of(critic) if step_critic else None
        sample = _sampler(last)
        if chain is None or sample is None or (step_critic and critic_chain is None):
            return None
        return cls(chain, sample, critic_chain)

    def act(self, values: Values) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample an action ``[N, *act]`` and its log-prob ``[N]``; next states in ``values``."""
        self.actor(values)
        action, log_prob = self.sample(values)
        if self.critic is not None:
            self.critic(values)
        if not bool(torch.isfinite(log_prob).all()):
            raise ValueError(
                "The recurrent policy produced a non-finite action log-prob (NaN/Inf in its "
                "outputs). Check the observations and lower the learning rate."
            )
        return action, log_prob


def _sampler(
    module: ProbabilisticTensorDictModule,
) -> Callable[[Values], tuple[torch.Tensor, torch.Tensor]] | None:
    cls, kwargs = module.distribution_class, dict(module.distribution_kwargs or {})
    # the distribution's parameter names, and the keys they are read from, in one order
    names = [k[-1] if isinstance(k, tuple) else k for k in module.dist_keys]
    keys = list(module.in_keys)
    if cls is Categorical and names == ["logits"] and not kwargs:
        key = keys[0]
        return lambda values: categorical_sample_and_log_prob(values[key])
    if (
        cls is IndependentNormal
        and sorted(names) == ["loc", "scale"]
        and set(kwargs) <= {"event_dims"}
    ):
        event_dims = int(kwargs.get("event_dims", 1))
        loc_key, scale_key = keys[names.index("loc")], keys[names.index("scale")]

        def normal(values: Values) -> tuple[Any, Any]:
            return normal_sample_and_log_prob(values[loc_key], values[scale_key], event_dims)

        return normal
    return None
