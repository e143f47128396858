"""V-trace (Espeholt et al. 2018) as a TensorDict module, with TorchRL's constructor and keys.

Deliberate difference from TorchRL 0.14.1: TorchRL's ``VTrace`` gets ``log pi`` by drawing a
*new* action from the current policy (or taking its mode) and scoring that, so its ratio
``pi(a'|s) / mu(a|s)`` compares two different actions. V-trace's importance weight is about
the action that was taken: ppokit scores the stored ``"action"`` under the current actor.
Both agree whenever the stored action is the one TorchRL would pick (tested that way).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from ppokit.objectives.composite import action_log_prob, stored_log_prob
from ppokit.objectives.functional import standardize
from ppokit.value.base import NestedKey, Signals, ValueEstimatorBase, get_entry
from ppokit.value.checks import check_threshold
from ppokit.value.functional_vtrace import vtrace_advantage_estimate

__all__ = ["VTrace"]


class VTrace(ValueEstimatorBase):
    """V-trace advantage and target for off-policy (stale or replayed) data.

    Reads the behaviour log-prob ``"action_log_prob"`` (key ``sample_log_prob``) and the
    stored ``"action"``, scores the action under ``actor_network`` (no gradient), and writes
    ``advantage`` and ``value_target`` (``v_t``), both ``[*B, T, 1]``.

    Args:
        gamma: discount in [0, 1] (a scalar).
        actor_network: the current policy; must provide ``get_dist(tensordict)`` (a
            tensordict ``ProbabilisticTensorDictSequential`` / ppokit actor).
        value_network: as in :class:`~ppokit.value.gae.GAE`.
        rho_thresh: clip of the importance weight in the TD error (default 1.0).
        c_thresh: clip of the importance weight in the trace (default 1.0).
        average_adv: standardise the advantage (unbiased std clamped at 1e-5, as TorchRL).
        differentiable: as in :class:`~ppokit.value.gae.GAE`.
        skip_existing: as in :class:`~ppokit.value.gae.GAE`.
        time_dim: as in :class:`~ppokit.value.gae.GAE`.

    Example:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import (NormalParamExtractor, ProbabilisticTensorDictModule,
        ...     ProbabilisticTensorDictSequential, TensorDictModule)
        >>> actor = ProbabilisticTensorDictSequential(
        ...     TensorDictModule(torch.nn.Sequential(torch.nn.Linear(3, 2), NormalParamExtractor()),
        ...                      ["observation"], ["loc", "scale"]),
        ...     ProbabilisticTensorDictModule(["loc", "scale"], ["action"],
        ...                                   distribution_class=torch.distributions.Normal))
        >>> td = TensorDict({"observation": torch.randn(4, 5, 3), "action": torch.randn(4, 5, 1),
        ...     "action_log_prob": torch.randn(4, 5), "state_value": torch.zeros(4, 5, 1),
        ...     "next": {"state_value": torch.zeros(4, 5, 1), "reward": torch.ones(4, 5, 1),
        ...              "done": torch.zeros(4, 5, 1, dtype=torch.bool)}}, batch_size=[4, 5])
        >>> VTrace(gamma=0.9, actor_network=actor, value_network=None)(td)["advantage"].shape
        torch.Size([4, 5, 1])
    """

    def __init__(
        self,
        *,
        gamma: float | Tensor,
        actor_network: TensorDictModuleBase,
        value_network: TensorDictModuleBase | None,
        rho_thresh: float | Tensor = 1.0,
        c_thresh: float | Tensor = 1.0,
        average_adv: bool = False,
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
        if actor_network is None or not callable(getattr(actor_network, "get_dist", None)):
            raise TypeError(
                "VTrace needs actor_network=<the current policy> with a get_dist(tensordict) "
                "method (a probabilistic actor) to score the stored actions; got "
                f"{actor_network!r}."
            )
        if isinstance(gamma, Tensor) and gamma.numel() != 1:
            raise ValueError(
                f"VTrace takes a scalar gamma, got a tensor of shape {tuple(gamma.shape)}."
            )
        self._set_discount("gamma", gamma)
        check_threshold("rho_thresh", rho_thresh)
        check_threshold("c_thresh", c_thresh)
        self.rho_thresh = float(rho_thresh)
        self.c_thresh = float(c_thresh)
        self.average_adv = average_adv
        self.actor_network = actor_network

    @property
    def in_keys(self) -> list[NestedKey]:
        """Every estimator's entries, then the behaviour log-prob, action and actor inputs."""
        keys = super().in_keys
        extra = [self._tensor_keys.sample_log_prob, self._tensor_keys.action]
        extra += list(self.actor_network.in_keys)
        return keys + [key for key in dict.fromkeys(extra) if key not in keys]

    def _log_mu(self, tensordict: TensorDictBase, like: Tensor) -> Tensor:
        key = self._tensor_keys.sample_log_prob
        if isinstance(key, list):  # one per head of a composite policy: summed per step
            log_mu = stored_log_prob(tensordict, key, batch_shape=tensordict.batch_size)
        else:
            log_mu = get_entry(tensordict, key, "behaviour log-prob (sample_log_prob)")
        batch = tuple(tensordict.batch_size)
        if not isinstance(log_mu, Tensor) or tuple(log_mu.shape) not in (batch, tuple(like.shape)):
            raise ValueError(
                f"sample_log_prob {key!r} must be a tensor of shape {batch} or "
                f"{tuple(like.shape)}, got {getattr(log_mu, 'shape', type(log_mu).__name__)}. "
                "Store the summed log-prob of the taken action (one number per step)."
            )
        return log_mu.reshape(like.shape)

    def _precheck(self, tensordict: TensorDictBase, signals: Signals) -> None:
        self._log_mu(tensordict, signals.reward)
        action = self._tensor_keys.action
        for key in action if isinstance(action, list) else [action]:
            get_entry(tensordict, key, "the stored action (scored by the actor)")
        for key in self.actor_network.in_keys:
            get_entry(tensordict, key, "actor_network input")

    def _log_pi(self, tensordict: TensorDictBase, like: Tensor) -> Tensor:
        """``log pi(a_t|s_t)`` of the stored action under the current actor, no gradient."""
        actor = self.actor_network
        with torch.no_grad():
            # run the actor on a shallow selection so its intermediate outputs are not
            # written into the caller's rollout
            dist = actor.get_dist(tensordict.select(*actor.in_keys, strict=False))
            # a composite policy: the heads' log-probs summed per step, as the loss does
            log_pi = action_log_prob(
                dist, tensordict, self._tensor_keys.action, batch_shape=tensordict.batch_size
            )
        if log_pi.numel() != like.numel():
            raise ValueError(
                f"the actor's log_prob of the stored action has shape {tuple(log_pi.shape)}; "
                f"expected one number per step ({tuple(like.shape)}). Use a distribution that "
                "sums over action dims (e.g. Independent) for vector actions."
            )
        return log_pi.reshape(like.shape)

    def _estimate(
        self,
        tensordict: TensorDictBase,
        value: Tensor,
        next_value: Tensor,
        signals: Signals,
        time_dim: int,
    ) -> tuple[Tensor, Tensor]:
        advantage, value_target = vtrace_advantage_estimate(
            self.gamma,
            self._log_pi(tensordict, value),
            self._log_mu(tensordict, value),
            value,
            next_value,
            signals.reward,
            signals.done,
            signals.terminated,
            rho_thresh=self.rho_thresh,
            c_thresh=self.c_thresh,
            time_dim=time_dim,
            mask=signals.mask,
        )
        if self.average_adv:
            advantage = standardize(advantage, signals.mask, eps=1e-5)
        return advantage, value_target
