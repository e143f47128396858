"""The backward linear recursion every return estimator reduces to, and two tensor helpers."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["backward_linear_scan", "shift_left", "zero_where"]


def backward_linear_scan(coef: Tensor, bias: Tensor, time_dim: int) -> Tensor:
    """Solve ``x_t = bias_t + coef_t * x_{t+1}`` (with ``x_T = 0``) along ``time_dim``.

    Doubling scan: after the step with stride ``s``, ``bias_t`` holds the sum of the next
    ``2s`` terms and ``coef_t`` the product of ``2s`` coefficients, so ``ceil(log2 T)``
    steps finish the job. Work is ``O(T log T)`` per sequence but each step is one fused
    vectorised op, which beats ``T`` Python iterations by far on CPU and GPU.

    Example:
        >>> coef = torch.tensor([0.5, 0.5, 0.0, 0.5])
        >>> bias = torch.tensor([1.0, 1.0, 1.0, 1.0])
        >>> backward_linear_scan(coef, bias, 0)
        tensor([1.7500, 1.5000, 1.0000, 1.0000])
    """
    # Time first and contiguous: every shifted slice below is then one contiguous block,
    # which keeps each elementwise kernel on its fast path (about 2x faster on CPU).
    coef = coef.movedim(time_dim, 0).contiguous()
    bias = bias.movedim(time_dim, 0).contiguous()
    length = bias.shape[0]
    stride = 1
    while stride < length:
        # Out of place (clone, then update a slice) so autograd sees each step's inputs
        # intact. The last ``stride`` entries already reach past the end (x_T = 0).
        new_bias = bias.clone()
        new_bias[:-stride].addcmul_(coef[:-stride], bias[stride:])
        bias = new_bias
        if 2 * stride < length:  # the final step does not need the composed coefficients
            new_coef = coef.clone()
            new_coef[:-stride].mul_(coef[stride:])
            coef = new_coef
        stride *= 2
    return bias.movedim(0, time_dim)


def shift_left(flag: Tensor, time_dim: int, fill: bool) -> Tensor:
    """``out_t = flag_{t+1}`` along ``time_dim``; the last entry is ``fill``."""
    flag = flag.movedim(time_dim, -1)
    pad = torch.full_like(flag[..., :1], fill)
    return torch.cat([flag[..., 1:], pad], dim=-1).movedim(-1, time_dim)


def zero_where(cond: Tensor | None, x: Tensor) -> Tensor:
    return x if cond is None else torch.where(cond, 0.0, x)
