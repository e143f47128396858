"""The trainer's minibatch update step, chosen once: eager, or the fused compiled graph.

:func:`~ppokit.objectives.step.eager_update` is the one eager PPO minibatch update (loss,
backward, global-norm clip with torch's ``clip_grad_norm_``, optimizer step).
:func:`make_update_step` builds the step a run uses:
:class:`EagerUpdate`, or with ``compile=True`` :class:`~ppokit.fast.update.FusedPPOUpdate`
(loss, gradient, clip and Adam as one ``torch.compile`` graph). When the fused graph cannot
run the given loss/optimizer it raises with the reason: it never falls back silently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, Protocol

import torch
from tensordict import TensorDictBase
from torch import nn

from ppokit.objectives.step import UpdateResult, eager_update

__all__ = [
    "EagerUpdate",
    "UpdateResult",
    "UpdateStep",
    "eager_update",
    "make_update_step",
    "update_kind",
]


class UpdateStep(Protocol):
    """A minibatch update: ``step(minibatch, target_kl=...) -> UpdateResult``."""

    def __call__(
        self, minibatch: TensorDictBase, /, *, target_kl: float | None = None
    ) -> UpdateResult: ...


class EagerUpdate:
    """The eager update step: :func:`eager_update` with the run's loss, optimizer and options.

    Args:
        loss: the loss module.
        optimizer: the optimizer over ``params``.
        params: the parameters to clip.

    Keyword Args:
        max_grad_norm: global gradient-norm clip (None: no clip).
        kl_mean: how ``kl_approx`` is averaged before the ``target_kl`` test (over ranks).
        grad_sync: called on ``params`` between backward and clip (averaging the gradients
            over ranks when actor and critic share parameters, which DDP cannot wrap).

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

    def __init__(
        self,
        loss: nn.Module,
        optimizer: torch.optim.Optimizer,
        params: list[nn.Parameter],
        *,
        max_grad_norm: float | None = None,
        kl_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
        grad_sync: Callable[[list[nn.Parameter]], None] | None = None,
    ) -> None:
        self.loss = loss
        self.optimizer = optimizer
        self.params = params
        self.max_grad_norm = max_grad_norm
        self.kl_mean = kl_mean
        self.grad_sync = grad_sync

    def __call__(
        self, minibatch: TensorDictBase, *, target_kl: float | None = None
    ) -> UpdateResult:
        return eager_update(
            self.loss,
            self.params,
            self.optimizer,
            minibatch,
            max_grad_norm=self.max_grad_norm,
            target_kl=target_kl,
            kl_mean=self.kl_mean,
            grad_sync=self.grad_sync,
        )


def make_update_step(
    loss: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    *,
    compile: bool,
    max_grad_norm: float | None = None,
    kl_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
    sequences: bool = False,
    grad_sync: Callable[[list[nn.Parameter]], None] | None = None,
) -> UpdateStep:
    """The run's update step: :class:`EagerUpdate`, or the fused graph with ``compile=True``.

    ``sequences=True``: minibatches are ``[B, L]`` env sequences, run with the recurrent
    cores in sequence mode (:class:`ppokit.train.recurrent.sequences.SequenceUpdate`).
    ``grad_sync``: see :class:`EagerUpdate`; with ``compile=True`` the fused update then runs as
    two graphs (gradients; clip and Adam) with the averaging between them.

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
    if not compile:  # (compile with a recurrent core is refused by the config)
        from ppokit.train.recurrent.sequences import SequenceUpdate

        return (SequenceUpdate if sequences else EagerUpdate)(
            loss,
            optimizer,
            params,
            max_grad_norm=max_grad_norm,
            kl_mean=kl_mean,
            grad_sync=grad_sync,
        )
    from ppokit.fast.update import FusedPPOUpdate

    sync_tensors = None
    if grad_sync is not None:
        sync = grad_sync

        def sync_tensors(grads: list[torch.Tensor]) -> None:
            # the graph's gradients, lent to the parameters for grad_sync (which averages
            # .grad in place), then taken back: the fused update never leaves .grad set
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            sync(params)
            for param in params:
                param.grad = None

    try:
        fused: UpdateStep = FusedPPOUpdate(
            loss,  # type: ignore[arg-type]
            optimizer,
            max_grad_norm=max_grad_norm,
            eager_step=functools.partial(eager_update, kl_mean=kl_mean, grad_sync=grad_sync),
            grad_sync=sync_tensors,
            kl_mean=kl_mean,
        )
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"compile=True cannot be honoured: {err} Train with compile=False "
            "(drop --compile): the eager update computes the same."
        ) from err
    return fused


def update_kind(step: UpdateStep) -> str:
    """``"eager"`` or ``"fused"``: which update step ``step`` is (for logs and summaries)."""
    return "eager" if isinstance(step, EagerUpdate) else "fused"
