"""ppokit.value.functional's masks, TD(lambda), TD(1) and TD(0) against the plain-loop
references of gae_loops.py, and its errors on bad input."""

from __future__ import annotations

import pytest
import torch
from gae_loops import (
    double,
    forward_view_lambda_return,
    loop_gae,
    loop_lambda_return,
    random_rollout,
    tol,
)

from ppokit.value.functional import (
    generalized_advantage_estimate,
    td0_return_estimate,
    td1_return_estimate,
    td_lambda_return_estimate,
)

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
