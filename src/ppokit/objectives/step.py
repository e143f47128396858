"""One eager PPO minibatch update: the loss, backward of its ``loss_*`` sum, clip, step.

This is the one eager update in ppokit: the trainer's eager step
(:class:`ppokit.train.update.EagerUpdate`) and :class:`ppokit.FusedPPOUpdate`'s fallback
both call :func:`eager_update`. It depends only on torch: any loss module whose output holds
``loss_*`` terms (and ``kl_approx`` when ``target_kl`` is used) works.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from tensordict import TensorDictBase
from torch import nn

__all__ = ["UpdateResult", "eager_update"]


class UpdateResult(NamedTuple):
    """What one minibatch update returns (eager or fused)."""

    out: TensorDictBase
    """The loss's output."""
    grad_norm: torch.Tensor | None
    """Global L2 norm of the gradients before clipping; None if the update was skipped."""
    applied: bool
    """Whether the parameters moved (False: the KL exceeded ``target_kl``)."""


def eager_update(
    loss: Callable[[TensorDictBase], TensorDictBase],
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    minibatch: TensorDictBase,
    *,
    max_grad_norm: float | None = None,
    target_kl: float | None = None,
    kl_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
    grad_sync: Callable[[list[nn.Parameter]], None] | None = None,
) -> UpdateResult:
    """One eager PPO minibatch update: loss, backward of its ``loss_*`` sum, clip, step.

    Args:
        loss: the loss module (or a compiled loss) called on ``minibatch``.
        params: the parameters to clip (the optimizer's).
        optimizer: any ``torch.optim`` optimizer over ``params``.
        minibatch: the data the loss reads (``[B]``).
        max_grad_norm: clip the global L2 norm of the gradients to this (None: no clip).
        target_kl: skip the update when the minibatch's ``kl_approx`` exceeds this.
        kl_mean: how the KL is averaged before that test (e.g. over ranks); default as is.
        grad_sync: called on ``params`` after ``backward``, before the clip (e.g. averaging
            the gradients over ranks, :class:`ppokit.distributed.GradientAverager`).

    Returns:
        :class:`UpdateResult` (the gradient norm is None when the KL test skipped the update).
        The gradients are left in ``.grad``.

    Example:
        >>> from tensordict import TensorDict
        >>> from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor, ValueOperator
        >>> actor = ProbabilisticActor(nn.Linear(4, 2), in_keys=["observation"],
        ...     out_keys=["logits"], distribution_class=Categorical, return_log_prob=True)
        >>> loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(4, 1), in_keys=["observation"]))
        >>> params = list(loss.parameters())
        >>> opt = torch.optim.Adam(params, lr=1e-3)
        >>> data = TensorDict({"observation": torch.randn(8, 4)}, batch_size=[8])
        >>> with torch.no_grad():
        ...     data = actor(data)
        >>> data["advantage"], data["value_target"] = torch.randn(8, 1), torch.randn(8, 1)
        >>> eager_update(loss, params, opt, data, max_grad_norm=0.5).applied
        True
    """
    out = loss(minibatch)
    if target_kl is not None:
        kl = out["kl_approx"].detach()
        if float(kl if kl_mean is None else kl_mean(kl)) > target_kl:
            # SB3-style: the minibatch whose policy already drifted too far is not used
            return UpdateResult(out, None, False)
    optimizer.zero_grad(set_to_none=True)
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    if grad_sync is not None:
        grad_sync(params)
    norm = nn.utils.clip_grad_norm_(
        params, math.inf if max_grad_norm is None else max_grad_norm, foreach=True
    )
    optimizer.step()
    return UpdateResult(out, norm, True)
