"""How a PPO loss gets the advantage when the data has none: its value estimator."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn

from ppokit.objectives.keys import ESTIMATOR_KEYS, OPTIONAL_ESTIMATOR_KEYS, PPOKeys, key_str

__all__ = ["AdvantageEstimation"]


class AdvantageEstimation(nn.Module):
    """The value-estimator part of :class:`ppokit.PPOLoss` (a base class; not used alone).

    The estimator is built by :func:`ppokit.value.estimators.make_value_estimator` on the
    loss's critic, reads the loss's keys, and runs on the critic's parameters detached.
    """

    tensor_keys: PPOKeys
    critic_network: nn.Module | None
    actor_network: nn.Module
    value_type: Any = None
    critic_network_params: Any
    _functional: bool
    _value_estimator: nn.Module | None
    #: whether the estimator runs the loss's critic (then on the loss's critic parameters)
    _estimator_on_critic: bool = True

    def _keys_changed(self) -> None:
        if self._value_estimator is not None:
            self._forward_keys_to_estimator()

    def _forward_keys_to_estimator(self) -> None:
        estimator: Any = self._value_estimator
        for name in ESTIMATOR_KEYS:
            try:
                estimator.set_keys(**{name: getattr(self.tensor_keys, name)})
            except (KeyError, ValueError, TypeError):
                # only V-trace reads the action and its log-prob; other estimators (TorchRL's
                # included) refuse those names, and need not know them
                if name not in OPTIONAL_ESTIMATOR_KEYS:
                    raise

    def make_value_estimator(
        self,
        value_type: str | Any = "gae",
        *,
        value_network: nn.Module | None = None,
        **hyperparams: Any,
    ) -> AdvantageEstimation:
        """Choose how the loss computes advantages when the data has none.

        Args:
            value_type: what :func:`ppokit.value.estimators.make_value_estimator` accepts:
                ``"gae"`` (default), ``"td_lambda"``, ``"td0"``, ``"td1"``, ``"magae"``
                (multi-agent GAE), ``"vtrace"`` (V-trace, scoring the stored action with the
                loss's actor), a :class:`~ppokit.ValueEstimators` member, TorchRL's
                ``ValueEstimators``, an estimator class or an instance.
            value_network: the network the estimator runs (default: the loss's critic,
                then on the loss's detached critic parameters).
            **hyperparams: passed to the estimator, e.g. ``gamma=0.99, lmbda=0.95``; the
                defaults are that function's.

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

        network = self.critic_network if value_network is None else value_network
        if network is None:
            raise ValueError(
                "make_value_estimator() needs a value network: this loss has no critic, so "
                "pass value_network=<a ValueOperator>."
            )
        self._value_estimator = make_value_estimator(
            value_type, value_network=network, actor_network=self.actor_network, **hyperparams
        )
        #: the estimator's class (TorchRL's attribute), e.g. ``GAE``
        self.value_type = (
            value_type if isinstance(value_type, type) else type(self._value_estimator)
        )
        # the loss's own critic runs on the loss's (detached) parameters; another network
        # on its own
        self._estimator_on_critic = network is self.critic_network
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
        # an estimator set by hand is taken to run the loss's critic, as before
        self._value_estimator = estimator
        self._estimator_on_critic = True

    def _estimate_advantage(self, work: TensorDictBase) -> torch.Tensor:
        keys = self.tensor_keys
        if self.critic_network is None and self._value_estimator is None:
            raise KeyError(
                f"The input has no {key_str(keys.advantage)} entry and the loss has no critic "
                "to compute it: add the advantage to the data (e.g. with ppokit.GAE), or call "
                "loss.make_value_estimator(value_network=...)."
            )
        estimator: Any = self.value_estimator
        params = None
        critic_params = self.critic_network_params
        if self._functional and self._estimator_on_critic and critic_params is not None:
            params = critic_params.detach()
        try:
            estimator(work, params=params)
        except KeyError as err:
            raise KeyError(
                f"The input has no {key_str(keys.advantage)} entry, so the loss ran its value "
                f"estimator, which failed: {err}. If the critic reads features computed by the "
                "actor (a value head on a shared trunk), compute the advantage beforehand with "
                "the full value operator, e.g. GAE(..., value_network=model.get_value_operator())."
            ) from err
        return work.get(keys.advantage)
