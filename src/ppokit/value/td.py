"""TD(0), TD(1) and TD(lambda) value targets as TensorDict modules (TorchRL names, defaults).

Each writes ``value_target`` (the return estimate) and ``advantage = value_target - V(s_t)``.
"""

from __future__ import annotations

import abc

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from ppokit.objectives.functional import standardize
from ppokit.value.base import Signals, ValueEstimatorBase, next_key
from ppokit.value.functional import (
    td0_return_estimate,
    td1_return_estimate,
    td_lambda_return_estimate,
)

__all__ = ["TD0Estimate", "TD1Estimate", "TDLambdaEstimate"]


class _TDTargetEstimate(ValueEstimatorBase):
    """Shared body of the TD estimators: a value target, and advantage = target - V(s_t)."""

    def __init__(
        self,
        *,
        gamma: float | Tensor,
        value_network: TensorDictModuleBase | None,
        average_rewards: bool = False,
        differentiable: bool = False,
        skip_existing: bool | None = None,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(
            value_network=value_network,
            differentiable=differentiable,
            skip_existing=skip_existing,
            time_dim=time_dim,
        )
        self._set_discount("gamma", gamma)
        self.average_rewards = average_rewards

    @abc.abstractmethod
    def _target(
        self,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> Tensor:
        """The value target ``[*B, T, F]``."""

    def _estimate(
        self,
        tensordict: TensorDictBase,
        value: Tensor,
        next_value: Tensor,
        signals: Signals,
        time_dim: int,
    ) -> tuple[Tensor, Tensor]:
        reward, mask = signals.reward, signals.mask
        if self.average_rewards:  # TorchRL's average_rewards: standardise the rewards
            reward = standardize(reward, mask, eps=1e-5)
        target = self._target(next_value, reward, signals.done, signals.terminated, mask, time_dim)
        if self.average_rewards:  # written back (as TorchRL) once nothing can fail any more
            tensordict.set(next_key(self._tensor_keys.reward), reward)
        if mask is None:
            return target - value, target
        # padded steps: advantage 0, target = value (as for GAE: target = advantage + value)
        return torch.where(mask, target - value, 0.0), torch.where(mask, target, value)


class TDLambdaEstimate(_TDTargetEstimate):
    """TD(lambda) value target; advantage = target - V(s_t).

    Args:
        gamma: discount in [0, 1] (float or tensor).
        lmbda: lambda in [0, 1] (float or tensor).
        value_network: as in :class:`GAE`.
        average_rewards: standardise ``("next", "reward")`` first (written back), as TorchRL.
        differentiable: as in :class:`GAE`.
        skip_existing: as in :class:`GAE`.
        time_dim: as in :class:`GAE`.

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"state_value": torch.zeros(1, 2, 1), "next": {
        ...     "state_value": torch.tensor([[[2.0], [4.0]]]), "reward": torch.ones(1, 2, 1),
        ...     "done": torch.zeros(1, 2, 1, dtype=torch.bool)}}, batch_size=[1, 2])
        >>> TDLambdaEstimate(gamma=0.5, lmbda=0.5, value_network=None)(td)["value_target"]
        tensor([[[2.2500],
                 [3.0000]]])
    """

    lmbda: float | Tensor

    def __init__(
        self,
        *,
        gamma: float | Tensor,
        lmbda: float | Tensor,
        value_network: TensorDictModuleBase | None,
        average_rewards: bool = False,
        differentiable: bool = False,
        skip_existing: bool | None = None,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(
            gamma=gamma,
            value_network=value_network,
            average_rewards=average_rewards,
            differentiable=differentiable,
            skip_existing=skip_existing,
            time_dim=time_dim,
        )
        self._set_discount("lmbda", lmbda)

    def _target(
        self,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> Tensor:
        return td_lambda_return_estimate(
            self.gamma,
            self.lmbda,
            next_value,
            reward,
            done,
            terminated,
            time_dim=time_dim,
            mask=mask,
        )


class TD1Estimate(_TDTargetEstimate):
    """TD(1) (discounted Monte-Carlo, bootstrapped at truncation) target.

    Args:
        gamma: discount in [0, 1] (float or tensor).
        value_network: as in :class:`GAE`.
        average_rewards: standardise ``("next", "reward")`` first (written back).
        differentiable: as in :class:`GAE`.
        skip_existing: as in :class:`GAE`.
        time_dim: as in :class:`GAE`.

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"state_value": torch.zeros(1, 2, 1), "next": {
        ...     "state_value": torch.full((1, 2, 1), 4.0), "reward": torch.ones(1, 2, 1),
        ...     "done": torch.zeros(1, 2, 1, dtype=torch.bool)}}, batch_size=[1, 2])
        >>> TD1Estimate(gamma=0.5, value_network=None)(td)["value_target"].flatten()
        tensor([2.5000, 3.0000])
    """

    def _target(
        self,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> Tensor:
        return td1_return_estimate(
            self.gamma, next_value, reward, done, terminated, time_dim=time_dim, mask=mask
        )


class TD0Estimate(_TDTargetEstimate):
    """One-step TD target ``r + gamma * (1 - terminated) * V(s')``.

    Args:
        gamma: discount in [0, 1] (float or tensor).
        value_network: as in :class:`GAE`.
        average_rewards: standardise ``("next", "reward")`` first (written back).
        differentiable: as in :class:`GAE`.
        skip_existing: as in :class:`GAE`.
        time_dim: as in :class:`GAE` (only used for the batch-dim check).

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"state_value": torch.zeros(2, 1), "next": {
        ...     "state_value": torch.full((2, 1), 4.0), "reward": torch.ones(2, 1),
        ...     "done": torch.tensor([[False], [True]])}}, batch_size=[2])
        >>> TD0Estimate(gamma=0.5, value_network=None)(td)["advantage"].flatten()
        tensor([3., 1.])
    """

    def _target(
        self,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> Tensor:
        return td0_return_estimate(self.gamma, next_value, reward, terminated, mask=mask)
