"""Acting with a structured (composite-distribution) actor on plain tensors.

:func:`~ppokit.modules.heads.structured_actor` is a ``ProbabilisticTensorDictSequential``:
one ``TensorDictModule`` writing each head's parameters under ``"params"``, then a
``ProbabilisticTensorDictModule`` building a ``CompositeDistribution``. Called as a TensorDict
module every step, tensordict's bookkeeping (a TensorDict per head and per output, the import
probes of ``TensorDict.set``, the composite's sample and log-prob TensorDicts) cost more than
the networks. :class:`StructuredActing` runs the same networks through
:class:`~ppokit.internals.direct.ModulePlan` (the loss's direct path) and draws and scores
each head with the distribution classes of the composite, in its order: the very numbers of
the TensorDict call (the same random stream, the same operations), as the flat path's
:class:`~ppokit.train.collect.acting.TensorPolicy` does for single distributions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tensordict.nn import (
    CompositeDistribution,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from tensordict.nn.utils import composite_lp_aggregate
from tensordict.utils import NestedKey

from ppokit.internals.direct import ModulePlan, TensorReader
from ppokit.modules.distributions.checks import deferred_param_checks
from ppokit.objectives.composite import log_prob_key

__all__ = ["StructuredActing"]


def _tuple(key: NestedKey) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)


class StructuredActing:
    """A composite-distribution actor run on tensors: leaves in, each head's action out.

    Made by :meth:`for_actor` for the structure :func:`~ppokit.modules.heads.structured_actor`
    builds (``None`` for anything else: the caller then calls the actor as a TensorDict
    module). A call returns, keyed as the TensorDict call writes them, every head's action and
    its log-prob (``"<head>_log_prob"``), and the heads' log-probs summed in the actor's
    ``log_prob_keys`` order.

    Example:
        >>> from ppokit.envs.structured import StructuredVecEnv
        >>> from ppokit.train.structured.training import build_structured_actor_critic
        >>> env = StructuredVecEnv("ppokit/TicTacToe-v0", 2)
        >>> actor, _ = build_structured_actor_critic(env)
        >>> act = StructuredActing.for_actor(actor)
        >>> obs = env.reset(seed=0)  # leaves "observation" [2, 3, 3, 2] and "action_mask" [2, 9]
        >>> act.in_keys
        (('observation', 'observation'), ('observation', 'action_mask'))
        >>> with torch.no_grad():
        ...     out, summed = act({k: obs.get(k[1:]) for k in act.in_keys})
        >>> sorted(out), summed.shape
        (['action', 'action_log_prob'], torch.Size([2]))
        >>> env.close()
    """

    def __init__(
        self,
        plan: ModulePlan,
        dist: ProbabilisticTensorDictModule,
        in_keys: tuple[NestedKey, ...],
        log_prob_keys: list[NestedKey],
    ) -> None:
        self.plan = plan
        self.in_keys = in_keys
        kwargs = dict(dist.distribution_kwargs or {})
        extra: dict[Any, dict[str, Any]] = kwargs.get("extra_kwargs") or {}
        written = [_tuple(k) for k in plan.written_keys()]
        #: per head, in the composite's order: (action key, class, {param: written key}, kwargs)
        self.heads: list[tuple[NestedKey, type, dict[str, NestedKey], dict[str, Any]]] = []
        for key, cls in kwargs["distribution_map"].items():
            prefix = ("params", *_tuple(key))
            params = {w[-1]: w for w in written if w[:-1] == prefix}
            self.heads.append((key, cls, params, dict(extra.get(key, {}))))
        lp_keys = [log_prob_key(key) for key, *_ in self.heads]
        # the summation order of the TensorDict route (StructuredCollector's)
        self.sum_order = [lp_keys.index(k) for k in log_prob_keys]

    @classmethod
    def for_actor(cls, actor: object) -> StructuredActing | None:
        """The tensor view of a structured actor, or ``None`` when it is another structure."""
        if not isinstance(actor, ProbabilisticTensorDictSequential) or (
            type(actor).forward is not ProbabilisticTensorDictSequential.forward
        ):
            return None
        parts = list(actor.module)
        if len(parts) != 2 or not isinstance(parts[0], TensorDictModule):
            return None
        det, last = parts
        if (
            type(last) is not ProbabilisticTensorDictModule
            or last.distribution_class is not CompositeDistribution
            or not last.return_log_prob
            or last.num_samples is not None
            or [_tuple(k) for k in last.in_keys] != [("params",)]
            or set((last.distribution_kwargs or {}).keys()) - {"distribution_map", "extra_kwargs"}
            or getattr(last, "_generator", None) is not None
            or getattr(last, "_generator_key", None) is not None
        ):
            return None
        plan = ModulePlan.for_critic(det)
        if plan is None or not all(_tuple(k)[0] == "params" for k in plan.written_keys()):
            return None
        full = ModulePlan(plan.steps, [*plan.wrappers, actor, last])
        in_keys = tuple(full.external_keys())
        return cls(full, last, in_keys, list(actor.log_prob_keys))

    def usable(self) -> bool:
        """False when hooks, ``set_skip_existing`` or aggregated composite log-probs (a
        different output layout) forbid the tensor route."""
        return self.plan.usable() and not composite_lp_aggregate()

    def __call__(
        self, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> tuple[dict[NestedKey, torch.Tensor], torch.Tensor]:
        """Sample every head: ``({action key: action, log-prob key: log-prob}, summed [N])``.

        ``inputs``: the tensors at :attr:`in_keys` (the leaves and the mask), batch ``[N]``.
        No gradient: the outputs are inference tensors (``torch.inference_mode``, as the flat
        path's ``TensorPolicy``); copy them (e.g. into the rollout) before any autograd use.
        """
        with torch.inference_mode():
            return self._act(inputs)

    def _act(
        self, inputs: Mapping[NestedKey, torch.Tensor]
    ) -> tuple[dict[NestedKey, torch.Tensor], torch.Tensor]:
        batch = next(iter(inputs.values())).shape[:1]
        written = self.plan.run(TensorReader({}, inputs), batch)
        # the heads' per-step value checks (host syncs) are deferred, as the flat path's
        # TensorPolicy does: a non-finite log-prob (what a bad parameter leads to) raises below
        try:
            with deferred_param_checks():
                dists = self._dists(written)
                # as CompositeDistribution.sample (its has_rsample is False): every head's
                # sample(), in the map's order, then every head's log_prob
                actions = [(key, d.sample()) for key, d in dists]
                log_probs = [d.log_prob(a) for (_, d), (_, a) in zip(dists, actions)]
        except RuntimeError:  # e.g. torch.multinomial on NaN probabilities
            self._dists(written)  # the checked constructors name a bad parameter
            raise
        out: dict[NestedKey, torch.Tensor] = {}
        for (key, action), lp in zip(actions, log_probs):
            out[key] = action
            out[log_prob_key(key)] = lp
        first, *rest = (log_probs[i] for i in self.sum_order)
        summed = sum(rest, first)
        if not np.isfinite(summed.numpy()).all():  # numpy's check: no torch sync per step
            self._dists(written)  # the checked constructors name the bad parameter
            raise ValueError(
                "The structured policy produced a non-finite action log-prob from "
                "finite-looking parameters (overflow?). Check the observations and lower the "
                "learning rate."
            )
        return out, summed

    def _dists(self, written: Mapping[NestedKey, torch.Tensor]) -> list[tuple[NestedKey, Any]]:
        return [
            (key, cls(**{n: written[w] for n, w in params.items()}, **kw))
            for key, cls, params, kw in self.heads
        ]
