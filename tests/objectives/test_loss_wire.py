"""The TorchRL surface wired into ppokit's loss classes, against TorchRL 0.14.1's numbers.

KLPENPPOLoss (closed-form and sampled KL, beta's update, the gradient of the returned loss),
composite (multi-head) policies with scalar and per-head entropy coefficients, keyword
calls, ``loss_critic(td)`` and value estimators built through the loss (V-trace).
Both libraries get the very same modules and data (the parity grid's builders).
"""

from __future__ import annotations

import functools

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    CompositeDistribution,
    InteractionType,
    NormalParamExtractor,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    set_interaction_type,
)
from test_loss_parity_torchrl import build
from torch import distributions as D
from torch import nn
from torch.testing import assert_close

from ppokit import ClipPPOLoss, KLPENPPOLoss, PPOLoss
from ppokit.objectives.protocol import keyword_name

torchrl_objectives = pytest.importorskip("torchrl.objectives")
OBS = 5


def _data(kind: str, *, seed: int = 3, batch: int = 12, move: float = 0.3):
    """Rollout of the parity grid's actor with its distribution parameters kept (pi_old)."""
    torch.manual_seed(11)
    actor, value, policy, value_op = build(kind, "separate")
    g = torch.Generator().manual_seed(seed)
    td = TensorDict({"observation": torch.randn(batch, OBS, generator=g)}, [batch])
    with torch.no_grad():
        policy(td)
        value_op(td)
        for p in policy.parameters():  # the policy moves away from pi_old
            p.add_(move * torch.randn(p.shape, generator=g))
    td["advantage"] = torch.randn(batch, 1, generator=g)
    td["value_target"] = torch.randn(batch, 1, generator=g)
    return actor, value, td


def _run(loss, td, seed: int = 5):
    torch.manual_seed(seed)
    out = loss(td)
    total = sum(v.sum() for k, v in out.items() if k.startswith("loss_"))
    params = [p for p in loss.parameters() if p.requires_grad]
    grads = torch.autograd.grad(total, params, allow_unused=True)
    return out, grads


KLPEN_CASES = [
    ("discrete", {}),  # closed-form KL (Categorical pair)
    ("normal", {"beta": 0.5, "dtarg": 1e-4}),  # closed form, beta grows
    ("tanh", {"samples_mc_kl": 4}),  # no closed form: sampled KL, seeded draws
    ("discrete", {"reduction": "none", "critic_coeff": 0.5, "loss_critic_type": "l2"}),
    ("normal", {"dtarg": 10.0, "decrement": 0.25, "entropy_bonus": False}),  # beta shrinks
    ("tanh", {"samples_mc_entropy": 3, "samples_mc_kl": 2, "clip_value": 0.3}),
]


@pytest.mark.parametrize("kind, opts", KLPEN_CASES)
def test_klpen_matches_torchrl(kind, opts):
    actor, value, td = _data(kind)
    ours = KLPENPPOLoss(actor, value, **opts)
    theirs = torchrl_objectives.KLPENPPOLoss(actor, value, **opts)
    a, grads_a = _run(ours, td)
    b, _ = _run(theirs, td)
    for key in (
        "loss_objective",
        "loss_entropy",
        "loss_critic",
        "entropy",
        "kl",
        "kl_approx",
        "value_clip_fraction",
    ):
        if key in b.keys():
            assert_close(a[key].reshape(b[key].shape), b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert_close(ours.beta, theirs.beta)  # the adaptive rule, applied once
    assert any(g is not None and g.abs().sum() > 0 for g in grads_a)


def test_klpen_gradient_is_that_of_the_returned_loss():
    # TorchRL rescales beta in place after using it, so its backward uses the NEW beta.
    # ppokit's gradient must be the gradient of the loss value it returned: the same as a
    # loss whose beta never changes (increment = decrement = 1) at the old beta.
    actor, _, td = _data("normal", move=0.5)
    adaptive = KLPENPPOLoss(actor, None, beta=1.0, dtarg=1e-6, increment=2.0)
    fixed = KLPENPPOLoss(actor, None, beta=1.0, dtarg=1e-6, increment=1.0)
    a, grads_a = _run(adaptive, td)
    b, grads_b = _run(fixed, td)
    assert float(adaptive.beta) == 2.0 and float(fixed.beta) == 1.0  # beta did change
    assert_close(a["loss_objective"], b["loss_objective"])
    for ga, gb in zip(grads_a, grads_b):
        assert_close(ga, gb)


def test_klpen_beta_is_state_and_options_are_checked():
    actor, value, _ = _data("discrete")
    loss = KLPENPPOLoss(actor, value, beta=0.3)
    assert float(loss.state_dict()["beta"]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"increment must be >= 1"):
        KLPENPPOLoss(actor, value, increment=0.5)
    with pytest.raises(ValueError, match=r"decrement must be in \(0, 1\]"):
        KLPENPPOLoss(actor, value, decrement=1.5)
    assert loss.out_keys[:2] == ["loss_objective", "kl"]
    assert "logits" in loss.in_keys  # the stored parameters pi_old is rebuilt from


def test_klpen_without_stored_parameters_says_what_is_missing():
    actor, value, td = _data("discrete")
    del td["logits"]
    with pytest.raises(KeyError, match="distribution parameters"):
        KLPENPPOLoss(actor, value)(td)


# ----------------------------------------------------------------- composite policies
def _composite(seed: int = 0):
    torch.manual_seed(seed)
    net = TensorDictModule(
        nn.Sequential(nn.Linear(OBS, 4 + 3), NormalParamExtractor()),
        ["observation"],
        ["raw_loc", "raw_scale"],
    )

    def split(td):
        td["params", "move", "loc"] = td["raw_loc"][..., :2]
        td["params", "move", "scale"] = td["raw_scale"][..., :2]
        td["params", "grip", "logits"] = torch.cat(
            [td["raw_loc"][..., 2:], td["raw_scale"][..., 2:]], -1
        )
        return td

    dist = functools.partial(
        CompositeDistribution,
        distribution_map={"move": D.Normal, "grip": D.Categorical},
        name_map={"move": ("agent", "move"), "grip": ("agent", "grip")},
    )
    actor = ProbabilisticTensorDictSequential(
        net,
        split,
        ProbabilisticTensorDictModule(
            ["params"],
            [("agent", "move"), ("agent", "grip")],
            distribution_class=dist,
            return_log_prob=True,
            default_interaction_type=InteractionType.RANDOM,
        ),
    )
    critic = TensorDictModule(nn.Linear(OBS, 1), ["observation"], ["state_value"])
    g = torch.Generator().manual_seed(seed + 1)
    td = TensorDict({"observation": torch.randn(10, OBS, generator=g)}, [10])
    with torch.no_grad(), set_interaction_type(InteractionType.RANDOM):
        actor(td)
        for p in actor.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    td["advantage"] = torch.randn(10, 1, generator=g)
    td["value_target"] = torch.randn(10, 1, generator=g)
    keys = {
        "action": [("agent", "move"), ("agent", "grip")],
        "sample_log_prob": [("agent", "move_log_prob"), ("agent", "grip_log_prob")],
    }
    return actor, critic, td, keys


@pytest.mark.parametrize("cls", ["PPOLoss", "ClipPPOLoss", "KLPENPPOLoss"])
def test_composite_policy_matches_torchrl(cls):
    actor, critic, td, keys = _composite()
    ours = {"PPOLoss": PPOLoss, "ClipPPOLoss": ClipPPOLoss, "KLPENPPOLoss": KLPENPPOLoss}[cls](
        actor, critic, entropy_coeff=0.05
    ).set_keys(**keys)
    theirs = getattr(torchrl_objectives, cls)(actor, critic, entropy_coeff=0.05)
    theirs.set_keys(**keys)
    a, grads_a = _run(ours, td)
    b, _ = _run(theirs, td)
    for key in ("loss_objective", "loss_entropy", "loss_critic", "entropy"):
        assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    per_head = a["composite_entropy"]
    assert_close(
        per_head["agent", "move_entropy"].reshape(-1, 2).sum(-1).mean()
        + per_head["agent", "grip_entropy"].mean(),
        a["entropy"],
    )
    assert all(g is not None for g in grads_a[:2])  # the shared net is trained


def test_per_head_entropy_coefficients():
    # heads with one entropy value per sample, where TorchRL and ppokit agree (ppokit sums
    # each head's event dims before weighting; TorchRL broadcasts them, see composite.py)
    actor, critic, td, keys = _composite()
    coeff = {("agent", "move_log_prob"): 0.0, ("agent", "grip_entropy"): 0.2}
    loss = ClipPPOLoss(actor, critic, entropy_coeff=coeff).set_keys(**keys)
    out = loss(td)
    grip = out["composite_entropy"]["agent", "grip_entropy"]
    assert_close(out["loss_entropy"], -0.2 * grip.mean())
    with pytest.raises(KeyError, match="not a head of the composite"):
        ClipPPOLoss(actor, critic, entropy_coeff={"wheel": 0.1})


def test_set_keys_lists_are_checked():
    actor, critic, _, _ = _composite()
    loss = ClipPPOLoss(actor, critic)
    assert loss.tensor_keys.action == [("agent", "move"), ("agent", "grip")]  # adopted
    loss.set_keys(sample_log_prob=[("agent", "x_log_prob")])  # a one-key list is that key
    assert loss.tensor_keys.sample_log_prob == ("agent", "x_log_prob")
    with pytest.raises(TypeError, match="non-empty list of keys"):
        loss.set_keys(action=[])
    with pytest.raises(TypeError, match="expects a key"):
        loss.set_keys(advantage=["a", "b"])


# ----------------------------------------------------------------- protocol and critic
def test_keyword_call_equals_tensordict_call():
    actor, value, td = _data("discrete")
    td["next"] = TensorDict(
        {
            "observation": torch.randn(12, OBS),
            "reward": torch.randn(12, 1),
            "done": torch.zeros(12, 1, dtype=torch.bool),
            "terminated": torch.zeros(12, 1, dtype=torch.bool),
        },
        [12],
    )
    loss = ClipPPOLoss(actor, value)
    kwargs = {keyword_name(k): td.get(k) for k in loss.in_keys}
    kwargs.update(advantage=td["advantage"], value_target=td["value_target"])
    loss.select_out_keys("loss_objective", "loss_critic")
    objective, critic_loss = loss(**kwargs)
    out = loss(td)
    assert set(out.keys()) == {"loss_objective", "loss_critic"}
    assert_close(objective, out["loss_objective"])
    assert_close(critic_loss, out["loss_critic"])


def test_loss_critic_matches_torchrl():
    actor, value, td = _data("normal")
    for opts in ({}, {"clip_value": 0.1, "loss_critic_type": "l2", "critic_coeff": 0.5}):
        ours = ClipPPOLoss(actor, value, **opts).loss_critic(td)
        theirs = torchrl_objectives.ClipPPOLoss(actor, value, **opts).loss_critic(td)
        for x, y in zip(ours, theirs):
            assert (x is None) == (y is None)
            if x is not None:
                assert_close(x.reshape(y.shape), y, rtol=1e-5, atol=1e-6)  # [1] vs []


def test_reset_parameters_recursive_changes_the_networks():
    actor, value, _ = _data("discrete")
    loss = ClipPPOLoss(actor, value)
    before = [p.clone() for p in loss.parameters()]
    loss.reset_parameters_recursive()
    assert all(not torch.equal(b, p) for b, p in zip(before, loss.parameters()))


def test_vtrace_through_the_loss_scores_with_the_actor():
    torch.manual_seed(0)
    actor, value, policy, _ = build("discrete", "separate")
    td = TensorDict({"observation": torch.randn(2, 6, OBS)}, [2, 6])
    with torch.no_grad():
        policy(td)
    td["next"] = TensorDict(
        {
            "observation": torch.randn(2, 6, OBS),
            "reward": torch.randn(2, 6, 1),
            "done": torch.zeros(2, 6, 1, dtype=torch.bool),
            "terminated": torch.zeros(2, 6, 1, dtype=torch.bool),
        },
        [2, 6],
    )
    loss = ClipPPOLoss(actor, value).make_value_estimator("vtrace", gamma=0.9)
    assert loss.value_type.__name__ == "VTrace"
    out = loss(td)
    assert torch.isfinite(out["loss_objective"])


# ----------------------------------------------------------------- max_importance_ratio
@pytest.mark.parametrize(
    "cls, opts",
    [
        ("ClipPPOLoss", {"max_importance_ratio": 1.2}),
        ("ClipPPOLoss", {"max_importance_ratio": 1.1, "clip_epsilon": (0.1, 0.3)}),
        ("PPOLoss", {"max_importance_ratio": 1.5, "reduction": "none"}),
        ("KLPENPPOLoss", {"max_importance_ratio": 1.3}),
    ],
)
def test_max_importance_ratio_matches_torchrl(cls, opts):
    actor, value, td = _data("normal", move=0.6)  # ratios well beyond the caps
    ours = {"PPOLoss": PPOLoss, "ClipPPOLoss": ClipPPOLoss, "KLPENPPOLoss": KLPENPPOLoss}[cls](
        actor, value, **opts
    )
    theirs = getattr(torchrl_objectives, cls)(actor, value, **opts)
    a, grads_a = _run(ours, td)
    b, _ = _run(theirs, td)
    torch.manual_seed(5)
    out = theirs(td)  # gradients of TorchRL's own loss, for the actor's parameters
    total = sum(v.sum() for k, v in out.items() if k.startswith("loss_"))
    grads_b = torch.autograd.grad(total, list(theirs.actor_network_params.values(True, True)))
    for key in ("loss_objective", "clip_fraction", "ESS", "max_ratio", "mean_ratio", "kl_approx"):
        if key in b.keys():
            assert_close(a[key].reshape(b[key].shape), b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert float(a["max_ratio"]) <= opts["max_importance_ratio"] + 1e-5
    if cls != "KLPENPPOLoss":  # TorchRL's in-place beta update changes its KLPEN gradient
        for ga, gb in zip(grads_a, grads_b):
            assert_close(ga, gb, rtol=1e-5, atol=1e-6)
    ours.max_importance_ratio = 100.0  # schedulable, as in TorchRL
    assert float(ours.state_dict()["max_importance_ratio"]) == 100.0
    with pytest.raises(ValueError, match="max_importance_ratio must be a finite number > 0"):
        ClipPPOLoss(actor, value, max_importance_ratio=0.0)
