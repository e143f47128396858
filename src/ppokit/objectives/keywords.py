"""TorchRL's ``advantage_norm`` and ``delay_actor`` loss keywords (a base class of the loss).

* ``advantage_norm``: a stateful return normaliser (TorchRL's ``ValueNorm``, e.g.
  ``PercentileValueNorm`` for DreamerV3-style return scaling). The advantage is divided by
  its ``scale()``, not re-centred (the value baseline already centres it). Its statistics
  are updated, in training mode, with the valid rows of the value target only when the loss
  runs its own value estimator, so that several epochs over one precomputed rollout do not
  count the same returns again.
* ``delay_actor``: a detached copy of the actor's parameters, ``target_actor_network_params``,
  is the *proximal* policy of PPO-EWMA (Hilton et al. 2021, "Batch size-invariance for policy
  optimization"): the trust region acts on ``pi_theta / pi_prox`` while the surrogate is
  weighted by ``pi_theta / pi_behav`` (see :func:`ppokit.objectives.objective.ppo_objective`'s
  ``prox_log_prob``). Updating the copy after each optimiser step (e.g. with TorchRL's
  ``SoftUpdate``) makes the proximal policy a moving average of the policy.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictParams
from torch import nn

from ppokit.objectives.inputs import get_mask
from ppokit.objectives.keys import PPOKeys

__all__ = ["LossKeywords", "check_advantage_norm", "valid_rows"]


def check_advantage_norm(advantage_norm: Any, *, normalize_advantage: bool) -> Any:
    """Check an ``advantage_norm`` object (duck-typed: ``update(value_target)``, ``scale()``).

    Example:
        >>> check_advantage_norm(None, normalize_advantage=True) is None
        True
        >>> check_advantage_norm(1.0, normalize_advantage=False)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        TypeError: advantage_norm must be ...
    """
    if advantage_norm is None:
        return None
    missing = [
        name for name in ("update", "scale") if not callable(getattr(advantage_norm, name, None))
    ]
    if missing:
        raise TypeError(
            "advantage_norm must be a return normaliser with update(value_target) and scale() "
            f"methods (e.g. torchrl.modules.PercentileValueNorm), got {type(advantage_norm)!r} "
            f"without {' or '.join(missing)}(). Pass such an object, or None."
        )
    if normalize_advantage:
        raise ValueError(
            "normalize_advantage=True and advantage_norm are mutually exclusive: the first "
            "standardises each batch, the second divides by a running return scale. Keep one."
        )
    return advantage_norm


def valid_rows(value_target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The rows of ``value_target`` ``[*B, 1]`` whose mask ``[*B, 1]`` is True (all if None).

    Example:
        >>> valid_rows(torch.tensor([[1.0], [2.0]]), torch.tensor([[True], [False]]))
        tensor([[1.]])
    """
    if mask is None:
        return value_target
    rows = mask.bool()
    while rows.ndim >= value_target.ndim and rows.shape[-1] == 1:
        rows = rows.squeeze(-1)
    return value_target[rows]


class LossKeywords(nn.Module):
    """``advantage_norm`` and ``delay_actor`` for :class:`ppokit.PPOLoss` (a base class)."""

    tensor_keys: PPOKeys
    actor_network_params: TensorDictParams | None
    advantage_norm: Any
    delay_actor: bool
    target_actor_network_params: TensorDictParams | None

    def _init_keywords(
        self, *, advantage_norm: Any, delay_actor: bool, normalize_advantage: bool, functional: bool
    ) -> None:
        """Check and store the two keywords (after the networks are set up)."""
        self.advantage_norm = check_advantage_norm(
            advantage_norm, normalize_advantage=normalize_advantage
        )
        if not isinstance(delay_actor, bool):
            raise TypeError(f"delay_actor must be a bool, got {delay_actor!r}.")
        if delay_actor and not functional:
            raise ValueError(
                "delay_actor=True requires functional=True: the proximal policy runs the actor "
                "on target_actor_network_params, a copy the loss holds only when it holds the "
                "actor's parameters. Pass functional=True, or delay_actor=False."
            )
        self.delay_actor = delay_actor
        target = None
        if delay_actor and self.actor_network_params is not None:
            # buffers, not parameters: no optimiser built on loss.parameters() moves them
            copy = self.actor_network_params.detach().clone().apply(lambda t: t.data)
            target = TensorDictParams(copy, no_convert=True)
        self.target_actor_network_params = target

    def _estimate_advantage(self, work: TensorDictBase) -> torch.Tensor:
        advantage: torch.Tensor = super()._estimate_advantage(work)  # type: ignore[misc]
        norm = self.advantage_norm
        if norm is not None and self.training:
            keys = self.tensor_keys
            value_target = work.get(keys.value_target, None)
            if value_target is None:
                raise KeyError(
                    f"advantage_norm updates its statistics from the value target "
                    f"{keys.value_target!r}, which the value estimator did not write. Use an "
                    "estimator that writes it, or set the value_target key to where it does."
                )
            mask = get_mask(work, work.batch_size, keys.mask)
            norm.update(valid_rows(value_target, mask))
        return advantage

    def _advantage_scale(self) -> torch.Tensor | None:
        """The divisor of the advantage (``advantage_norm.scale()``), or None."""
        if self.advantage_norm is None:
            return None
        scale: torch.Tensor = self.advantage_norm.scale()
        return scale

    def _proximal_dist(self, work: Any) -> Any:
        """The proximal policy's distribution on ``work`` (no gradient), or None without
        ``delay_actor``."""
        target = self.target_actor_network_params
        if target is None:
            return None
        actor: Any = self.actor_network
        # a shallow copy: the actor writes its outputs there, never into the caller's data
        work = (
            work.clone(False)
            if isinstance(work, TensorDictBase)
            else TensorDict(dict(work), batch_size=[])
        )
        with torch.no_grad(), target.to_module(actor):
            return actor.get_dist(work)

    @torch.no_grad()
    def update_target_actor(self, *, eps: float = 0.0) -> None:
        """Move the proximal policy towards the actor: ``target = eps * target + (1 - eps) *
        actor`` (TorchRL's ``SoftUpdate`` rule; ``eps = 0``, the default, is a hard copy).

        Called after each optimiser step with ``eps`` near 1 it makes the proximal policy an
        exponential moving average of the policy (PPO-EWMA's ``beta_prox = 1 - eps``).
        TorchRL's ``SoftUpdate`` / ``HardUpdate`` accept only TorchRL losses.

        Example:
            >>> from torch import nn
            >>> from tensordict.nn import TensorDictModule
            >>> from ppokit import Categorical, PPOLoss, ProbabilisticActor
            >>> actor = ProbabilisticActor(
            ...     TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"]),
            ...     in_keys=["logits"], distribution_class=Categorical)
            >>> loss = PPOLoss(actor, delay_actor=True)
            >>> _ = actor.module[0].module.bias.data.fill_(1.0)
            >>> loss.target_actor_network_params.zero_()  # doctest: +ELLIPSIS
            TensorDictParams(...)
            >>> loss.update_target_actor(eps=0.75)  # 0.75 * 0 + 0.25 * 1
            >>> loss.target_actor_network_params["module", "0", "module", "bias"]
            tensor([0.2500, 0.2500])
        """
        target = self.target_actor_network_params
        if target is None or self.actor_network_params is None:
            raise ValueError(
                "update_target_actor() needs the proximal policy of delay_actor=True; this "
                "loss was built without it."
            )
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps must be in [0, 1] (the weight kept by the target), got {eps}.")
        for key, value in target.items(True, True):
            value.data.lerp_(self.actor_network_params.get(key).data, 1.0 - eps)
