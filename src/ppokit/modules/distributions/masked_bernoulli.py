"""Independent Bernoulli flags with a per-flag mask of the allowed values (0, 1, or both).

A ``MultiBinary(n)`` action is ``n`` two-way choices; its mask gives, for each flag, which of
the values 0 and 1 are legal (``[*B, *event, 2]``, the last dim ``(allow 0, allow 1)``): the
flags are ``MultiDiscrete([2] * n)``'s mask laid per flag. Where both are legal the flag is an
ordinary Bernoulli; where one is, it is forced to that value: it is always sampled and chosen,
its log-probability is 0 (the illegal value's is ``-inf``), it adds nothing to the entropy and
its logit gets no gradient. This is invalid-action masking (Huang & Ontañón, 2022) applied to
each flag's two choices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ppokit.modules.distributions.bernoulli import IndependentBernoulli
from ppokit.modules.distributions.checks import skip_value_checks

__all__ = ["MaskedBernoulli"]


class MaskedBernoulli(IndependentBernoulli):
    """Bernoulli flags ``[*B, *event]`` restricted to the values ``mask`` allows.

    Args:
        logits: log-odds of each flag being 1, ``[*B, *event]``.

    Keyword Args:
        mask: bool ``[*B, *event, 2]``: ``mask[..., 0]`` allows 0, ``mask[..., 1]`` allows 1.
        event_dims: trailing dims forming one action (1 for ``MultiBinary(n)``).

    Raises:
        ValueError: a mask that is not bool, of another shape, or a flag allowing neither value
            (named by its index).

    Example:
        >>> # flag 0 free (p(1) = 0.75), flag 1 forced to 0: log p([1, 0]) = log 0.75
        >>> d = MaskedBernoulli(torch.tensor([3.0, 5.0]).log(),
        ...                     mask=torch.tensor([[True, True], [True, False]]))
        >>> d.log_prob(torch.tensor([1.0, 0.0])), d.log_prob(torch.tensor([1.0, 1.0]))
        (tensor(-0.2877), tensor(-inf))
        >>> d.deterministic_sample, d.entropy()  # entropy: flag 0's only
        (tensor([1., 0.]), tensor(0.5623))
    """

    def __init__(self, logits: torch.Tensor, *, mask: torch.Tensor, event_dims: int = 1) -> None:
        super().__init__(logits, event_dims=event_dims)
        name = type(self).__name__
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(
                f"{name}: mask must be a bool tensor (True = allowed value), got {got}. "
                "Convert an integer mask with mask.bool()."
            )
        expected = (*logits.shape, 2)
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"{name}: mask of shape {list(mask.shape)} for logits of shape "
                f"{list(logits.shape)}; expected {list(expected)}: for each flag, whether 0 "
                "and whether 1 is allowed."
            )
        if not skip_value_checks():
            stuck = ~mask.any(-1)
            if bool(stuck.any()):
                where = tuple(stuck.nonzero()[0].tolist())
                raise ValueError(
                    f"{name}: flag {where} of {list(logits.shape)} allows neither 0 nor 1 "
                    f"({int(stuck.sum())} such flag(s)). Each flag needs an allowed value; "
                    "check the environment's action mask."
                )
        self.mask = mask
        self._free = mask[..., 0] & mask[..., 1]
        # where a single value is allowed, it is 1 exactly when 1 is allowed
        self._forced = mask[..., 1].to(logits.dtype)

    def _event_sum(self, per_flag: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-self.reinterpreted_batch_ndims, 0))
        return per_flag.sum(dims) if dims else per_flag

    def sample(
        self,
        sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size(),  # noqa: B008
    ) -> torch.Tensor:
        drawn = super().sample(torch.Size(sample_shape))
        return torch.where(self._free, drawn, self._forced.expand_as(drawn))

    @property
    def mode(self) -> torch.Tensor:
        return torch.where(self._free, super().mode, self._forced)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        self.check_action(value)
        logits = self.logits.expand_as(value)
        free_log_p = -F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        allowed = torch.where(value > 0.5, self.mask[..., 1], self.mask[..., 0])
        forced_log_p = torch.zeros_like(free_log_p).masked_fill(~allowed, float("-inf"))
        return self._event_sum(torch.where(self._free, free_log_p, forced_log_p))

    def entropy(self) -> torch.Tensor:
        per_flag = self.base_dist.entropy()
        return self._event_sum(torch.where(self._free, per_flag, torch.zeros_like(per_flag)))
