"""Degenerate batches (issue 15, item 9): an empty batch and a mask that is all False.

Before: ``B=0`` raised ``RuntimeError: max(): Expected reduction dim`` from
``objectives/functional.py``; an all-False mask gave ``ESS=nan`` and ``max_ratio=-inf``
(and ``explained_variance=1``). Now: a ValueError naming the batch shape; and losses 0 with a
zero gradient, every diagnostic NaN (documented in ``ppokit.objectives.degenerate``).
"""

from __future__ import annotations

import math

import pytest
import torch
from loss_builders import critic, make_batch, normal_actor

from ppokit import ClipPPOLoss, PPOLoss
from ppokit.objectives import diagnostics as PD
from ppokit.objectives.objective import ppo_objective

DIAGNOSTICS = [
    "kl_approx",
    "ESS",
    "max_ratio",
    "mean_ratio",
    "clip_fraction",
    "entropy",
    "explained_variance",
    "value_clip_fraction",
]
LOSSES = ["loss_objective", "loss_entropy", "loss_critic"]


@pytest.mark.parametrize("batch", [(0,), (3, 0), (0, 4)])
@pytest.mark.parametrize("loss_cls", [ClipPPOLoss, PPOLoss])
def test_an_empty_batch_is_a_clear_error(loss_cls, batch):
    actor = normal_actor()
    full = make_batch(actor, tuple(n or 2 for n in batch))
    td = full[tuple(slice(0, n) for n in batch)]  # a real batch, cut to a 0 somewhere
    assert td.batch_size == batch
    with pytest.raises(
        ValueError,
        match=(
            rf"{loss_cls.__name__}'s input TensorDict has batch shape "
            rf"\({', '.join(map(str, batch))},?\), which holds no sample"
        ),
    ):
        loss_cls(actor, critic())(td)


def test_ppo_objective_rejects_an_empty_batch():
    empty = torch.zeros(0)
    with pytest.raises(ValueError, match=r"ppo_objective\(\)'s log_prob has batch shape \(0,\)"):
        ppo_objective(empty, empty, torch.zeros(0, 1), clip_epsilon=0.2)


def _masked(batch=(5,), valid=None):
    actor, value = normal_actor(), critic()
    td = make_batch(actor, batch)
    td["mask"] = torch.zeros(batch, dtype=torch.bool) if valid is None else torch.tensor(valid)
    return actor, value, td


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("functional", [True, False])
def test_an_all_false_mask_gives_zero_losses_zero_grads_nan_diagnostics(reduction, functional):
    actor, value, td = _masked()
    loss = ClipPPOLoss(actor, value, clip_value=0.5, reduction=reduction, functional=functional)
    loss.set_keys(mask="mask")
    out = loss(td)
    for key in LOSSES:
        expected = torch.zeros(5) if reduction == "none" else torch.tensor(0.0)
        torch.testing.assert_close(out[key].detach(), expected, rtol=0, atol=0)
    for key in DIAGNOSTICS:
        assert math.isnan(float(out[key])), (key, out[key])
    total = sum(out[key].sum() for key in LOSSES)
    total.backward()
    grads = [p.grad for p in loss.parameters() if p.grad is not None]
    assert grads, "the losses must stay attached to the graph"
    for g in grads:
        assert torch.equal(g, torch.zeros_like(g))


def test_one_valid_sample_equals_the_loss_on_that_sample_alone():
    # reference: the same loss on the unmasked one-sample sub-batch; the masked batch must
    # give the same numbers (masked samples count nowhere), so the all-False case is the
    # limit of a well-defined family, not a special path.
    actor, value, td = _masked(valid=[False, False, True, False, False])
    loss = ClipPPOLoss(actor, value)
    loss.set_keys(mask="mask")
    masked = loss(td)
    alone = ClipPPOLoss(actor, value)(td[2:3].exclude("mask"))
    for key in [*LOSSES, "kl_approx", "ESS", "max_ratio", "mean_ratio", "clip_fraction", "entropy"]:
        torch.testing.assert_close(masked[key], alone[key], msg=key)
    # explained_variance over one sample: 1 - 0 / (0 + eps) = 1 in both
    torch.testing.assert_close(masked["explained_variance"], alone["explained_variance"])


def test_ratio_diagnostics_without_valid_samples_are_nan_not_inf():
    log_weight = torch.tensor([[0.1], [-0.3]])
    stats = PD.ratio_diagnostics(log_weight, 0.2, torch.tensor([[False], [False]]))
    assert sorted(stats) == ["ESS", "clip_fraction", "kl_approx", "max_ratio", "mean_ratio"]
    assert all(math.isnan(float(v)) for v in stats.values()), stats
    # with one valid sample, r = exp(0.1): max = mean = 1.10517, ESS = 1, kl = -0.1, clip 0
    one = PD.ratio_diagnostics(log_weight, 0.2, torch.tensor([[True], [False]]))
    torch.testing.assert_close(one["max_ratio"], torch.tensor(1.1051709))
    torch.testing.assert_close(one["mean_ratio"], torch.tensor(1.1051709))
    torch.testing.assert_close(one["ESS"], torch.tensor(1.0))
    torch.testing.assert_close(one["kl_approx"], torch.tensor(-0.1))
    torch.testing.assert_close(one["clip_fraction"], torch.tensor(0.0))


def test_ppo_objective_all_false_mask_matches_the_documented_outputs():
    g = torch.Generator().manual_seed(1)
    log_prob = torch.randn(4, generator=g, requires_grad=True)
    value = torch.randn(4, 1, generator=g, requires_grad=True)
    out = ppo_objective(
        log_prob,
        torch.randn(4, generator=g),
        torch.randn(4, 1, generator=g),
        entropy=torch.rand(4, generator=g),
        value=value,
        value_target=torch.randn(4, 1, generator=g),
        old_value=torch.randn(4, 1, generator=g),
        clip_value=0.2,
        mask=torch.zeros(4, 1, dtype=torch.bool),
        clip_epsilon=0.2,
        normalize_advantage=True,
    )
    assert all(float(out[k].detach()) == 0.0 for k in LOSSES)
    assert all(math.isnan(float(out[k])) for k in DIAGNOSTICS)
    (out["loss_objective"] + out["loss_critic"]).backward()
    assert torch.equal(log_prob.grad, torch.zeros(4))
    assert torch.equal(value.grad, torch.zeros(4, 1))


def test_the_compiled_loss_gives_the_same_outputs_on_an_all_false_mask():
    from ppokit import compile_loss

    actor, value, td = _masked(batch=(6,), valid=[False, True, True, True, True, True])
    loss = ClipPPOLoss(actor, value)
    loss.set_keys(mask="mask")
    compiled = compile_loss(loss)
    compiled(td)  # eager first call, then the graph
    compiled(td)
    td["mask"] = torch.zeros(6, dtype=torch.bool)
    out, eager = compiled(td), loss(td)
    assert sorted(out.keys()) == sorted(eager.keys())
    for key in LOSSES:
        assert float(out[key].detach()) == 0.0 == float(eager[key].detach())
    for key in eager.keys():
        if not key.startswith("loss_"):
            assert math.isnan(float(out[key])) and math.isnan(float(eager[key])), key
