"""The trainer's minibatch update step, chosen once: eager, or the fused compiled graph.

:func:`eager_update` is one eager PPO minibatch update (loss, backward, global-norm clip,
optimizer step) with torch's own ``optimizer.zero_grad`` and
``torch.nn.utils.clip_grad_norm_``. :func:`make_update_step` builds the step a run uses:
:class:`EagerUpdate`, or with ``compile=True`` :class:`~ppokit.fast.update.FusedPPOUpdate`
(loss, gradient, clip and Adam as one ``torch.compile`` graph). When the fused graph cannot
run the given loss/optimizer it raises with the reason: it never falls back silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple, Protocol

import torch
from tensordict import TensorDictBase
from torch import nn

__all__ = ["EagerUpdate", "FusedResult", "UpdateResult", "UpdateStep", "eager_update",
           "make_update_step", "update_kind"]


class UpdateResult(NamedTuple):
    """What one minibatch update returns (eager or fused)."""

    out: TensorDictBase
    """The loss's output."""
    grad_norm: torch.Tensor | None
    """Global L2 norm of the gradients before clipping; None if the update was skipped."""
    applied: bool
    """Whether the parameters moved (False: the KL exceeded ``target_kl``)."""


#: the former name of :class:`UpdateResult` (``ppokit.fast.update`` still imports it)
FusedResult = UpdateResult


class UpdateStep(Protocol):
    """A minibatch update: ``step(minibatch, target_kl=...) -> UpdateResult``."""

    def __call__(self, minibatch: TensorDictBase, /, *, target_kl: float | None = None
                 ) -> UpdateResult: ...


def eager_update(loss: Callable[[TensorDictBase], TensorDictBase], params: list[nn.Parameter],
                 optimizer: torch.optim.Optimizer, minibatch: TensorDictBase, *,
                 max_grad_norm: float | None = None, target_kl: float | None = None,
                 kl_mean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> UpdateResult:
    """One eager PPO minibatch update: loss, backward of its ``loss_*`` sum, clip, step.

    Args:
        loss: the loss module (or a compiled loss) called on ``minibatch``.
        params: the parameters to clip (the optimizer's).
        optimizer: any ``torch.optim`` optimizer over ``params``.
        minibatch: the data the loss reads (``[B]``).
        max_grad_norm: clip the global L2 norm of the gradients to this (None: no clip).
        target_kl: skip the update when the minibatch's ``kl_approx`` exceeds this.
        kl_mean: how the KL is averaged before that test (e.g. over ranks); default as is.

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
    norm = nn.utils.clip_grad_norm_(
        params, math.inf if max_grad_norm is None else max_grad_norm, foreach=True)
    optimizer.step()
    return UpdateResult(out, norm, True)


class EagerUpdate:
    """The eager update step: :func:`eager_update` with the run's loss, optimizer and options.

    Args:
        loss: the loss module.
        optimizer: the optimizer over ``params``.
        params: the parameters to clip.

    Keyword Args:
        max_grad_norm: global gradient-norm clip (None: no clip).
        kl_mean: how ``kl_approx`` is averaged before the ``target_kl`` test (over ranks).

    Example:
        >>> from tensordict import TensorDict
        >>> from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor, ValueOperator
        >>> actor = ProbabilisticActor(nn.Linear(4, 2), in_keys=["observation"],
        ...     out_keys=["logits"], distribution_class=Categorical, return_log_prob=True)
        >>> loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(4, 1), in_keys=["observation"]))
        >>> params = list(loss.parameters())
        >>> step = EagerUpdate(loss, torch.optim.Adam(params), params, max_grad_norm=0.5)
        >>> data = TensorDict({"observation": torch.randn(8, 4)}, batch_size=[8])
        >>> with torch.no_grad():
        ...     data = actor(data)
        >>> data["advantage"], data["value_target"] = torch.randn(8, 1), torch.randn(8, 1)
        >>> step.kind, step(data).applied
        ('eager', True)
    """

    kind: Literal["eager"] = "eager"

    def __init__(self, loss: nn.Module, optimizer: torch.optim.Optimizer,
                 params: list[nn.Parameter], *, max_grad_norm: float | None = None,
                 kl_mean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.loss = loss
        self.optimizer = optimizer
        self.params = params
        self.max_grad_norm = max_grad_norm
        self.kl_mean = kl_mean

    def __call__(self, minibatch: TensorDictBase, *, target_kl: float | None = None
                 ) -> UpdateResult:
        return eager_update(self.loss, self.params, self.optimizer, minibatch,
                            max_grad_norm=self.max_grad_norm, target_kl=target_kl,
                            kl_mean=self.kl_mean)


def make_update_step(loss: nn.Module, optimizer: torch.optim.Optimizer,
                     params: list[nn.Parameter], *, compile: bool,
                     max_grad_norm: float | None = None,
                     kl_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     ) -> UpdateStep:
    """The run's update step: :class:`EagerUpdate`, or the fused graph with ``compile=True``.

    Raises:
        ValueError: ``compile=True`` and the fused graph cannot run this loss or optimizer
            (its reason is in the message and chained); train with ``compile=False`` then.

    Example:
        >>> from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor, ValueOperator
        >>> actor = ProbabilisticActor(nn.Linear(4, 2), in_keys=["observation"],
        ...     out_keys=["logits"], distribution_class=Categorical, return_log_prob=True)
        >>> loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(4, 1), in_keys=["observation"]))
        >>> params = list(loss.parameters())
        >>> make_update_step(loss, torch.optim.SGD(params, lr=0.1), params, compile=True)
        Traceback (most recent call last):
        ...
        ValueError: compile=True cannot be honoured: FusedPPOUpdate runs Adam's update rule ...
    """
    if not compile:
        return EagerUpdate(loss, optimizer, params, max_grad_norm=max_grad_norm,
                           kl_mean=kl_mean)
    from ppokit.fast.update import FusedPPOUpdate

    try:
        fused: UpdateStep = FusedPPOUpdate(loss, optimizer,  # type: ignore[arg-type]
                                           max_grad_norm=max_grad_norm)
    except (TypeError, ValueError) as err:
        raise ValueError(f"compile=True cannot be honoured: {err} Train with compile=False "
                         "(drop --compile): the eager update computes the same.") from err
    return fused


def update_kind(step: UpdateStep) -> str:
    """``"eager"`` or ``"fused"``: which update step ``step`` is (for logs and summaries)."""
    return "eager" if isinstance(step, EagerUpdate) else "fused"
