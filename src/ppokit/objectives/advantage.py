"""How a PPO loss gets the advantage when the data has none: its value estimator."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn

from ppokit.objectives.keys import ESTIMATOR_KEYS, PPOKeys, key_str

__all__ = ["AdvantageEstimation"]


class AdvantageEstimation(nn.Module):
    """The value-estimator part of :class:`ppokit.PPOLoss` (a base class; not used alone).

    The estimator is built by :func:`ppokit.value.estimators.make_value_estimator` on the
    loss's critic, reads the loss's keys, and runs on the critic's parameters detached.
    """

    tensor_keys: PPOKeys
    critic_network: nn.Module | None
    critic_network_params: Any
    _functional: bool
    _value_estimator: nn.Module | None

    def _forward_keys_to_estimator(self) -> None:
        keys = {name: getattr(self.tensor_keys, name) for name in ESTIMATOR_KEYS}
        estimator: Any = self._value_estimator
        estimator.set_keys(**keys)

    def make_value_estimator(self, value_type: str | Any = "gae",
                             **hyperparams: Any) -> AdvantageEstimation:
        """Choose how the loss computes advantages when the data has none.

        Args:
            value_type: ``"gae"`` (default), ``"td_lambda"``, ``"td0"`` or ``"td1"`` (or a
                :class:`~ppokit.ValueEstimators` member).
            **hyperparams: passed to the estimator, e.g. ``gamma=0.99, lmbda=0.95``.
                GAE and TD(lambda) default to gamma 0.99 and lambda 0.95, TD(0)/TD(1) to
                gamma 0.99.

        Example:
            >>> from torch import nn
            >>> from tensordict.nn import TensorDictModule
            >>> from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor, ValueOperator
            >>> actor = ProbabilisticActor(
            ...     TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"]),
            ...     in_keys=["logits"], distribution_class=Categorical)
            >>> loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(3, 1)))
            >>> type(loss.make_value_estimator("td_lambda", gamma=0.9).value_estimator).__name__
            'TDLambdaEstimate'
        """
        from ppokit.value.estimators import make_value_estimator

        if self.critic_network is None:
            raise ValueError(
                "make_value_estimator() needs a critic_network; this loss was built without one."
            )
        kind = getattr(value_type, "value", value_type)
        if kind in ("gae", "td_lambda"):
            hyperparams.setdefault("lmbda", 0.95)
        hyperparams.setdefault("gamma", 0.99)
        self._value_estimator = make_value_estimator(
            value_type, value_network=self.critic_network, **hyperparams
        )
        self._forward_keys_to_estimator()
        return self

    @property
    def value_estimator(self) -> nn.Module:
        """The advantage estimator run when the data has no advantage (GAE by default)."""
        if self._value_estimator is None:
            self.make_value_estimator()
        estimator: nn.Module = self._value_estimator  # type: ignore[assignment]
        return estimator

    @value_estimator.setter
    def value_estimator(self, estimator: nn.Module) -> None:
        self._value_estimator = estimator

    def _estimate_advantage(self, work: TensorDictBase) -> torch.Tensor:
        keys = self.tensor_keys
        if self.critic_network is None:
            raise KeyError(
                f"The input has no {key_str(keys.advantage)} entry and the loss has no critic "
                "to compute it: add the advantage to the data (e.g. with ppokit.GAE)."
            )
        params = self.critic_network_params.detach() if self._functional else None
        try:
            self.value_estimator(work, params=params)
        except KeyError as err:
            raise KeyError(
                f"The input has no {key_str(keys.advantage)} entry, so the loss ran its value "
                f"estimator, which failed: {err}. If the critic reads features computed by the "
                "actor (a value head on a shared trunk), compute the advantage beforehand with "
                "the full value operator, e.g. GAE(..., value_network=model.get_value_operator())."
            ) from err
        return work.get(keys.advantage)
