"""Pure tensor math of the PPO objective (its statistics: :mod:`.diagnostics`).

Every function here takes and returns plain tensors, so each piece can be tested alone and
reused outside :class:`~ppokit.ClipPPOLoss`. Shapes follow the data contract: a batch of
samples ``[*B]`` with a trailing feature dim of 1 for per-sample scalars (``[*B, 1]``).

Masks are boolean tensors broadcastable to the value they mask; ``True`` marks a valid
sample. Masked samples never contribute to a mean, a sum or a statistic, even when they hold
NaN (selection with ``torch.where`` rather than multiplication, since ``nan * 0`` is ``nan``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

__all__ = [
    "clip_fraction",
    "clipped_surrogate",
    "clipped_value_loss",
    "log_clip_bounds",
    "masked_mean",
    "reduce_loss",
    "standardize",
    "standardize_with",
    "value_distance",
]

#: a clip range: ``eps`` (symmetric) or ``(eps_low, eps_high)``, floats or 0-d tensors
ClipRange = float | torch.Tensor | tuple[float | torch.Tensor, float | torch.Tensor]

LOSS_CRITIC_TYPES = ("l1", "l2", "smooth_l1")
REDUCTIONS = ("none", "mean", "sum")


def _where_valid(x: torch.Tensor, mask: torch.Tensor | None, fill: float = 0.0) -> torch.Tensor:
    if mask is None:
        return x
    return torch.where(mask, x, torch.full_like(x, fill))


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over its valid entries (all entries when ``mask`` is None).

    Example:
        >>> masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([True, True, False]))
        tensor(1.5000)
    """
    if mask is None:
        return x.mean()
    mask = mask.expand_as(x)
    return _where_valid(x, mask).sum() / mask.sum().clamp_min(1)


def reduce_loss(
    loss: torch.Tensor, reduction: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce a per-sample loss ``[*B, 1]``.

    ``"mean"`` averages over valid samples, ``"sum"`` adds them, ``"none"`` returns the
    per-sample values ``[*B]`` with masked samples set to 0.

    Example:
        >>> reduce_loss(torch.tensor([[1.0], [3.0]]), "mean")
        tensor(2.)
    """
    if reduction == "none":
        return _where_valid(loss, mask).squeeze(-1)
    if reduction == "sum":
        return _where_valid(loss, mask).sum()
    if reduction == "mean":
        return masked_mean(loss, mask)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")


def standardize(
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    eps: float = 1e-6,
    exclude_dims: tuple[int, ...] = (),
) -> torch.Tensor:
    """``(x - mean) / max(std, eps)`` with the unbiased std over valid entries.

    The unbiased estimate (Bessel's correction) matches ``torch.std`` and TorchRL's
    ``normalize_advantage``. Masked entries come back as 0. With fewer than two valid
    entries the std is undefined; the entries are then only centred (no NaN).

    This is the one standardisation in ppokit: the loss's advantage normalisation, the value
    estimators' and the distributed global one (which passes all-reduced moments to
    :func:`standardize_with`) all end here.

    ``exclude_dims`` keeps those dims independent: the moments are taken over the other
    dims only (one mean and std per agent, say, for ``[T, n_agents, 1]`` and
    ``exclude_dims=(-2,)``); it cannot be combined with a mask.

    Example:
        >>> standardize(torch.tensor([1.0, 2.0, 3.0]))
        tensor([-1.,  0.,  1.])
        >>> standardize(torch.tensor([5.0]))
        tensor([0.])
        >>> standardize(torch.tensor([[1.0, 10.0], [3.0, 30.0]]), exclude_dims=(1,))
        tensor([[-0.7071, -0.7071],
                [ 0.7071,  0.7071]])
    """
    if exclude_dims:
        return _standardize_per_slice(x, mask, eps, exclude_dims)
    if mask is None:
        count = torch.tensor(float(x.numel()), device=x.device)
        mean = x.mean()
        var = (x - mean).pow(2).sum() / (count - 1).clamp_min(1)
    else:
        mask = mask.expand_as(x)
        count = mask.sum()
        mean = _where_valid(x, mask).sum() / count.clamp_min(1)
        var = _where_valid(x - mean, mask).pow(2).sum() / (count - 1).clamp_min(1)
    return standardize_with(x, mean, var.sqrt(), mask, eps=eps)


def _standardize_per_slice(
    x: torch.Tensor, mask: torch.Tensor | None, eps: float, exclude_dims: tuple[int, ...]
) -> torch.Tensor:
    if mask is not None:
        raise ValueError(
            "standardize() cannot combine exclude_dims with a mask; drop the mask (pad with "
            "valid data) or normalise the advantage beforehand."
        )
    dims = [d + x.dim() if d < 0 else d for d in exclude_dims]
    if len(set(dims)) != len(dims) or any(not 0 <= d < x.dim() for d in dims):
        raise ValueError(
            f"exclude_dims={tuple(exclude_dims)} must name distinct dims of a tensor of shape "
            f"{tuple(x.shape)}."
        )
    reduce = tuple(d for d in range(x.dim()) if d not in dims)
    if not reduce:
        return x  # every dim is kept apart: nothing to standardise over
    mean = x.mean(reduce, keepdim=True)
    std = x.std(reduce, keepdim=True)
    return standardize_with(x, mean, std, eps=eps)


def standardize_with(
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``(x - mean) / max(std, eps)`` with given moments; masked entries come back as 0.

    Example:
        >>> standardize_with(torch.tensor([1.0, 3.0]), torch.tensor(2.0), torch.tensor(2.0))
        tensor([-0.5000,  0.5000])
    """
    out = (x - mean) / std.clamp_min(eps)
    return out if mask is None else _where_valid(out, mask.expand_as(out))


def _eps_pair(clip_epsilon: ClipRange) -> tuple[Any, Any]:
    """``(eps_low, eps_high)``: two floats or two tensors (torch.clamp takes no mix)."""
    low, high = clip_epsilon if isinstance(clip_epsilon, tuple) else (clip_epsilon,) * 2
    if isinstance(low, torch.Tensor) and not isinstance(high, torch.Tensor):
        high = torch.as_tensor(high, dtype=low.dtype, device=low.device)
    elif isinstance(high, torch.Tensor) and not isinstance(low, torch.Tensor):
        low = torch.as_tensor(low, dtype=high.dtype, device=high.device)
    return low, high


def clipped_surrogate(
    log_weight: torch.Tensor,
    advantage: torch.Tensor,
    clip_epsilon: ClipRange,
) -> torch.Tensor:
    """Per-sample clipped PPO objective (Schulman et al. 2017, eq. 7), negated as a loss.

    ``-min(r * A, clip(r, 1 - eps, 1 + eps) * A)`` with ``r = exp(log_weight)``. The clipped
    term reuses the unclipped term's ``r`` (one ``exp`` fewer forward and backward than
    clipping ``log r``); an overflowing ``r = inf`` clips to ``1 + eps`` as it should.

    Args:
        log_weight: ``log pi(a|s) - log pi_old(a|s)``, shape ``[*B, 1]``.
        advantage: ``[*B, 1]``, same shape as ``log_weight``.
        clip_epsilon: the clip range ``eps`` in (0, 1), or ``(eps_low, eps_high)`` for the
            asymmetric range ``[1 - eps_low, 1 + eps_high]`` (DAPO's "clip-higher"); floats
            or 0-d tensors (a scheduled coefficient inside a compiled graph).

    Returns:
        The per-sample loss ``[*B, 1]``.

    Example:
        >>> # r = e^0.5 = 1.6487 > 1.2 with A = 2: the clipped term 1.2 * 2 = 2.4 is the min.
        >>> clipped_surrogate(torch.tensor([[0.5]]), torch.tensor([[2.0]]), 0.2)
        tensor([[-2.4000]])
    """
    low, high = _eps_pair(clip_epsilon)
    ratio = log_weight.exp()
    gain_unclipped = ratio * advantage
    gain_clipped = ratio.clamp(1.0 - low, 1.0 + high) * advantage
    return -torch.minimum(gain_unclipped, gain_clipped)


def log_clip_bounds(clip_epsilon: ClipRange) -> tuple[Any, Any]:
    """The clip range in log-ratio space: ``(log(1 - eps_low), log(1 + eps_high))``.

    Example:
        >>> [round(b, 4) for b in log_clip_bounds(0.2)]
        [-0.2231, 0.1823]
    """
    low, high = _eps_pair(clip_epsilon)
    if isinstance(low, torch.Tensor):
        return torch.log1p(-low), torch.log1p(high)
    return math.log1p(-low), math.log1p(high)


def clip_fraction(
    log_weight: torch.Tensor,
    clip_epsilon: ClipRange,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fraction of samples whose ratio lies outside ``[1 - eps_low, 1 + eps_high]``.

    Example:
        >>> clip_fraction(torch.tensor([[0.0], [0.5]]), 0.2)
        tensor(0.5000)
    """
    low, high = log_clip_bounds(clip_epsilon)
    outside = (log_weight < low) | (log_weight > high)
    return masked_mean(outside.to(log_weight.dtype), mask)


def value_distance(target: torch.Tensor, value: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Elementwise distance between value targets and predictions.

    Args:
        target: ``[*B, 1]`` value targets.
        value: ``[*B, 1]`` predictions, same shape.
        loss_type: ``"l1"``, ``"l2"`` (squared error) or ``"smooth_l1"`` (Huber, delta 1).

    Example:
        >>> value_distance(torch.tensor([[3.0]]), torch.tensor([[1.0]]), "smooth_l1")
        tensor([[1.5000]])
    """
    if loss_type == "l2":
        return F.mse_loss(value, target, reduction="none")
    if loss_type == "l1":
        return F.l1_loss(value, target, reduction="none")
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(value, target, reduction="none")
    raise ValueError(f"loss_critic_type must be one of {LOSS_CRITIC_TYPES}, got {loss_type!r}.")


def clipped_value_loss(
    target: torch.Tensor,
    value: torch.Tensor,
    old_value: torch.Tensor,
    clip: float | torch.Tensor,
    loss_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pessimistic clipped value loss (as in OpenAI baselines' PPO2).

    The prediction is kept within ``clip`` of the value stored at collection time,
    ``V_clip = V_old + clamp(V - V_old, -clip, clip)``, and the worse (larger) of the plain and
    clipped distances is used.

    Returns:
        ``(loss [*B, 1], clipped [*B, 1] bool)``.

    Example:
        >>> # V moved 1.0 -> 2.0 with clip 0.5: V_clip = 1.5; target 3: l1 losses 1.0 and 1.5.
        >>> loss, clipped = clipped_value_loss(
        ...     torch.tensor([[3.0]]), torch.tensor([[2.0]]), torch.tensor([[1.0]]), 0.5, "l1")
        >>> loss, clipped
        (tensor([[1.5000]]), tensor([[True]]))
    """
    delta = value - old_value
    bound: Any = clip  # a float or a 0-d tensor (a scheduled clip_value)
    delta_clipped = delta.clamp(-bound, bound)
    plain = value_distance(target, value, loss_type)
    clipped = value_distance(target, old_value + delta_clipped, loss_type)
    with torch.no_grad():
        was_clipped = delta != delta_clipped
    return torch.maximum(plain, clipped), was_clipped
