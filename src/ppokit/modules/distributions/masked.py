"""Categorical over the valid actions only: invalid actions get probability exactly 0.

Action masking (Huang & Ontañón, "A Closer Look at Invalid Action Masking in Policy Gradient
Algorithms", 2022) replaces the logits of invalid actions by ``-inf`` before the softmax, so they
are never sampled, score ``log_prob = -inf``, add nothing to the entropy, and the gradient of
the valid actions' log-probs is that of the renormalised distribution over them.
"""

from __future__ import annotations

import torch

from ppokit.modules.distributions.categorical import Categorical, check_categorical_params
from ppokit.modules.distributions.checks import skip_value_checks

__all__ = ["MaskedCategorical"]


class MaskedCategorical(Categorical):
    """Categorical over ``n`` actions restricted to those where ``mask`` is True.

    ``logits``/``probs`` and ``mask`` are ``[*B, n]`` (``mask`` may be any shape that broadcasts
    to it, e.g. ``[n]``); actions are integer indices ``[*B]``. Invalid actions have probability
    0: ``sample`` never draws them, ``log_prob`` gives ``-inf`` for them, and ``entropy`` sums over
    the valid ones only. ``deterministic_sample`` (= ``mode``) is the most probable valid action.
    A row (batch entry) without any valid action raises ``ValueError`` naming it. Same numbers
    as TorchRL 0.14.1's ``MaskedCategorical`` with a boolean ``mask``.

    Args:
        logits: unnormalised log-probabilities ``[*B, n]``.
        probs: probabilities ``[*B, n]`` (the valid ones are renormalised).

    Keyword Args:
        mask: boolean, True for the valid actions.

    Example:
        >>> # logits log [1, 3, 5] with the last action invalid: p = [1/4, 3/4, 0]
        >>> d = MaskedCategorical(logits=torch.tensor([1.0, 3.0, 5.0]).log(),
        ...                       mask=torch.tensor([True, True, False]))
        >>> d.probs
        tensor([0.2500, 0.7500, 0.0000])
        >>> d.log_prob(torch.tensor(2)), d.deterministic_sample
        (tensor(-inf), tensor(1))
    """

    # what the network writes (ProbabilisticActor's default out_keys); the mask comes from
    # the environment, through the distribution module's in_keys, e.g. {"mask": "action_mask"}
    param_keys = ("logits",)

    def __init__(
        self,
        logits: torch.Tensor | None = None,
        probs: torch.Tensor | None = None,
        *,
        mask: torch.Tensor,
    ) -> None:
        name = type(self).__name__
        param = logits if logits is not None else probs
        if isinstance(param, torch.Tensor):
            mask = _as_mask(name, mask, param)
            if logits is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            elif probs is not None:
                check_categorical_params(name, None, probs)  # finite, >= 0, before the log
                # log(0) = -inf: the invalid actions leave the support (a probs -> logits
                # conversion with clamping would give them a tiny positive mass instead)
                logits, probs = probs.masked_fill(~mask, 0.0).log(), None
        super().__init__(logits=logits, probs=probs)  # checks what remains (dtype, shape)
        self.mask = mask
        if logits is not None and not skip_value_checks():
            _check_rows(name, self.logits)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(logits: {list(self.logits.shape)}, mask: valid actions)"


def _as_mask(cls: str, mask: object, param: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(
            f"{cls}: mask must be a bool tensor (True = valid action), got {got}. "
            "Convert an integer mask with mask.bool()."
        )
    ok = mask.shape == param.shape  # the common case, without broadcast_shapes' cost
    if not ok:
        try:
            ok = torch.broadcast_shapes(mask.shape, param.shape) == param.shape
        except RuntimeError:
            ok = False
    if not ok:
        raise ValueError(
            f"{cls}: mask of shape {list(mask.shape)} does not broadcast to the logits' shape "
            f"{list(param.shape)}. Give one flag per action: [*B, num_actions]."
        )
    return mask.to(param.device).expand_as(param)


def _check_rows(cls: str, masked_logits: torch.Tensor) -> None:
    """Every row needs a valid action with a finite logit; else name the first bad row."""
    # logits are normalised: a row without any valid action holds only NaN (-inf - -inf)
    empty = ~(masked_logits > float("-inf")).any(-1)
    if bool(empty.any()):
        rows = empty.nonzero()
        raise ValueError(
            f"{cls}: row {tuple(rows[0].tolist())} of the batch {list(empty.shape)} has no valid "
            f"action ({rows.shape[0]} such row(s)): its mask is all False, or every allowed "
            "action has a -inf logit. Each state needs at least one allowed action; check the "
            "environment's action mask."
        )
