"""Advantage and return estimators on plain tensors (no TensorDict).

Every function takes tensors of shape ``[*B, T, F]`` (``F`` is usually 1) with the time
dimension given by ``time_dim`` (default ``-2``, as in TorchRL's functional API) and returns
tensors of the same shape.

Flags. ``done`` ends the *trace*: nothing after a done step flows back into it.
``terminated`` ends the *bootstrap*: a terminated step has no ``gamma * V(s_{t+1})`` term.
A step that is done but not terminated (a time-limit truncation) therefore still bootstraps
from ``V(s_{t+1})`` (Pardo et al. 2018, "Time Limits in Reinforcement Learning").
``terminated`` defaults to ``done``. Flags may be ``bool`` tensors or integer/floating
tensors holding only 0 and 1 (anything else raises); ``terminated`` must imply ``done``.

Masks. ``mask`` (same shape, ``True`` = valid step) marks padding. A padded step gets
advantage 0 (and return 0 for the return estimators) and is treated as the end of the
window: the valid step just before it keeps its own one-step bootstrap
``r_t + gamma * V(s_{t+1})`` (unless terminated) but receives nothing from later steps, i.e.
it behaves exactly like the last step of a rollout that was cut there. Values stored at
padded steps are never read, so they may be garbage or NaN.

Speed. The backward recursions ``x_t = b_t + a_t * x_{t+1}`` are solved with a doubling
(Hillis-Steele) scan: ``ceil(log2 T)`` vectorised steps instead of ``T`` Python iterations.
It only multiplies coefficients in ``[0, 1]`` (products that underflow become 0, their true
limit) and never divides, so long horizons, small ``gamma * lmbda`` and many dones are safe.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ppokit.value.checks import (
    Scalar,
    as_flag,
    check_discount,
    check_floating,
    check_same_shapes,
    check_time_dim,
    prepare_flags,
)
from ppokit.value.scan import backward_linear_scan, shift_left, zero_where

__all__ = [
    "generalized_advantage_estimate",
    "td0_return_estimate",
    "td1_return_estimate",
    "td_lambda_return_estimate",
]


def generalized_advantage_estimate(
    gamma: Scalar,
    lmbda: Scalar,
    state_value: Tensor,
    next_state_value: Tensor,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None = None,
    *,
    time_dim: int = -2,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimate (Schulman et al. 2016, arXiv:1506.02438).

    ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)`` and
    ``A_t = delta_t + gamma * lmbda * (1 - done_t) * A_{t+1}``, ``A_T = 0``.

    Args:
        gamma: discount in [0, 1], a float or a tensor broadcastable to ``[*B, T, F]``.
        lmbda: trace decay in [0, 1], same forms as ``gamma``.
        state_value: ``V(s_t)``, ``[*B, T, F]``.
        next_state_value: ``V(s_{t+1})``, ``[*B, T, F]`` (the true next state, also at
            episode ends).
        reward: ``r_t``, ``[*B, T, F]``.
        done: ``[*B, T, F]`` flags; the trace stops after a done step.
        terminated: ``[*B, T, F]`` flags; no bootstrap at a terminated step. Defaults to
            ``done``.
        time_dim: the time dimension of the inputs.
        mask: optional ``[*B, T, F]`` bool, ``True`` = valid step (see the module doc).

    Returns:
        ``(advantage, value_target)``, both ``[*B, T, F]``, ``value_target = advantage +
        state_value`` (so it equals ``state_value`` at padded steps).

    Example:
        >>> v = torch.zeros(1, 3, 1); r = torch.ones(1, 3, 1)
        >>> done = torch.tensor([False, False, True]).view(1, 3, 1)
        >>> adv, target = generalized_advantage_estimate(0.5, 1.0, v, v, r, done)
        >>> adv.flatten()  # 1 + 0.5 * (1 + 0.5 * 1), 1 + 0.5 * 1, 1
        tensor([1.7500, 1.5000, 1.0000])
    """
    shape = check_same_shapes(
        state_value=state_value,
        next_state_value=next_state_value,
        reward=reward,
        done=done,
        terminated=terminated,
        mask=mask,
    )
    check_floating(state_value=state_value, next_state_value=next_state_value, reward=reward)
    time_dim = check_time_dim(shape, time_dim)
    check_discount("gamma", gamma, shape)
    check_discount("lmbda", lmbda, shape)
    done, terminated, mask = prepare_flags(done, terminated, mask)
    pad = None if mask is None else ~mask

    # where(), not a product: a terminal next value may be NaN (reset obs) and must not leak.
    bootstrap = zero_where(terminated, next_state_value)
    delta = zero_where(pad, reward + gamma * bootstrap - state_value)
    cut = done if pad is None else done | pad
    coef = (~cut).to(delta.dtype) * (gamma * lmbda)
    advantage = backward_linear_scan(coef, delta, time_dim)
    value_target = advantage + state_value
    return advantage, value_target


def _lambda_return(
    gamma: Scalar,
    lmbda: Scalar,
    next_state_value: Tensor,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None,
    time_dim: int,
    mask: Tensor | None,
) -> Tensor:
    shape = check_same_shapes(
        next_state_value=next_state_value,
        reward=reward,
        done=done,
        terminated=terminated,
        mask=mask,
    )
    check_floating(next_state_value=next_state_value, reward=reward)
    time_dim = check_time_dim(shape, time_dim)
    check_discount("gamma", gamma, shape)
    check_discount("lmbda", lmbda, shape)
    done, terminated, mask = prepare_flags(done, terminated, mask)

    # ``stop_t``: G_{t+1} is replaced by V(s_{t+1}). True at done steps, at the last step of
    # the window (the rollout was cut there) and before a padded step.
    stop = done | shift_left(torch.zeros_like(done), time_dim, True)
    if mask is not None:
        stop = stop | shift_left(~mask, time_dim, True)
    bootstrap = zero_where(terminated, next_state_value)
    # G_t = r_t + gamma * [(1 - lmbda) V' + lmbda * (stop ? V' : G_{t+1})]
    #     = r_t + gamma * V' - coef_t * V' + coef_t * G_{t+1},  coef_t = gamma*lmbda*(1-stop_t)
    coef = (~stop).to(reward.dtype) * (gamma * lmbda)
    bias = reward + gamma * bootstrap - coef * bootstrap
    if mask is not None:
        bias = zero_where(~mask, bias)
        coef = zero_where(~mask, coef)
    return backward_linear_scan(coef, bias, time_dim)


def td_lambda_return_estimate(
    gamma: Scalar,
    lmbda: Scalar,
    next_state_value: Tensor,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None = None,
    *,
    time_dim: int = -2,
    mask: Tensor | None = None,
) -> Tensor:
    """TD(lambda) return (Sutton & Barto 2018, eq. 12.3), computed backwards.

    ``G_t = r_t + gamma * (1 - terminated_t) * [(1 - lmbda) V(s_{t+1}) + lmbda * G_{t+1}]``
    where ``G_{t+1}`` is replaced by ``V(s_{t+1})`` after a done step and at the last step.

    Args:
        gamma: discount in [0, 1], float or tensor broadcastable to ``[*B, T, F]``.
        lmbda: trace decay in [0, 1], same forms as ``gamma``.
        next_state_value: ``V(s_{t+1})``, ``[*B, T, F]``.
        reward: ``[*B, T, F]``.
        done: ``[*B, T, F]`` flags (trace end).
        terminated: ``[*B, T, F]`` flags (no bootstrap). Defaults to ``done``.
        time_dim: the time dimension.
        mask: optional ``[*B, T, F]`` bool, ``True`` = valid; padded steps return 0.

    Returns:
        The ``[*B, T, F]`` lambda-returns.

    Example:
        >>> nv = torch.tensor([2.0, 4.0]).view(1, 2, 1); r = torch.ones(1, 2, 1)
        >>> done = torch.zeros(1, 2, 1, dtype=torch.bool)
        >>> # G_1 = 1 + .5 * 4 = 3;  G_0 = 1 + .5 * ((1 - .5) * 2 + .5 * 3) = 2.25
        >>> td_lambda_return_estimate(0.5, 0.5, nv, r, done).flatten()
        tensor([2.2500, 3.0000])
    """
    return _lambda_return(gamma, lmbda, next_state_value, reward, done, terminated, time_dim, mask)


def td1_return_estimate(
    gamma: Scalar,
    next_state_value: Tensor,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None = None,
    *,
    time_dim: int = -2,
    mask: Tensor | None = None,
) -> Tensor:
    """TD(1) (Monte-Carlo) return, bootstrapped at truncations and at the window end.

    ``G_t = r_t + gamma * (1 - terminated_t) * (G_{t+1} if not done_t else V(s_{t+1}))``;
    it is :func:`td_lambda_return_estimate` with ``lmbda = 1``.

    Args:
        gamma: discount in [0, 1], float or tensor broadcastable to ``[*B, T, F]``.
        next_state_value: ``V(s_{t+1})``, ``[*B, T, F]``.
        reward: ``[*B, T, F]``.
        done: ``[*B, T, F]`` flags (trace end).
        terminated: ``[*B, T, F]`` flags (no bootstrap). Defaults to ``done``.
        time_dim: the time dimension.
        mask: optional ``[*B, T, F]`` bool, ``True`` = valid; padded steps return 0.

    Returns:
        The ``[*B, T, F]`` discounted returns.

    Example:
        >>> nv = torch.full((1, 3, 1), 10.0); r = torch.ones(1, 3, 1)
        >>> done = torch.zeros(1, 3, 1, dtype=torch.bool)
        >>> td1_return_estimate(0.5, nv, r, done).flatten()  # 1 + .5 * (1 + .5 * (1 + .5 * 10))
        tensor([3., 4., 6.])
    """
    return _lambda_return(gamma, 1.0, next_state_value, reward, done, terminated, time_dim, mask)


def td0_return_estimate(
    gamma: Scalar,
    next_state_value: Tensor,
    reward: Tensor,
    terminated: Tensor,
    *,
    mask: Tensor | None = None,
) -> Tensor:
    """One-step TD target ``r_t + gamma * (1 - terminated_t) * V(s_{t+1})``.

    Args:
        gamma: discount in [0, 1], float or tensor broadcastable to the inputs.
        next_state_value: ``V(s_{t+1})``, ``[*B, T, F]`` (any shape, shared by all inputs).
        reward: same shape.
        terminated: same shape, flags (no bootstrap).
        mask: optional bool of the same shape, ``True`` = valid; padded steps return 0.

    Returns:
        The one-step targets, same shape.

    Example:
        >>> nv = torch.tensor([[2.0], [2.0]]); r = torch.ones(2, 1)
        >>> td0_return_estimate(0.5, nv, r, torch.tensor([[False], [True]])).flatten()
        tensor([2., 1.])
    """
    shape = check_same_shapes(
        next_state_value=next_state_value, reward=reward, terminated=terminated, mask=mask
    )
    check_floating(next_state_value=next_state_value, reward=reward)
    check_discount("gamma", gamma, shape)
    terminated = as_flag("terminated", terminated)
    out = reward + gamma * zero_where(terminated, next_state_value)
    if mask is not None:
        out = zero_where(~as_flag("mask", mask), out)
    return out
