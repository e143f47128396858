"""Independent references for the value tests: one Python iteration per time step, over
``[N, T, F]`` inputs, sharing no code with ``ppokit.value``."""

from __future__ import annotations

import torch


def loop_gae(gamma, lmbda, value, next_value, reward, done, terminated, mask=None):
    """A_t = delta_t + gamma * lmbda * (1 - done_t) * A_{t+1}; padded steps cut the trace."""
    advantage = torch.zeros_like(value)
    running = torch.zeros_like(value[:, 0])
    for t in reversed(range(value.shape[1])):
        not_term = (~terminated[:, t]).to(value.dtype)
        not_done = (~done[:, t]).to(value.dtype)
        delta = reward[:, t] + gamma * not_term * next_value[:, t] - value[:, t]
        running = delta + gamma * lmbda * not_done * running
        if mask is not None:
            running = torch.where(mask[:, t], running, 0.0)
        advantage[:, t] = running
    return advantage, advantage + value


def loop_lambda_return(gamma, lmbda, next_value, reward, done, terminated, mask=None):
    """G_t = r_t + gamma * [(1 - lmbda) V'_t + lmbda * (G_{t+1} or V'_t after a stop)]."""
    steps = reward.shape[1]
    out = torch.zeros_like(reward)
    following = torch.zeros_like(reward[:, 0])
    for t in reversed(range(steps)):
        boot = torch.where(terminated[:, t], 0.0, next_value[:, t])
        stop = done[:, t].clone()
        if t == steps - 1:
            stop[:] = True
        elif mask is not None:
            stop = stop | ~mask[:, t + 1]
        following = torch.where(stop, boot, following)
        g = reward[:, t] + gamma * ((1 - lmbda) * boot + lmbda * following)
        if mask is not None:
            g = torch.where(mask[:, t], g, 0.0)
        out[:, t] = g
        following = g
    return out


def forward_view_lambda_return(gamma, lmbda, next_value, reward, done, terminated):
    """Lambda-weighted mix of n-step returns (Sutton & Barto eq. 12.3), one sequence [T]."""
    steps = len(reward)
    out = []
    for t in range(steps):
        end = next((k for k in range(t, steps) if done[k]), steps - 1)
        horizon = end - t + 1
        n_step = []
        for n in range(1, horizon + 1):
            ret = sum(gamma**i * reward[t + i] for i in range(n))
            last = t + n - 1
            ret += gamma**n * (0.0 if terminated[last] else next_value[last])
            n_step.append(ret)
        mix = sum((1 - lmbda) * lmbda ** (n - 1) * n_step[n - 1] for n in range(1, horizon))
        out.append(mix + lmbda ** (horizon - 1) * n_step[-1])
    return torch.tensor(out, dtype=torch.float64)


def random_rollout(n, steps, features=1, *, dtype=torch.float32, done_prob=0.2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (n, steps, features)
    terminated = torch.rand(shape, generator=gen) < done_prob / 2
    done = terminated | (torch.rand(shape, generator=gen) < done_prob / 2)
    value, next_value, reward = (torch.randn(shape, generator=gen, dtype=dtype) for _ in range(3))
    return value, next_value, reward, done, terminated


def tol(dtype, scale=1.0):
    """float32: 1e-5 on values of order 1. Sums of thousands of terms reach |x| ~ 100, where
    float32 itself only resolves ~1e-5 relative, so the bound grows with the magnitude."""
    if dtype == torch.float32:
        return {"atol": 1e-5 * max(1.0, scale), "rtol": 0}
    return {"atol": 1e-10 * max(1.0, scale), "rtol": 0}


def double(*xs):
    return [x.double() if x.is_floating_point() else x for x in xs]
