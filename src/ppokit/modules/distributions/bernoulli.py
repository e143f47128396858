"""Independent Bernoulli actions (Gymnasium's ``MultiBinary``): one coin per action entry.

The log-probability and entropy of a ``[*B, *event]`` action sum over the event dims, so a
``MultiBinary(n)`` action is one term per sample, like the other heads of a composite policy.
"""

from __future__ import annotations

import torch
from torch import distributions as D

from ppokit.modules.distributions.checks import check_event_dims, skip_value_checks

__all__ = ["IndependentBernoulli"]


class IndependentBernoulli(D.Independent):
    """Independent Bernoulli flags: ``logits [*B, *event]``, actions 0./1. ``[*B, *event]``.

    ``log_prob`` and ``entropy`` are ``[*B]`` (summed over the last ``event_dims`` dims);
    ``deterministic_sample`` (= ``mode``) is 1 where the logit is > 0.

    Args:
        logits: log-odds of each flag being 1.

    Keyword Args:
        event_dims: trailing dims forming one action (1 for ``MultiBinary(n)``).

    Example:
        >>> # p(1) = sigmoid(0) = 0.5 and sigmoid(log 3) = 0.75:
        >>> # log p([1, 0]) = log 0.5 + log 0.25 = -2.0794
        >>> d = IndependentBernoulli(torch.tensor([1.0, 3.0]).log())
        >>> d.log_prob(torch.tensor([1.0, 0.0])), d.deterministic_sample
        (tensor(-2.0794), tensor([0., 1.]))
    """

    param_keys = ("logits",)

    def __init__(self, logits: torch.Tensor, *, event_dims: int = 1) -> None:
        name = type(self).__name__
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            raise ValueError(f"{name}: logits must be a floating-point tensor, got {logits!r:.80}.")
        check_event_dims(name, event_dims, logits)
        if not skip_value_checks() and not bool(torch.isfinite(logits).all()):
            raise ValueError(
                f"{name}: logits contain NaN or Inf. The network producing them diverged or "
                "read a NaN observation; check the inputs and lower the learning rate."
            )
        super().__init__(D.Bernoulli(logits=logits, validate_args=False), event_dims)

    @property
    def logits(self) -> torch.Tensor:
        return self.base_dist.logits

    @property
    def mode(self) -> torch.Tensor:
        return (self.logits > 0).to(self.logits.dtype)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode

    def check_action(self, value: torch.Tensor) -> None:
        """Refuse an action ``value`` whose trailing dims are not the event shape."""
        if value.shape[-self.reinterpreted_batch_ndims :] != self.event_shape:
            raise ValueError(
                f"{type(self).__name__}.log_prob: action of shape {tuple(value.shape)} does "
                f"not end with the event shape {tuple(self.event_shape)}."
            )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        self.check_action(value)
        return super().log_prob(value)
