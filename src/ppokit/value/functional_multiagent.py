"""Multi-agent GAE on plain tensors: per-agent values, team-shared or per-agent signals.

In cooperative multi-agent rollouts (TorchRL's VMAS / PettingZoo layout) the critic gives
one value per agent, ``[*B, T, n_agents, F]``, while reward and done are often shared by the
team, ``[*B, T, F]``. The team signal is broadcast along the agent dim and GAE runs per
agent; nothing else differs from :func:`~ppokit.value.functional.generalized_advantage_estimate`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ppokit.objectives.functional import standardize
from ppokit.value.checks import Scalar
from ppokit.value.functional import generalized_advantage_estimate

__all__ = [
    "broadcast_team_signal",
    "multi_agent_generalized_advantage_estimate",
    "standardize_per_agent",
]


def _agent_index(agent_dim: int, ndim: int) -> int:
    if not -ndim <= agent_dim < ndim:
        raise ValueError(
            f"agent_dim={agent_dim} is out of range for a value of {ndim} dims "
            "([*B, T, n_agents, F] has agent_dim=-2)."
        )
    return agent_dim % ndim


def broadcast_team_signal(name: str, signal: Tensor, value: Tensor, agent_dim: int) -> Tensor:
    """Return ``signal`` shaped like ``value``: as it is if per-agent, else expanded.

    Args:
        name: what ``signal`` is (for error messages).
        signal: ``[*B, T, F]`` (team) or ``value.shape`` (per agent).
        value: the per-agent value, ``[*B, T, n_agents, F]`` (agents at ``agent_dim``).
        agent_dim: the agent dim of ``value``.

    Returns:
        A tensor of ``value.shape`` (a view when ``signal`` is team-level).

    Example:
        >>> broadcast_team_signal("reward", torch.ones(2, 3, 1), torch.zeros(2, 3, 4, 1), -2).shape
        torch.Size([2, 3, 4, 1])
    """
    dim = _agent_index(agent_dim, value.ndim)
    if signal.ndim == value.ndim:
        out = signal
    elif signal.ndim == value.ndim - 1:
        out = signal.unsqueeze(dim)
        if out.shape[:dim] + out.shape[dim + 1 :] == value.shape[:dim] + value.shape[dim + 1 :]:
            out = out.expand(value.shape)
    else:
        out = None
    if out is None or out.shape != value.shape:
        raise ValueError(
            f"{name} has shape {tuple(signal.shape)}; with a per-agent value of shape "
            f"{tuple(value.shape)} (agents at dim {dim}) it must be either team-level "
            f"(the value's shape without dim {dim}) or per-agent (the value's shape)."
        )
    return out


def standardize_per_agent(
    x: Tensor, agent_dim: int, mask: Tensor | None = None, *, eps: float = 1e-4
) -> Tensor:
    """:func:`~ppokit.objectives.functional.standardize` separately for each agent.

    Args:
        x: ``[*B, T, n_agents, F]`` (agents at ``agent_dim``).
        agent_dim: the agent dim.
        mask: optional bool, same shape, ``True`` = valid.
        eps: lower clamp of the std.

    Returns:
        ``x`` with every agent's slice at mean 0 and unbiased std 1.

    Example:
        >>> x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])  # agents along dim 1
        >>> standardize_per_agent(x, 1)  # each column: mean 2 / 20, std 1.41 / 14.1
        tensor([[-0.7071, -0.7071],
                [ 0.7071,  0.7071]])
    """
    dim = _agent_index(agent_dim, x.ndim)
    if mask is not None:
        mask = mask.expand_as(x)
    slices = [
        standardize(x.select(dim, i), None if mask is None else mask.select(dim, i), eps=eps)
        for i in range(x.shape[dim])
    ]
    return torch.stack(slices, dim)


def multi_agent_generalized_advantage_estimate(
    gamma: Scalar,
    lmbda: Scalar,
    state_value: Tensor,
    next_state_value: Tensor,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None = None,
    *,
    agent_dim: int = -2,
    time_dim: int = -3,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """GAE with per-agent values and team-level (or per-agent) reward / flags.

    Args:
        gamma: discount in [0, 1].
        lmbda: trace decay in [0, 1].
        state_value: ``[*B, T, n_agents, F]``.
        next_state_value: same shape.
        reward: ``[*B, T, F]`` (team) or ``[*B, T, n_agents, F]``.
        done: like ``reward``.
        terminated: like ``reward``; defaults to ``done``.
        agent_dim: the agent dim of the values (default ``-2``).
        time_dim: the time dim of the values (default ``-3``).
        mask: optional bool like ``reward``, ``True`` = valid step.

    Returns:
        ``(advantage, value_target)``, both shaped like ``state_value``.

    Example:
        >>> v = torch.zeros(1, 2, 3, 1); r = torch.tensor([1.0, 2.0]).view(1, 2, 1)
        >>> done = torch.zeros(1, 2, 1, dtype=torch.bool)
        >>> adv, _ = multi_agent_generalized_advantage_estimate(0.5, 1.0, v, v, r, done)
        >>> adv[0, :, 0].flatten()  # every agent: 1 + .5 * 2, 2
        tensor([2., 2.])
    """

    def shaped(name: str, tensor: Tensor) -> Tensor:
        return broadcast_team_signal(name, tensor, state_value, agent_dim)

    return generalized_advantage_estimate(
        gamma,
        lmbda,
        state_value,
        next_state_value,
        shaped("reward", reward),
        shaped("done", done),
        None if terminated is None else shaped("terminated", terminated),
        time_dim=time_dim,
        mask=None if mask is None else shaped("mask", mask),
    )
