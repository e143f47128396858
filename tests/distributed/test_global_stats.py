"""Global statistics across 2 gloo ranks against the same statistics of the pooled data.

The ranks' side is ``_workers.stats_worker``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _workers import ADV, MASK, obs_batches

from ppokit.train.normalization import RunningMeanStd

pytestmark = pytest.mark.distributed


@pytest.fixture
def results(gloo_results) -> list[dict]:
    return [r["stats"] for r in gloo_results]


def test_global_moments_pool_all_ranks(results) -> None:
    pooled = torch.cat(ADV).double().flatten()
    valid = torch.cat([a[m] for a, m in zip(ADV, MASK)]).double()
    for res in results:
        mean, var, n = res["moments"]
        assert int(n) == 8
        torch.testing.assert_close(mean, pooled.mean())
        torch.testing.assert_close(var, pooled.var())  # unbiased, as torch.var
        mean, var, n = res["moments_masked"]
        assert int(n) == 7  # the 100.0 is masked out
        torch.testing.assert_close(mean, valid.mean())
        torch.testing.assert_close(var, valid.var())


def test_global_standardize_equals_standardising_the_pooled_batch(results) -> None:
    pooled = torch.cat(ADV)
    want = (pooled - pooled.mean()) / pooled.std()
    got = torch.cat([results[0]["standardized"], results[1]["standardized"]])
    torch.testing.assert_close(got, want)
    mask = torch.cat(MASK)
    valid = pooled[mask]
    want_masked = torch.where(mask, (pooled - valid.mean()) / valid.std(), 0.0)
    got_masked = torch.cat([results[0]["standardized_masked"], results[1]["standardized_masked"]])
    torch.testing.assert_close(got_masked, want_masked)


def test_world_collectives(results) -> None:
    for res in results:
        assert res["any"] == (True, False)
        assert [t.tolist() for t in res["gather"]] == [[0.0, 0.0], [1.0, 10.0]]
        assert res["broadcast"] == {"run_dir": "runs/0"}  # rank 0's value everywhere
        assert res["mean"].tolist() == [0.5, 2.0]


def test_running_stats_merge_equals_one_process_seeing_all_data(results) -> None:
    # one process folding every rank's batches of each iteration (order does not matter)
    reference = RunningMeanStd((2,))
    for iteration in range(2):
        for rank in range(2):
            for x in obs_batches(rank, iteration):
                reference.update(x)
        for res in results:  # every rank holds the same, pooled statistics
            mean, var, count = res["rms"][iteration]
            np.testing.assert_allclose(mean, reference.mean, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(var, reference.var, rtol=1e-10, atol=1e-12)
            assert count == pytest.approx(reference.count, rel=1e-12)
    # and that is the plain mean / population variance of all the data (+ the 1e-4 prior)
    data = np.concatenate([x for it in range(2) for r in range(2) for x in obs_batches(r, it)])
    np.testing.assert_allclose(reference.mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(reference.var, data.var(0), rtol=1e-4)
