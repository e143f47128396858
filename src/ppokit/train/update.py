"""The eager PPO minibatch update: loss, backward, global-norm clip, optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from tensordict import TensorDictBase
from torch import nn

__all__ = ["FusedResult", "clip_grad_norm_", "eager_update"]


class FusedResult(NamedTuple):
    """What :class:`FusedPPOUpdate` returns for one minibatch."""

    out: TensorDictBase
    """The loss's output, detached."""
    grad_norm: torch.Tensor | None
    """Global L2 norm of the gradients before clipping; None if the update was skipped."""
    applied: bool
    """Whether the parameters moved (False: the KL exceeded ``target_kl``)."""


def eager_update(loss: Callable[[TensorDictBase], TensorDictBase], params: list[nn.Parameter],
                 optimizer: torch.optim.Optimizer, minibatch: TensorDictBase, *,
                 max_grad_norm: float | None = None, target_kl: float | None = None,
                 kl_mean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> FusedResult:
    """One eager PPO minibatch update: loss, backward of its ``loss_*`` sum, clip, step.

    Args:
        loss: the loss module (or a compiled loss) called on ``minibatch``.
        params: the parameters to clear, clip and step (the optimizer's).
        optimizer: any ``torch.optim`` optimizer over ``params``.
        minibatch: the data the loss reads.
        max_grad_norm: clip the global L2 norm of the gradients to this (None: no clip).
        target_kl: skip the update when the minibatch's ``kl_approx`` exceeds this.
        kl_mean: how the KL is averaged before that test (e.g. over ranks); default as is.

    Returns:
        :class:`FusedResult` (the gradient norm is None when the KL test skipped the update).
        The gradients are left in ``.grad``.

    Example:
        >>> import torch
        >>> from torch import nn
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
            return FusedResult(out, None, False)
    for p in params:  # = optimizer.zero_grad(set_to_none=True), minus its profiler/hook
        p.grad = None  # wrapper (tens of us per minibatch)
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    norm = clip_grad_norm_(params, math.inf if max_grad_norm is None else max_grad_norm)
    optimizer.step()
    return FusedResult(out, norm, True)


def clip_grad_norm_(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)`` (L2, foreach), without its wrappers.

    The same ops in the same order, so the same numbers to the bit (tested), at half the
    cost: torch's version regroups the tensors by device and dtype and goes through two
    decorators on every call (~65 us per minibatch on this project's 2-core test machine).
    Gradients that are ``None`` are skipped, as torch does.

    Returns:
        The total norm of the gradients before clipping (a 0-d tensor).

    Example:
        >>> p = nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
        >>> clip_grad_norm_([p], 1.0), p.grad
        (tensor(5.), tensor([0.6000, 0.8000]))
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_(max=1.0))
    return total


