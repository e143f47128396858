"""The spec's shared-trunk example, written as in the spec, with ppokit's own modules."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, ProbabilisticTensorDictSequential, TensorDictModule
from torch import nn
from torch.testing import assert_close

from ppokit import (
    ActorCriticOperator,
    Categorical,
    ClipPPOLoss,
    IndependentNormal,
    PPOLoss,
    ProbabilisticActor,
    TanhNormal,
    ValueOperator,
)

OBS, HID = 4, 16


def _model(dist: str):
    common = TensorDictModule(
        nn.Sequential(nn.Linear(OBS, HID), nn.Tanh()), in_keys=["observation"], out_keys=["hidden"]
    )
    if dist == "categorical":
        actor_head = ProbabilisticActor(
            nn.Linear(HID, 3),
            in_keys=["hidden"],
            out_keys=["logits"],
            distribution_class=Categorical,
            return_log_prob=True,
        )
    else:
        cls = IndependentNormal if dist == "normal" else TanhNormal
        actor_head = ProbabilisticActor(
            nn.Sequential(nn.Linear(HID, 4), NormalParamExtractor()),
            in_keys=["hidden"],
            out_keys=["loc", "scale"],
            distribution_class=cls,
            return_log_prob=True,
        )
    value_head = ValueOperator(nn.Linear(HID, 1), in_keys=["hidden"])
    return common, actor_head, value_head, ActorCriticOperator(common, actor_head, value_head)


def _data(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    td = TensorDict({"observation": torch.randn(10, OBS, generator=g)}, [10])
    with torch.no_grad():
        model.get_policy_operator()(td)
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    td["advantage"] = torch.randn(10, 1, generator=g)
    td["value_target"] = torch.randn(10, 1, generator=g)
    return td.select("observation", "action", "action_log_prob", "advantage", "value_target")


@pytest.mark.parametrize("dist", ["categorical", "normal"])
@pytest.mark.parametrize("separate_losses", [False, True])
@pytest.mark.parametrize("loss_cls", [PPOLoss, ClipPPOLoss])
def test_both_options_of_the_spec_agree(dist, separate_losses, loss_cls):
    common, actor_head, value_head, model = _model(dist)
    td = _data(model)
    # first option, with 2 calls on the common module
    loss_1 = loss_cls(
        model.get_policy_operator(), model.get_value_operator(), separate_losses=separate_losses
    )
    # second option, with a single call to the common module
    loss_2 = loss_cls(
        ProbabilisticTensorDictSequential(model, actor_head),
        value_head,
        separate_losses=separate_losses,
    )
    out_1 = loss_1(td)
    params = list(model.parameters())
    grads_1 = torch.autograd.grad(sum(v for k, v in out_1.items() if k.startswith("loss_")), params)
    for seed in range(2):  # the model's own sampling inside option 2 must not matter
        torch.manual_seed(seed)
        out_2 = loss_2(td)
        for key in ("loss_objective", "loss_critic", "loss_entropy", "kl_approx", "entropy"):
            assert_close(out_2[key], out_1[key], msg=key)
        grads_2 = torch.autograd.grad(
            sum(v for k, v in out_2.items() if k.startswith("loss_")), params
        )
        for a, b in zip(grads_1, grads_2):
            assert_close(a, b)
    # with separate_losses the critic loss leaves the trunk alone, and trains the head
    for loss in (loss_1, loss_2):
        out = loss(td)
        trunk = torch.autograd.grad(
            out["loss_critic"], list(common.parameters()), allow_unused=True, retain_graph=True
        )
        reached = sum(0.0 if g is None else float(g.abs().sum()) for g in trunk)
        assert (reached == 0.0) if separate_losses else (reached > 0.0)
        head = torch.autograd.grad(out["loss_critic"], list(value_head.parameters()))
        assert sum(float(g.abs().sum()) for g in head) > 0


def test_tanh_normal_shared_trunk_trains_with_mc_entropy():
    _, actor_head, value_head, model = _model("tanh")
    td = _data(model)
    loss = ClipPPOLoss(
        ProbabilisticTensorDictSequential(model, actor_head),
        value_head,
        samples_mc_entropy=8,
        entropy_coef=0.1,
    )
    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        out = loss(td)
        total = sum(v for k, v in out.items() if k.startswith("loss_"))
        first = float(total) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert torch.isfinite(total)
    assert float(total) < first
