"""V-trace off-policy targets (Espeholt et al. 2018, "IMPALA", arXiv:1802.01561, eq. 1).

With ``rho_t = pi(a_t|s_t) / mu(a_t|s_t)`` (current over behaviour policy),
``rhobar_t = min(rho_t, rho_thresh)`` and ``c_t = min(rho_t, c_thresh)``::

    delta_t = rhobar_t * (r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t))
    v_t - V(s_t) = delta_t + gamma * (1 - done_t) * c_t * (v_{t+1} - V(s_{t+1}))
    A_t = rhobar_t * (r_t + gamma * (1 - terminated_t) * v_{t+1} - V(s_t))

``v_{t+1}`` is replaced by ``V(s_{t+1})`` after a done step and at the last step of the
window (the next entry along time belongs to another trajectory, or does not exist). Flags
and masks follow :mod:`ppokit.value.functional`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ppokit.value.checks import (
    Scalar,
    check_discount,
    check_floating,
    check_same_shapes,
    check_threshold,
    check_time_dim,
    prepare_flags,
)
from ppokit.value.scan import backward_linear_scan, shift_left, zero_where

__all__ = ["vtrace_advantage_estimate"]


def vtrace_advantage_estimate(
    gamma: Scalar,
    log_pi: Tensor,
    log_mu: Tensor,
    state_value: Tensor,
    next_state_value: Tensor,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None = None,
    *,
    rho_thresh: Scalar = 1.0,
    c_thresh: Scalar = 1.0,
    time_dim: int = -2,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """V-trace advantage and value target.

    Args:
        gamma: discount in [0, 1], float or tensor broadcastable to ``[*B, T, F]``.
        log_pi: ``log pi(a_t|s_t)`` under the current policy, ``[*B, T, F]``.
        log_mu: ``log mu(a_t|s_t)`` under the behaviour policy that acted, ``[*B, T, F]``.
        state_value: ``V(s_t)``, ``[*B, T, F]``.
        next_state_value: ``V(s_{t+1})``, ``[*B, T, F]``.
        reward: ``[*B, T, F]``.
        done: ``[*B, T, F]`` flags (trace end).
        terminated: ``[*B, T, F]`` flags (no bootstrap). Defaults to ``done``.
        rho_thresh: clip ``rhobar`` of the importance weight in the TD error (> 0).
        c_thresh: clip ``c`` of the importance weight in the trace (> 0).
        time_dim: the time dimension.
        mask: optional bool, ``True`` = valid step; padded steps get advantage 0 and target
            ``V(s_t)``, and end the window like the last step.

    Returns:
        ``(advantage, value_target)``, both ``[*B, T, F]``; ``value_target`` is ``v_t``.

    Example:
        >>> v = torch.zeros(1, 2, 1); nv = torch.ones(1, 2, 1); r = torch.ones(1, 2, 1)
        >>> done = torch.zeros(1, 2, 1, dtype=torch.bool); lp = torch.zeros(1, 2, 1)
        >>> adv, vs = vtrace_advantage_estimate(0.5, lp, lp, v, nv, r, done)
        >>> # on-policy (rho = c = 1): delta_t = 1 + .5 * 1 - 0 = 1.5 at both steps;
        >>> # v_1 = 0 + 1.5; v_0 = 0 + 1.5 + .5 * (v_1 - state_value_1) = 2.25;
        >>> # A_0 = 1 + .5 * v_1 - 0 = 1.75; A_1 = 1 + .5 * next_state_value_1 = 1.5
        >>> vs.flatten(), adv.flatten()
        (tensor([2.2500, 1.5000]), tensor([1.7500, 1.5000]))
    """
    shape = check_same_shapes(
        log_pi=log_pi,
        log_mu=log_mu,
        state_value=state_value,
        next_state_value=next_state_value,
        reward=reward,
        done=done,
        terminated=terminated,
        mask=mask,
    )
    check_floating(
        log_pi=log_pi,
        log_mu=log_mu,
        state_value=state_value,
        next_state_value=next_state_value,
        reward=reward,
    )
    time_dim = check_time_dim(shape, time_dim)
    check_discount("gamma", gamma, shape)
    check_threshold("rho_thresh", rho_thresh)
    check_threshold("c_thresh", c_thresh)
    done, terminated, mask = prepare_flags(done, terminated, mask)
    pad = None if mask is None else ~mask

    rho = (log_pi - log_mu).exp()
    rho_bar = rho.clamp_max(rho_thresh)
    c = rho.clamp_max(c_thresh)
    # where(), not a product: a terminal next value may be NaN (reset obs) and must not leak.
    bootstrap = zero_where(terminated, next_state_value)
    delta = zero_where(pad, rho_bar * (reward + gamma * bootstrap - state_value))
    cut = done if pad is None else done | pad
    coef = (~cut).to(delta.dtype) * gamma * c
    vs = backward_linear_scan(coef, delta, time_dim) + state_value

    # v_{t+1}: the next entry along time, unless it belongs to another trajectory (done),
    # does not exist (last step) or is padding; then the true next value.
    stop = done | shift_left(torch.zeros_like(done), time_dim, True)
    if pad is not None:
        stop = stop | shift_left(pad, time_dim, True)
    vs_next = torch.where(stop, next_state_value, _shift_values_left(vs, time_dim))
    advantage = rho_bar * (reward + gamma * zero_where(terminated, vs_next) - state_value)
    return zero_where(pad, advantage), vs


def _shift_values_left(x: Tensor, time_dim: int) -> Tensor:
    """``out_t = x_{t+1}`` along ``time_dim``; the last entry repeats (it is replaced)."""
    x = x.movedim(time_dim, 0)
    return torch.cat([x[1:], x[-1:]], 0).movedim(0, time_dim)
