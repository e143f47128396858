"""FusedPPOUpdate with parameters shared by the actor and the critic (a shared trunk), and
with a gradient average over ranks between its two graphs (--compile under torchrun)."""

from __future__ import annotations

import pytest
import torch
from fused_builders import make_batches, reference_step, setup_loss
from tensordict.nn import TensorDictModule
from torch import nn

from ppokit import (
    Categorical,
    ClipPPOLoss,
    FusedPPOUpdate,
    ProbabilisticActor,
    ValueOperator,
)
from ppokit.modules.cnn import SharedTrunk
from ppokit.objectives.step import eager_update
from ppokit.train.build import unique_params

OBS, ACT, N = 5, 3, 4


def _shared_setup(memo: bool):
    torch.manual_seed(0)
    trunk: nn.Module = nn.Sequential(nn.Linear(OBS, 16), nn.Tanh())
    if memo:  # the CNN builder's wrapper: one trunk pass for both heads
        trunk = SharedTrunk(trunk)
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(trunk, nn.Linear(16, N)), in_keys=["observation"], out_keys=["logits"]
        ),
        in_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    critic = ValueOperator(nn.Sequential(trunk, nn.Linear(16, 1)), in_keys=["observation"])
    loss = ClipPPOLoss(actor, critic, entropy_coef=0.01)
    opt = torch.optim.Adam(unique_params(actor, critic), lr=0.05, eps=1e-5)
    return loss, opt


@pytest.mark.parametrize("memo", [pytest.param(False, marks=pytest.mark.slow), True])
def test_a_shared_trunk_steps_as_the_eager_update(memo):
    # the trunk's parameters get the sum of both heads' gradients, stepped once
    loss_f, opt_f = _shared_setup(memo)
    loss_e, opt_e = _shared_setup(memo)
    assert len(opt_f.param_groups[0]["params"]) == 6  # trunk 2 + policy head 2 + value head 2
    update = FusedPPOUpdate(loss_f, opt_f, max_grad_norm=0.5, backend="aot_eager")
    for td in make_batches(loss_f, 4):
        out_f, norm_f, _ = update(td.clone())
        out_e, norm_e = reference_step(loss_e, opt_e, td.clone(), 0.5)
        for key in ("loss_objective", "loss_critic", "loss_entropy"):
            torch.testing.assert_close(out_f[key], out_e[key].detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(norm_f, norm_e, rtol=1e-4, atol=1e-5)
    assert (update.eager_calls, update.fused_calls) == (1, 3)
    for p_f, p_e in zip(
        opt_f.param_groups[0]["params"], opt_e.param_groups[0]["params"], strict=True
    ):
        torch.testing.assert_close(p_f, p_e, rtol=1e-4, atol=1e-5)
    fresh, _ = _shared_setup(memo)
    assert any(not torch.equal(p, q) for p, q in zip(loss_f.parameters(), fresh.parameters()))


def test_a_gradient_sync_runs_between_the_gradients_and_the_clip():
    # Under torchrun the update runs as two graphs with the ranks' gradient average between
    # them. A stand-in for the average that halves every gradient (the mean with a rank whose
    # gradients are zero) must act before the clip (0.05: every step is clipped) and Adam,
    # exactly as halving .grad between backward() and clip_grad_norm_ does eagerly.
    loss_f, opt_f = setup_loss("categorical")
    loss_e, opt_e = setup_loss("categorical")
    halved: list[int] = []

    def halve(grads: list[torch.Tensor]) -> None:
        halved.append(len(grads))
        for g in grads:
            g.mul_(0.5)

    def reference_halve(params: list[nn.Parameter]) -> None:
        for p in params:
            p.grad.mul_(0.5)

    # a KL average that says "far over the target" on request: the test of the synced verdict
    kl_over = [False]
    update = FusedPPOUpdate(
        loss_f,
        opt_f,
        max_grad_norm=0.05,
        backend="aot_eager",
        grad_sync=halve,
        kl_mean=lambda kl: kl + 1e6 if kl_over[0] else kl,
        eager_step=lambda *a, **k: eager_update(*a, grad_sync=reference_halve, **k),
    )
    params_e = [p for group in opt_e.param_groups for p in group["params"]]
    for td in make_batches(loss_f, 4):
        out_f, norm_f, applied = update(td.clone())
        out_e = loss_e(td.clone())
        opt_e.zero_grad(set_to_none=True)
        sum(v for k, v in out_e.items() if k.startswith("loss_")).backward()
        reference_halve(params_e)
        norm_e = torch.nn.utils.clip_grad_norm_(params_e, 0.05)
        opt_e.step()
        assert applied and float(norm_e) > 0.05
        torch.testing.assert_close(norm_f, norm_e, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(out_f["loss_objective"], out_e["loss_objective"].detach())
    assert (update.eager_calls, update.fused_calls) == (1, 3) and halved == [
        8,
        8,
        8,
    ]  # 2 weights + 2 biases per network
    for p_f, p_e in zip(opt_f.param_groups[0]["params"], params_e, strict=True):
        torch.testing.assert_close(p_f, p_e, rtol=1e-4, atol=1e-6)
    # the target-KL test reads the averaged KL: over the target, nothing moves
    kl_over[0] = True
    before = [p.detach().clone() for p in opt_f.param_groups[0]["params"]]
    assert not update(make_batches(loss_f, 1, seed=9)[0], target_kl=0.5).applied
    for p, q in zip(opt_f.param_groups[0]["params"], before, strict=True):
        assert torch.equal(p, q)
