"""2 ranks on halves of a fixed batch == 1 process on the whole batch (DDP, ClipPPOLoss).

With ``reduction="mean"`` the full-batch gradient is the mean of the two half-batch gradients,
which is what DDP's all-reduce (sum / world size) computes. With advantage normalisation the
halves must be standardised with the statistics of the WHOLE batch (global_standardize); the
loss's own per-batch normalisation on a half gives other gradients, checked here too so the
test would notice if the global statistics did nothing. The ranks' side is
``_workers.grad_worker``.
"""

from __future__ import annotations

import pytest
import torch
from _dist_helpers import BATCH, batch, build, grads
from _workers import KINDS, LOSS_KW, MASKED_SPLIT, batch_mask, masked_batch

from ppokit import ClipPPOLoss

pytestmark = pytest.mark.distributed


def _reference(kind: str, *, normalize: bool, rows: slice = slice(None)) -> list[torch.Tensor]:
    actor, critic = build(kind)
    loss = ClipPPOLoss(actor, critic, normalize_advantage=normalize, **LOSS_KW)
    return grads(loss, batch(kind)[rows])


def _assert_grads_equal(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def _differs(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return any(not torch.allclose(x, y, rtol=1e-4, atol=1e-5) for x, y in zip(a, b))


def test_networks_are_wrapped(gloo_results) -> None:
    assert all(r["grads"][f"{kind}/wrapped"] for r in gloo_results for kind in KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_on_halves_equal_one_process_on_the_batch(gloo_results, kind) -> None:
    want = _reference(kind, normalize=False)
    for result in gloo_results:  # DDP leaves the same averaged gradient on every rank
        _assert_grads_equal(result["grads"][f"{kind}/plain"], want)
    # the all-reduce matters: one half alone gives another gradient
    assert _differs(_reference(kind, normalize=False, rows=slice(0, BATCH // 2)), want)


@pytest.mark.parametrize("kind", KINDS)
def test_global_advantage_normalisation_matches_one_process(gloo_results, kind) -> None:
    want = _reference(kind, normalize=True)
    for result in gloo_results:
        _assert_grads_equal(result["grads"][f"{kind}/global_norm"], want)
    # standardising each half with its own statistics is NOT the same algorithm
    for result in gloo_results:
        assert _differs(result["grads"][f"{kind}/local_norm"], want)


# ---------------------------------------------------------------------------- masked mean
@pytest.mark.parametrize("kind", KINDS)
def test_masked_mean_over_uneven_ranks_equals_one_process(gloo_results, kind) -> None:
    # issue #15 item 12: rank 0 holds 2 valid samples, rank 1 holds 9. DDP averages the two
    # ranks' masked means with weight 1/2 each; global_mean_weight rescales them to 2 * n_r / 11
    actor, critic = build(kind)
    loss = ClipPPOLoss(actor, critic, normalize_advantage=False, **LOSS_KW)
    want = grads(loss, masked_batch(kind))  # one process, whole batch, masked mean
    n_valid = [int(batch_mask()[:MASKED_SPLIT].sum()), int(batch_mask()[MASKED_SPLIT:].sum())]
    assert n_valid == [2, 9]
    for rank, result in enumerate(gloo_results):
        assert result["masked"][f"{kind}/weight"] == pytest.approx(2 * n_valid[rank] / 11)
        _assert_grads_equal(result["masked"][f"{kind}/weighted"], want)
        # without the weight, DDP's plain average of per-rank means is another gradient
        assert _differs(result["masked"][f"{kind}/unweighted"], want)
