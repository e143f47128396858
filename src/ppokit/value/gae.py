"""GAE and its multi-agent form as TensorDict modules (TorchRL names and defaults)."""

from __future__ import annotations

import torch  # noqa: F401 (doctest namespace)
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from ppokit.objectives.functional import standardize
from ppokit.value.base import Signals, ValueEstimatorBase
from ppokit.value.functional import generalized_advantage_estimate
from ppokit.value.functional_multiagent import broadcast_team_signal, standardize_per_agent

__all__ = ["GAE", "MultiAgentGAE"]


class GAE(ValueEstimatorBase):
    """Generalized advantage estimation (Schulman et al. 2016) on a TensorDict rollout.

    Writes ``advantage`` and ``value_target = advantage + V(s_t)``, both ``[*B, T, 1]``.

    Args:
        gamma: discount in [0, 1] (float or tensor).
        lmbda: GAE lambda in [0, 1] (float or tensor).
        value_network: module reading its in_keys and writing the value key
            (``"state_value"``); ``None`` to read ``"state_value"`` and
            ``("next", "state_value")`` from the data.
        average_gae: standardise the advantage (mean 0, unbiased std 1 over all valid
            entries; std clamped at 1e-4), as TorchRL's ``average_gae``.
        differentiable: keep the autograd graph of ``V(s_t)``; ``V(s_{t+1})`` is always
            detached. Default: computed under ``torch.no_grad()``.
        skip_existing: ``True`` reuses values already in the data; ``False`` always reruns
            the network; ``None`` follows ``tensordict.nn.skip_existing()``.
        time_dim: the tensordict's time dim (default: a dim named ``"time"``, else the last).

    Example:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> critic = TensorDictModule(torch.nn.Linear(3, 1), ["observation"], ["state_value"])
        >>> rollout = TensorDict({
        ...     "observation": torch.randn(4, 10, 3),
        ...     "next": {"observation": torch.randn(4, 10, 3), "reward": torch.ones(4, 10, 1),
        ...              "done": torch.zeros(4, 10, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(4, 10, 1, dtype=torch.bool)},
        ... }, batch_size=[4, 10])
        >>> GAE(gamma=0.99, lmbda=0.95, value_network=critic)(rollout)["advantage"].shape
        torch.Size([4, 10, 1])
    """

    lmbda: float | Tensor

    def __init__(
        self,
        *,
        gamma: float | Tensor,
        lmbda: float | Tensor,
        value_network: TensorDictModuleBase | None,
        average_gae: bool = False,
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
        self._set_discount("lmbda", lmbda)
        self.average_gae = average_gae

    def _estimate(
        self,
        tensordict: TensorDictBase,
        value: Tensor,
        next_value: Tensor,
        signals: Signals,
        time_dim: int,
    ) -> tuple[Tensor, Tensor]:
        advantage, value_target = generalized_advantage_estimate(
            self.gamma,
            self.lmbda,
            value,
            next_value,
            signals.reward,
            signals.done,
            signals.terminated,
            time_dim=time_dim,
            mask=signals.mask,
        )
        if self.average_gae:
            # the target is computed from the raw advantage (as TorchRL), only A is rescaled
            advantage = self._normalize(advantage, signals.mask)
        return advantage, value_target

    def _normalize(self, advantage: Tensor, mask: Tensor | None) -> Tensor:
        return standardize(advantage, mask, eps=1e-4)


class MultiAgentGAE(GAE):
    """GAE for per-agent values with team-shared rewards (TorchRL's ``MultiAgentGAE``).

    The value network outputs ``[*B, T, n_agents, 1]`` while reward / done / terminated
    are either team-level ``[*B, T, 1]`` (broadcast along ``agent_dim``) or already
    per-agent ``[*B, T, n_agents, 1]`` (used as they are). ``average_gae`` standardises each
    agent's advantages separately, so one high-variance agent does not flatten the others.

    Args:
        agent_dim: the agent dim of the value tensor (negative counts from its end;
            default ``-2``, the layout of TorchRL's ``MultiAgentMLP``).
        gamma: discount in [0, 1].
        lmbda: GAE lambda in [0, 1].
        value_network: as in :class:`GAE`.
        average_gae: per-agent standardisation of the advantage (std clamped at 1e-4).
        differentiable: as in :class:`GAE`.
        skip_existing: as in :class:`GAE`.
        time_dim: as in :class:`GAE`.

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"state_value": torch.zeros(2, 3, 4, 1), "next": {
        ...     "state_value": torch.zeros(2, 3, 4, 1), "reward": torch.ones(2, 3, 1),
        ...     "done": torch.zeros(2, 3, 1, dtype=torch.bool)}}, batch_size=[2, 3])
        >>> est = MultiAgentGAE(gamma=0.5, lmbda=1.0, value_network=None)
        >>> est(td)["advantage"][0, :, 0].flatten()  # 1 + .5 * (1 + .5 * 1), 1 + .5 * 1, 1
        tensor([1.7500, 1.5000, 1.0000])
    """

    def __init__(
        self,
        *,
        agent_dim: int = -2,
        gamma: float | Tensor,
        lmbda: float | Tensor,
        value_network: TensorDictModuleBase | None,
        average_gae: bool = False,
        differentiable: bool = False,
        skip_existing: bool | None = None,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(
            gamma=gamma,
            lmbda=lmbda,
            value_network=value_network,
            average_gae=average_gae,
            differentiable=differentiable,
            skip_existing=skip_existing,
            time_dim=time_dim,
        )
        if isinstance(agent_dim, bool) or not isinstance(agent_dim, int):
            raise TypeError(f"agent_dim must be an int, got {type(agent_dim).__name__}.")
        self.agent_dim = agent_dim

    def _match_value(self, value: Tensor, signals: Signals) -> Signals:
        def shaped(name: str, tensor: Tensor) -> Tensor:
            return broadcast_team_signal(name, tensor, value, self.agent_dim)

        mask = None if signals.mask is None else shaped("mask", signals.mask)
        return Signals(
            shaped("reward", signals.reward),
            shaped("done", signals.done),
            shaped("terminated", signals.terminated),
            mask,
        )

    def _normalize(self, advantage: Tensor, mask: Tensor | None) -> Tensor:
        return standardize_per_agent(advantage, self.agent_dim, mask, eps=1e-4)
