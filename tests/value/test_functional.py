"""ppokit.value.functional's GAE against the plain-loop references of gae_loops.py, and hand
examples."""

from __future__ import annotations

import pytest
import torch
from gae_loops import (
    double,
    loop_gae,
    random_rollout,
    tol,
)

from ppokit.value.functional import (
    generalized_advantage_estimate,
)

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
