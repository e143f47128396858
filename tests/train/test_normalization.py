"""Running statistics, observation normalisation and reward scaling against plain references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppokit.train.normalization import ObservationNormalizer, RewardScaler, RunningMeanStd


def test_running_mean_std_matches_numpy_over_uneven_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(101, 3))
    rms = RunningMeanStd((3,), epsilon=0.0)
    for chunk in np.split(data, [1, 2, 10, 50, 77]):  # sizes 1, 1, 8, 40, 27, 24
        rms.update(torch.as_tensor(chunk))
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-10)
    assert rms.count == 101


def test_running_mean_std_rejects_wrong_shapes_and_round_trips():
    rms = RunningMeanStd((2,))
    with pytest.raises(ValueError, match=r"expected \[B, 2\]"):
        rms.update(torch.zeros(4, 3))
    rms.update(torch.tensor([[1.0, 2.0], [3.0, 5.0]]))
    other = RunningMeanStd((2,))
    other.load_state_dict(rms.state_dict())
    np.testing.assert_array_equal(other.mean, rms.mean)
    assert other.count == rms.count
    with pytest.raises(ValueError, match="checkpoint is for another environment"):
        RunningMeanStd((5,)).load_state_dict(rms.state_dict())


def test_observation_normalizer_reference_and_freeze():
    norm = ObservationNormalizer((2,), clip=3.0)
    batches = [torch.tensor([[0.0, 10.0], [2.0, 30.0]]), torch.tensor([[4.0, 20.0]])]
    for b in batches:
        out = norm.normalize(b)
    data = torch.cat(batches).double()
    # reference: the prior (mean 0, var 1, count 1e-4) merged with the 3 rows
    n0, n = 1e-4, 3
    mean = data.mean(0) * n / (n0 + n)
    var = n0 * 1.0 + data.var(0, unbiased=False) * n + data.mean(0) ** 2 * n0 * n / (n0 + n)
    var = var / (n0 + n)
    expected = ((batches[-1].double() - mean) / (var + 1e-8).sqrt()).clamp(-3, 3).float()
    torch.testing.assert_close(out, expected)
    norm.frozen = True
    count = norm.rms.count
    assert norm.normalize(torch.tensor([[1e6, -1e6]])).tolist() == [[3.0, -3.0]]  # clipped
    assert norm.rms.count == count
    disabled = ObservationNormalizer((2,), enabled=False)
    x = torch.tensor([[5.0, 6.0]])
    assert disabled.normalize(x) is x


def test_reward_scaler_matches_a_plain_loop():
    gamma, clip = 0.9, 10.0
    rng = np.random.default_rng(1)
    rewards = rng.normal(1.0, 3.0, size=(12, 2)).astype(np.float32)
    dones = np.zeros((12, 2), bool)
    dones[4, 0] = dones[7, 1] = True
    scaler = RewardScaler(2, gamma=gamma, clip=clip)
    got = [
        scaler.scale(torch.from_numpy(r), torch.from_numpy(d)).numpy()
        for r, d in zip(rewards, dones)
    ]
    # reference: per-env discounted return, running population variance of every return seen
    ret = np.zeros(2)
    seen: list[float] = []
    expected = []
    for r, d in zip(rewards, dones):
        ret = ret * gamma + r
        seen.extend(ret.tolist())
        # the prior (var 1, weight 1e-4) is negligible at 1e-4 relative precision
        var = np.var(seen) if len(seen) > 1 else 0.0
        expected.append(np.clip(r / np.sqrt(var + 1e-8), -clip, clip) if len(seen) > 2 else None)
        ret[d] = 0.0
    for g, e in zip(got[2:], expected[2:]):
        np.testing.assert_allclose(g, e, rtol=2e-3)
    state = scaler.state_dict()
    back = RewardScaler(2, gamma=gamma)
    back.load_state_dict(state)
    np.testing.assert_array_equal(back.returns, scaler.returns)
    assert back.rms.count == scaler.rms.count


def test_non_finite_values_do_not_poison_the_statistics_and_stay_visible():
    # issue #15 item 7: a NaN/Inf from the env is left out of the running statistics (so the
    # other envs' values stay finite and the trainer's check blames the right env) and is
    # not clipped into a finite number
    import math

    from ppokit.train.normalization import ObservationNormalizer, RewardScaler, RunningMeanStd

    rms = RunningMeanStd((1,))
    rms.update(torch.tensor([[1.0], [math.nan], [3.0], [math.inf]]))
    ref = RunningMeanStd((1,))
    ref.update(torch.tensor([[1.0], [3.0]]))
    assert rms.mean.tolist() == ref.mean.tolist() and rms.count == ref.count

    scaler = RewardScaler(2, gamma=0.9)
    done = torch.tensor([False, False])
    out = scaler.scale(torch.tensor([1.0, math.nan]), done)
    assert math.isfinite(out[0]) and math.isnan(out[1])
    assert math.isfinite(scaler.rms.var) and scaler.returns.tolist()[1] == 0.0
    out = scaler.scale(torch.tensor([math.inf, 2.0]), done)
    assert math.isinf(out[0]) and math.isfinite(out[1])  # not clipped to +clip

    norm = ObservationNormalizer((1,), clip=5.0)
    out = norm.normalize(torch.tensor([[0.0], [2.0], [math.inf]]))
    assert math.isinf(out[2, 0]) and out[:2].isfinite().all()
    assert norm.normalize(torch.tensor([[100.0]]), update=False).item() == 5.0  # clipped
