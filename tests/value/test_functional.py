"""ppokit.value.functional against plain-loop references written here, and hand examples."""

from __future__ import annotations

import pytest
import torch

from ppokit.value.functional import (
    generalized_advantage_estimate,
    td0_return_estimate,
    td1_return_estimate,
    td_lambda_return_estimate,
)

# ---------------------------------------------------------------------------
# independent references: one Python iteration per time step, [N, T, F] inputs
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps", [1, 7, 2048])
@pytest.mark.parametrize("done_prob", [0.0, 0.05, 0.5])
def test_gae_matches_loop(dtype, steps, done_prob):
    value, next_value, reward, done, terminated = random_rollout(
        3, steps, 2, dtype=dtype, done_prob=done_prob, seed=steps
    )
    for gamma, lmbda in [(0.99, 0.95), (0.9, 0.1), (1.0, 1.0), (0.5, 0.0)]:
        adv, target = generalized_advantage_estimate(
            gamma, lmbda, value, next_value, reward, done, terminated
        )
        # reference in float64: the float32 loop is itself less accurate than the scan
        ref_adv, ref_target = loop_gae(
            gamma, lmbda, *double(value, next_value, reward, done, terminated)
        )
        scale = ref_target.abs().max().item()
        torch.testing.assert_close(adv.double(), ref_adv, **tol(dtype, scale))
        torch.testing.assert_close(target.double(), ref_target, **tol(dtype, scale))


def test_gae_long_horizon_small_discount_does_not_underflow_to_nan():
    # products of gamma * lmbda = 1e-4 over 2048 steps underflow to 0: must stay finite
    value, next_value, reward, done, _ = random_rollout(2, 2048, done_prob=0.0)
    adv, _ = generalized_advantage_estimate(0.01, 0.01, value, next_value, reward, done)
    ref, _ = loop_gae(0.01, 0.01, value, next_value, reward, done, done)
    assert torch.isfinite(adv).all()
    torch.testing.assert_close(adv, ref)


def test_gae_hand_computed_three_steps():
    # gamma = 0.9, lmbda = 0.8, gamma * lmbda = 0.72
    # V(s)  = [1.0, 2.0, 3.0], V(s') = [2.0, 3.0, 4.0], r = [1.0, 0.0, 2.0], no done
    # delta_2 = 2 + 0.9 * 4 - 3 = 2.6
    # delta_1 = 0 + 0.9 * 3 - 2 = 0.7
    # delta_0 = 1 + 0.9 * 2 - 1 = 1.8
    # A_2 = 2.6
    # A_1 = 0.7 + 0.72 * 2.6   = 2.572
    # A_0 = 1.8 + 0.72 * 2.572 = 3.65184
    value = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 3, 1)
    next_value = torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64).view(1, 3, 1)
    reward = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64).view(1, 3, 1)
    done = torch.zeros(1, 3, 1, dtype=torch.bool)
    adv, target = generalized_advantage_estimate(0.9, 0.8, value, next_value, reward, done)
    expected = torch.tensor([3.65184, 2.572, 2.6], dtype=torch.float64).view(1, 3, 1)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(target, expected + value)

    # Terminate at step 1: delta_1 = 0 - 2 = -2 (no bootstrap) and the trace stops there:
    # A_1 = -2, A_0 = 1.8 + 0.72 * (-2) = 0.36, A_2 unchanged (2.6)
    terminal = torch.tensor([False, True, False]).view(1, 3, 1)
    adv, _ = generalized_advantage_estimate(0.9, 0.8, value, next_value, reward, terminal)
    torch.testing.assert_close(adv.flatten(), torch.tensor([0.36, -2.0, 2.6], dtype=torch.float64))


def test_gae_split_at_terminal_step():
    value, next_value, reward, _, _ = random_rollout(1, 20, dtype=torch.float64, done_prob=0.0)
    done = torch.zeros(1, 20, 1, dtype=torch.bool)
    done[:, 8] = True
    full, _ = generalized_advantage_estimate(0.99, 0.95, value, next_value, reward, done)
    head, _ = generalized_advantage_estimate(
        0.99, 0.95, value[:, :9], next_value[:, :9], reward[:, :9], done[:, :9]
    )
    tail, _ = generalized_advantage_estimate(
        0.99, 0.95, value[:, 9:], next_value[:, 9:], reward[:, 9:], done[:, 9:]
    )
    torch.testing.assert_close(full[:, :9], head)
    torch.testing.assert_close(full[:, 9:], tail)
    # what happens after the terminal step does not reach the steps before it
    changed, _ = generalized_advantage_estimate(
        0.99, 0.95, value, next_value, reward + 100.0 * (torch.arange(20) > 8).view(1, 20, 1), done
    )
    torch.testing.assert_close(changed[:, :9], full[:, :9])
    assert not torch.allclose(changed[:, 9:], full[:, 9:])


def test_truncation_bootstraps_termination_does_not():
    gamma = 0.9
    value, next_value, reward, _, _ = random_rollout(1, 6, dtype=torch.float64, done_prob=0.0)
    done = torch.zeros(1, 6, 1, dtype=torch.bool)
    done[:, 3] = True
    truncated_only = torch.zeros_like(done)
    adv_trunc, _ = generalized_advantage_estimate(
        gamma, 0.95, value, next_value, reward, done, truncated_only
    )
    adv_term, _ = generalized_advantage_estimate(gamma, 0.95, value, next_value, reward, done, done)
    torch.testing.assert_close(
        adv_trunc[0, 3], reward[0, 3] + gamma * next_value[0, 3] - value[0, 3]
    )
    torch.testing.assert_close(adv_term[0, 3], reward[0, 3] - value[0, 3])


def test_infinite_horizon_constant_reward_has_zero_advantage_under_truncation():
    # SB3's test_infinite_horizon idea: reward 1 forever, V = 1 / (1 - gamma) is exact, and a
    # time limit (truncation) every 5 steps must not change that.
    gamma, steps = 0.9, 20
    v = torch.full((1, steps, 1), 1 / (1 - gamma), dtype=torch.float64)
    done = (torch.arange(steps) % 5 == 4).view(1, steps, 1)
    reward = torch.ones_like(v)
    adv, _ = generalized_advantage_estimate(gamma, 0.95, v, v, reward, done, torch.zeros_like(done))
    torch.testing.assert_close(adv, torch.zeros_like(adv))
    adv_wrong, _ = generalized_advantage_estimate(gamma, 0.95, v, v, reward, done, done)
    assert (adv_wrong[done] < -1).all()  # treating the limit as terminal biases the estimate


@pytest.mark.parametrize("time_dim", [0, 1, 2])
def test_time_dim(time_dim):
    data = random_rollout(3, 11, 2, dtype=torch.float64)
    ref_adv, ref_target = generalized_advantage_estimate(0.9, 0.7, *data, time_dim=1)
    moved = [x.movedim(1, time_dim) for x in data]
    adv, target = generalized_advantage_estimate(0.9, 0.7, *moved, time_dim=time_dim)
    torch.testing.assert_close(adv.movedim(time_dim, 1), ref_adv)
    torch.testing.assert_close(target.movedim(time_dim, 1), ref_target)


def test_tensor_gamma_and_lambda_per_env():
    value, next_value, reward, done, terminated = random_rollout(2, 9, dtype=torch.float64)
    gamma = torch.tensor([0.9, 0.5], dtype=torch.float64).view(2, 1, 1)
    lmbda = torch.tensor([0.7, 1.0], dtype=torch.float64).view(2, 1, 1)
    adv, _ = generalized_advantage_estimate(
        gamma, lmbda, value, next_value, reward, done, terminated
    )
    for i in range(2):
        ref, _ = loop_gae(
            gamma[i].item(),
            lmbda[i].item(),
            value[i : i + 1],
            next_value[i : i + 1],
            reward[i : i + 1],
            done[i : i + 1],
            terminated[i : i + 1],
        )
        torch.testing.assert_close(adv[i : i + 1], ref)


def test_float_flags_equal_bool_flags():
    value, next_value, reward, done, terminated = random_rollout(2, 9)
    a = generalized_advantage_estimate(0.9, 0.9, value, next_value, reward, done, terminated)
    b = generalized_advantage_estimate(
        0.9, 0.9, value, next_value, reward, done.float(), terminated.long()
    )
    torch.testing.assert_close(a, b)


def test_terminated_defaults_to_done():
    value, next_value, reward, done, _ = random_rollout(2, 9)
    a = generalized_advantage_estimate(0.9, 0.9, value, next_value, reward, done)
    b = generalized_advantage_estimate(0.9, 0.9, value, next_value, reward, done, done)
    torch.testing.assert_close(a, b)


def test_gradients_match_loop():
    value, next_value, reward, done, terminated = random_rollout(2, 13, dtype=torch.float64)
    value.requires_grad_(True)
    gamma = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    weights = torch.randn_like(value)
    adv, _ = generalized_advantage_estimate(gamma, 0.8, value, next_value, reward, done, terminated)
    grads = torch.autograd.grad((adv * weights).sum(), (value, gamma))
    ref, _ = loop_gae(gamma, 0.8, value, next_value, reward, done, terminated)
    ref_grads = torch.autograd.grad((ref * weights).sum(), (value, gamma))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


# ---------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------


def test_mask_padded_sequences_equal_unpadded_ones():
    # two sequences of lengths 5 and 3, right-padded to 6 with NaN garbage
    value, next_value, reward, done, terminated = random_rollout(2, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool).view(2, 6, 1)
    for x in (value, next_value, reward):
        x[~mask] = float("nan")
    adv, target = generalized_advantage_estimate(
        0.9, 0.8, value, next_value, reward, done, terminated, mask=mask
    )
    for i, length in enumerate([5, 3]):
        sl = (slice(i, i + 1), slice(0, length))
        ref, ref_target = loop_gae(
            0.9, 0.8, value[sl], next_value[sl], reward[sl], done[sl], terminated[sl]
        )
        torch.testing.assert_close(adv[sl], ref)
        torch.testing.assert_close(target[sl], ref_target)
    assert (adv[~mask] == 0).all()


def test_mask_gap_in_the_middle_cuts_the_trace():
    value, next_value, reward, _, _ = random_rollout(1, 7, dtype=torch.float64)
    done = torch.zeros(1, 7, 1, dtype=torch.bool)
    mask = torch.tensor([1, 1, 1, 0, 1, 1, 1], dtype=torch.bool).view(1, 7, 1)
    adv, _ = generalized_advantage_estimate(0.9, 0.8, value, next_value, reward, done, mask=mask)
    ref, _ = loop_gae(0.9, 0.8, value, next_value, reward, done, done, mask=mask)
    torch.testing.assert_close(adv, ref)
    # step 2 (before the gap) keeps its own bootstrap and nothing else
    torch.testing.assert_close(adv[0, 2], reward[0, 2] + 0.9 * next_value[0, 2] - value[0, 2])
    assert adv[0, 3] == 0


def test_mask_random_long_matches_loop():
    data = random_rollout(4, 300, dtype=torch.float32, done_prob=0.05, seed=3)
    mask = torch.rand(4, 300, 1, generator=torch.Generator().manual_seed(1)) > 0.1
    adv, target = generalized_advantage_estimate(0.99, 0.95, *data, mask=mask)
    ref_adv, ref_target = loop_gae(0.99, 0.95, *data, mask=mask)
    torch.testing.assert_close(adv, ref_adv, **tol(torch.float32))
    torch.testing.assert_close(target, ref_target, **tol(torch.float32))


# ---------------------------------------------------------------------------
# TD(lambda), TD(1), TD(0)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps", [1, 7, 2048])
def test_td_lambda_matches_loop(dtype, steps):
    _, next_value, reward, done, terminated = random_rollout(
        3, steps, 2, dtype=dtype, done_prob=0.1, seed=steps + 1
    )
    for gamma, lmbda in [(0.99, 0.95), (0.8, 0.3), (1.0, 1.0)]:
        out = td_lambda_return_estimate(gamma, lmbda, next_value, reward, done, terminated)
        ref = loop_lambda_return(gamma, lmbda, *double(next_value, reward, done, terminated))
        scale = ref.abs().max().item()
        torch.testing.assert_close(out.double(), ref, **tol(dtype, scale))


def test_td_lambda_matches_forward_view():
    _, next_value, reward, done, terminated = random_rollout(1, 9, dtype=torch.float64, seed=5)
    done[0, 3] = True  # a truncation (terminated stays as drawn) and a terminal
    done[0, 6] = terminated[0, 6] = True
    out = td_lambda_return_estimate(0.9, 0.6, next_value, reward, done, terminated)
    ref = forward_view_lambda_return(
        0.9,
        0.6,
        next_value.flatten().tolist(),
        reward.flatten().tolist(),
        done.flatten().tolist(),
        terminated.flatten().tolist(),
    )
    torch.testing.assert_close(out.flatten(), ref)


def test_td_lambda_mask_matches_loop():
    _, next_value, reward, done, terminated = random_rollout(3, 50, dtype=torch.float64, seed=2)
    mask = torch.rand(3, 50, 1, generator=torch.Generator().manual_seed(4)) > 0.2
    out = td_lambda_return_estimate(0.9, 0.7, next_value, reward, done, terminated, mask=mask)
    ref = loop_lambda_return(0.9, 0.7, next_value, reward, done, terminated, mask=mask)
    torch.testing.assert_close(out, ref)
    assert (out[~mask] == 0).all()


def test_gae_target_equals_td_lambda_return_with_consistent_values():
    # With V(s_{t+1}) read from the same value table, GAE's A + V is the lambda-return.
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(2, 31, 1, generator=gen, dtype=torch.float64)
    value, next_value = table[:, :-1], table[:, 1:]
    _, _, reward, done, terminated = random_rollout(2, 30, dtype=torch.float64)
    _, target = generalized_advantage_estimate(
        0.95, 0.9, value, next_value, reward, done, terminated
    )
    ret = td_lambda_return_estimate(0.95, 0.9, next_value, reward, done, terminated)
    torch.testing.assert_close(target, ret)


def test_td1_is_discounted_sum_bootstrapped_at_truncation():
    # gamma = 0.5, r = [1, 2, 3, 4], V' = [10, 20, 30, 40]
    # step 1 is truncated (done, not terminated), step 3 is the end of the window
    # G_3 = 4 + 0.5 * 40 = 24           (window end: bootstrap)
    # G_2 = 3 + 0.5 * G_3 = 15
    # G_1 = 2 + 0.5 * 20 = 12            (truncated: bootstrap from V'_1, not G_2)
    # G_0 = 1 + 0.5 * G_1 = 7
    reward = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1)
    next_value = torch.tensor([10.0, 20.0, 30.0, 40.0]).view(1, 4, 1)
    done = torch.tensor([False, True, False, False]).view(1, 4, 1)
    out = td1_return_estimate(0.5, next_value, reward, done, torch.zeros_like(done))
    torch.testing.assert_close(out.flatten(), torch.tensor([7.0, 12.0, 15.0, 24.0]))
    # the same step terminated instead: G_1 = 2, G_0 = 1 + 0.5 * 2 = 2
    out = td1_return_estimate(0.5, next_value, reward, done, done)
    torch.testing.assert_close(out.flatten(), torch.tensor([2.0, 2.0, 15.0, 24.0]))
    ref = loop_lambda_return(0.5, 1.0, next_value, reward, done, done)
    torch.testing.assert_close(out, ref)


def test_td0():
    _, next_value, reward, _, terminated = random_rollout(2, 5, dtype=torch.float64)
    out = td0_return_estimate(0.9, next_value, reward, terminated)
    torch.testing.assert_close(out, reward + 0.9 * next_value * (~terminated))
    mask = torch.ones_like(terminated)
    mask[0, 2] = False
    masked = td0_return_estimate(0.9, next_value, reward, terminated, mask=mask)
    assert masked[0, 2] == 0
    torch.testing.assert_close(masked[mask], out[mask])


# ---------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------


def _inputs():
    return random_rollout(2, 5)


def test_shape_mismatch_names_arguments():
    value, next_value, reward, done, terminated = _inputs()
    with pytest.raises(ValueError, match=r"reward=\(2, 5\).*unsqueeze"):
        generalized_advantage_estimate(0.9, 0.9, value, next_value, reward[..., 0], done)
    with pytest.raises(ValueError, match=r"terminated=\(2, 5, 2\)"):
        generalized_advantage_estimate(
            0.9, 0.9, value, next_value, reward, done, terminated.expand(2, 5, 2)
        )
    with pytest.raises(ValueError, match=r"mask=\(2, 5\)"):
        td_lambda_return_estimate(
            0.9, 0.9, next_value, reward, done, mask=torch.ones(2, 5, dtype=torch.bool)
        )


@pytest.mark.parametrize("name,gamma,lmbda", [("gamma", 1.5, 0.9), ("lmbda", 0.9, -0.1)])
def test_discount_out_of_range(name, gamma, lmbda):
    with pytest.raises(ValueError, match=rf"{name} must lie in \[0, 1\]"):
        generalized_advantage_estimate(gamma, lmbda, *_inputs())


def test_tensor_gamma_out_of_range_or_not_broadcastable():
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\]"):
        generalized_advantage_estimate(torch.tensor([0.5, 1.2]).view(2, 1, 1), 0.9, *_inputs())
    with pytest.raises(ValueError, match=r"gamma of shape \(3,\) does not broadcast"):
        generalized_advantage_estimate(torch.full((3,), 0.9), 0.9, *_inputs())
    with pytest.raises(ValueError, match=r"lmbda of shape \(2, 5, 1, 1\)"):
        td_lambda_return_estimate(0.9, torch.full((2, 5, 1, 1), 0.9), *_inputs()[1:4])


def test_non_binary_flags_rejected():
    value, next_value, reward, done, _ = _inputs()
    with pytest.raises(ValueError, match="done must be a bool tensor or hold only 0 and 1"):
        generalized_advantage_estimate(0.9, 0.9, value, next_value, reward, done.float() * 2)


def test_terminated_without_done_rejected():
    value, next_value, reward, _, _ = _inputs()
    done = torch.zeros(2, 5, 1, dtype=torch.bool)
    terminated = done.clone()
    terminated[0, 1] = True
    with pytest.raises(ValueError, match="terminated must imply done"):
        generalized_advantage_estimate(0.9, 0.9, value, next_value, reward, done, terminated)


def test_time_dim_out_of_range_and_1d_inputs():
    with pytest.raises(ValueError, match="time_dim=3 is out of range"):
        generalized_advantage_estimate(0.9, 0.9, *_inputs(), time_dim=3)
    flat = [x[0, :, 0] for x in _inputs()]
    with pytest.raises(ValueError, match=r"time_dim=-2 is out of range.*unsqueeze\(-1\)"):
        td1_return_estimate(0.9, *flat[1:4])


def test_integer_values_rejected():
    value, next_value, reward, done, _ = _inputs()
    with pytest.raises(TypeError, match="state_value must be a floating-point tensor"):
        generalized_advantage_estimate(0.9, 0.9, value.long(), next_value, reward, done)
