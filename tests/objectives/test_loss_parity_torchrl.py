"""Numeric parity with TorchRL 0.14.1's ClipPPOLoss over a grid of options.

Both losses get the very same modules (TorchRL's own), data and random seed; every output
entry and every parameter gradient must agree. Where TorchRL's behaviour is a bug that ppokit
fixes on purpose, the test says so and compares the rest:

* single-call shared trunk (the spec's second option): TorchRL scores the action the model
  re-samples inside the actor instead of the stored one, reads V_old after the model has
  overwritten it, and with ``separate_losses`` detaches the value head from its own loss.
  The grid runs that layout under deterministic interaction (so the re-sampled action is the
  stored one), without ``clip_value``, on discrete actors (a continuous re-sampled action
  carries a gradient and TorchRL raises), and skips value-head gradients with
  ``separate_losses``.
* two-call shared trunk with ``separate_losses`` and ``functional=False``: TorchRL lets the
  critic loss reach the trunk; ppokit does not, so trunk gradients are not compared there.
* ``ESS`` and ``explained_variance``: TorchRL reduces over the first batch dim only; they are
  compared on 1-D batches, where both are over the whole batch.
"""

from __future__ import annotations

import random

import pytest
import torch
from loss_builders import total_loss
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    NormalParamExtractor,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    set_interaction_type,
)
from torch import nn
from torch.testing import assert_close

from ppokit import ClipPPOLoss

torchrl_modules = pytest.importorskip("torchrl.modules")
torchrl_objectives = pytest.importorskip("torchrl.objectives")

OBS, HID, N_ACT, ACT_DIM = 5, 8, 3, 2
ACTORS = ("discrete", "normal", "tanh")
LAYOUTS = ("separate", "shared_two_calls", "shared_one_call")


def _head(kind: str, in_key: str, in_dim: int):
    trl = torchrl_modules
    if kind == "discrete":
        net = TensorDictModule(nn.Linear(in_dim, N_ACT), [in_key], ["logits"])
        return trl.ProbabilisticActor(
            net,
            in_keys=["logits"],
            distribution_class=torch.distributions.Categorical,
            return_log_prob=True,
        )
    net = TensorDictModule(
        nn.Sequential(nn.Linear(in_dim, 2 * ACT_DIM), NormalParamExtractor()),
        [in_key],
        ["loc", "scale"],
    )
    dist = trl.IndependentNormal if kind == "normal" else trl.TanhNormal
    return trl.ProbabilisticActor(
        net, in_keys=["loc", "scale"], distribution_class=dist, return_log_prob=True
    )


def build(kind: str, layout: str):
    """Returns (loss actor, loss critic, acting policy, value operator for GAE)."""
    trl = torchrl_modules
    if layout == "separate":
        actor = _head(kind, "observation", OBS)
        critic = trl.ValueOperator(
            nn.Sequential(nn.Linear(OBS, HID), nn.Tanh(), nn.Linear(HID, 1)),
            in_keys=["observation"],
        )
        return actor, critic, actor, critic
    common = TensorDictModule(
        nn.Sequential(nn.Linear(OBS, HID), nn.Tanh()), ["observation"], ["hidden"]
    )
    model = trl.ActorValueOperator(
        common, _head(kind, "hidden", HID), trl.ValueOperator(nn.Linear(HID, 1), in_keys=["hidden"])
    )
    policy, value = model.get_policy_operator(), model.get_value_operator()
    if layout == "shared_two_calls":
        return policy, value, policy, value
    return (
        ProbabilisticTensorDictSequential(model, model.get_policy_head()),
        model.get_value_head(),
        policy,
        value,
    )


def make_data(policy, value, *, computed: bool, deterministic: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    batch = (3, 5) if computed else (12,)
    obs = torch.randn(*batch, OBS, generator=g)
    td = TensorDict({"observation": obs}, batch)
    if computed:
        done = torch.rand(*batch, 1, generator=g) < 0.25
        td["next"] = TensorDict(
            {
                "observation": torch.randn(*batch, OBS, generator=g),
                "reward": torch.randn(*batch, 1, generator=g),
                "done": done,
                "terminated": done & (torch.rand(*batch, 1, generator=g) < 0.5),
            },
            batch,
        )
    interaction = InteractionType.DETERMINISTIC if deterministic else InteractionType.RANDOM
    with torch.no_grad(), set_interaction_type(interaction):
        policy(td)
        value(td)
        if computed:  # TorchRL's GAE stacks td and td["next"]: give both the same keys
            policy(td["next"])
            value(td["next"])
        for p in policy.parameters():  # move the policy so ratios leave [1 - eps, 1 + eps]
            p.add_(0.4 * torch.randn(p.shape, generator=g))
        for p in value.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
        if deterministic:  # the action TorchRL will score: the mode under the moved policy
            td["action"] = policy(td.select("observation"))["action"]
    if not computed:
        td["advantage"] = torch.randn(*batch, 1, generator=g)
        td["value_target"] = torch.randn(*batch, 1, generator=g)
    for key in ("loc", "scale", "logits", "hidden"):
        td.pop(key, None)
    return td


def option_grid(n: int = 24, seed: int = 0) -> list[dict]:
    choices = {
        "clip_epsilon": [0.1, 0.2, 0.3],
        "entropy_bonus": [True, False],
        "samples_mc_entropy": [1, 4],
        "entropy_coef": [0.0, 0.01, 0.3],
        "critic_coef": [0.5, 1.0, 2.0],
        "loss_critic_type": ["l1", "l2", "smooth_l1"],
        "normalize_advantage": [False, True],
        "separate_losses": [False, True],
        "functional": [True, False],
        "reduction": ["mean", "sum", "none"],
        "clip_value": [False, True, 0.3],
    }
    rng = random.Random(seed)
    grid = []
    # first, each value of each option at least once on top of the defaults
    for name, values in choices.items():
        for v in values:
            grid.append({name: v})
    while len(grid) < n + sum(len(v) for v in choices.values()):
        grid.append({name: rng.choice(values) for name, values in choices.items()})
    return grid


OPTIONS = option_grid()
CASES = [
    (kind, layout, computed, i)
    for kind in ACTORS
    for layout in LAYOUTS
    for computed in (False, True)
    if not (layout == "shared_one_call" and computed)  # the value head needs the trunk's output
    # TorchRL scores the re-sampled action, which for a continuous actor carries a gradient
    # and makes it raise: the single-call layout is compared on discrete actors only
    if not (layout == "shared_one_call" and kind != "discrete")
    for i in range(len(OPTIONS))
]


def _torchrl_kwargs(opts: dict) -> dict:
    out = dict(opts)
    if "entropy_coef" in out:
        out["entropy_coeff"] = out.pop("entropy_coef")
    if "critic_coef" in out:
        out["critic_coeff"] = out.pop("critic_coef")
    return out


@pytest.mark.parametrize("kind, layout, computed, i", CASES)
def test_parity_with_torchrl(kind, layout, computed, i):
    torch.manual_seed(1000 + i)
    opts = dict(OPTIONS[i])
    one_call = layout == "shared_one_call"
    if one_call:
        opts["clip_value"] = False  # TorchRL reads V_old after the model overwrote it
    actor, critic, policy, value = build(kind, layout)
    td = make_data(policy, value, computed=computed, deterministic=one_call, seed=i)

    ours = ClipPPOLoss(actor, critic, **opts)
    theirs = torchrl_objectives.ClipPPOLoss(actor, critic, **_torchrl_kwargs(opts))
    if computed:
        theirs.make_value_estimator(torchrl_objectives.ValueEstimators.GAE, gamma=0.99, lmbda=0.95)

    interaction = InteractionType.DETERMINISTIC if one_call else InteractionType.RANDOM
    with set_interaction_type(interaction):
        torch.manual_seed(7)
        out_ours = ours(td)
        torch.manual_seed(7)
        out_theirs = theirs(td)

    compared = 0
    for key, expected in out_theirs.items():
        if key in ("ESS", "explained_variance") and td.ndim > 1:
            continue
        assert key in out_ours.keys(), f"missing output {key}"
        got = out_ours[key]
        assert_close(
            got.reshape(expected.shape) if got.numel() == expected.numel() else got,
            expected,
            rtol=1e-5,
            atol=1e-6,
            msg=f"output {key}",
        )
        compared += 1
    assert compared >= 6

    params = list({id(p): p for p in list(actor.parameters()) + list(critic.parameters())}.values())
    skip: set[int] = set()
    if one_call and opts.get("separate_losses"):
        skip |= {id(p) for p in critic.parameters()}  # TorchRL freezes the value head
    if (
        layout == "shared_two_calls"
        and opts.get("separate_losses")
        and not opts.get("functional", True)
    ):
        skip |= {id(p) for p in policy.module[0].parameters()}  # TorchRL trains the trunk
    g_ours = torch.autograd.grad(total_loss(out_ours), params, allow_unused=True)
    g_theirs = torch.autograd.grad(total_loss(out_theirs), params, allow_unused=True)
    for p, a, b in zip(params, g_ours, g_theirs):
        if id(p) in skip:
            continue
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"gradient of a {tuple(p.shape)} param")
