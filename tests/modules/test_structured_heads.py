"""Structured actors: masked and composite log-probs and entropies against hand computation."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import CompositeDistribution, InteractionType, set_interaction_type
from torch import nn
from torch.testing import assert_close

from ppokit.envs.spaces import SpaceLeaf
from ppokit.modules.distributions import MaskedCategorical
from ppokit.modules.distributions.bernoulli import IndependentBernoulli
from ppokit.modules.encoders import OneHotEncoder, build_encoder
from ppokit.modules.heads import structured_actor, structured_critic
from ppokit.objectives.composite import action_log_prob
from ppokit.objectives.ppo import ClipPPOLoss

LN = math.log
VEC3 = SpaceLeaf(("x",), "vector", (3,))  # a Box(-1, 1, (3,)) observation leaf


def test_masked_categorical_log_prob_and_entropy_by_hand():
    # logits log[1, 2, 3], action 1 masked: p = [1/4, 0, 3/4]
    d = MaskedCategorical(
        logits=torch.tensor([1.0, 2.0, 3.0]).log(), mask=torch.tensor([True, False, True])
    )
    assert_close(d.log_prob(torch.tensor(2)), torch.tensor(LN(0.75)))
    assert d.log_prob(torch.tensor(1)) == -math.inf
    # H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623; the masked action adds 0, not NaN
    assert_close(d.entropy(), torch.tensor(-(0.25 * LN(0.25) + 0.75 * LN(0.75))))


def test_bernoulli_log_prob_and_entropy_by_hand():
    # p(1) = sigmoid(0) = 1/2 and sigmoid(ln 3) = 3/4
    d = IndependentBernoulli(torch.tensor([[0.0, LN(3.0)]]))
    assert_close(d.log_prob(torch.tensor([[1.0, 0.0]])), torch.tensor([LN(0.5) + LN(0.25)]))
    h = LN(2.0) - (0.75 * LN(0.75) + 0.25 * LN(0.25))
    assert_close(d.entropy(), torch.tensor([h]))
    assert d.deterministic_sample.tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="NaN or Inf"):
        IndependentBernoulli(torch.tensor([math.nan]))


def test_composite_log_prob_is_the_sum_of_the_heads():
    params = TensorDict(
        {
            "action": {
                "0": {
                    "logits": torch.tensor([[1.0, 2.0, 3.0]]).log(),
                    "mask": torch.tensor([[True, False, True]]),
                },
                "1": {"logits": torch.tensor([[0.0, LN(3.0)]])},
            }
        },
        [1],
    )
    dist = CompositeDistribution(
        params,
        distribution_map={
            ("action", "0"): MaskedCategorical,
            ("action", "1"): IndependentBernoulli,
        },
    )
    data = TensorDict({"action": {"0": torch.tensor([0]), "1": torch.tensor([[0.0, 1.0]])}}, [1])
    lp = action_log_prob(
        dist, data, [("action", "0"), ("action", "1")], batch_shape=torch.Size([1])
    )
    # head 0: ln 1/4; head 1: ln 1/2 + ln 3/4
    assert_close(lp, torch.tensor([LN(0.25) + LN(0.5) + LN(0.75)]))


def masked_actor():
    # the leaves and heads of Dict(x=Box(3,), action_mask=MultiBinary(7)), MultiDiscrete([3, 4])
    heads = [SpaceLeaf(("0",), "categorical", (), (3,)), SpaceLeaf(("1",), "categorical", (), (4,))]
    actor = structured_actor(
        [VEC3],
        heads,
        leaf_keys=[("observation", "x")],
        mask_key=("observation", "action_mask"),
    )
    return actor


def test_masked_multidiscrete_actor_samples_and_scores_legal_actions_only():
    torch.manual_seed(0)
    actor = masked_actor()
    n = 2000
    mask = torch.zeros(n, 7, dtype=torch.bool)
    mask[:, 1] = True  # head 0 may only pick 1
    mask[: n // 2, 3 + 2] = True  # head 1: choice 2 in the first half,
    mask[n // 2 :, 3 + 0] = mask[n // 2 :, 3 + 3] = True  # 0 or 3 in the second
    td = TensorDict({"observation": {"x": torch.randn(n, 3), "action_mask": mask}}, [n])
    with torch.no_grad():
        actor(td)
    assert (td["action", "0"] == 1).all() and (td["action", "0_log_prob"] == 0).all()
    assert (td["action", "1"][: n // 2] == 2).all()
    assert set(td["action", "1"][n // 2 :].tolist()) == {0, 3}
    # the log-prob written is the head's renormalised one: p(0) + p(3) = 1 in the 2nd half
    lp1 = td["action", "1_log_prob"][n // 2 :]
    logits = td["params", "action", "1", "logits"][n // 2 :]
    sub = logits[:, [0, 3]].log_softmax(-1)
    expect = torch.where(td["action", "1"][n // 2 :] == 0, sub[:, 0], sub[:, 1])
    assert_close(lp1, expect)
    with set_interaction_type(InteractionType.DETERMINISTIC), torch.no_grad():
        det = actor(td.select("observation"))
    assert (det["action", "0"] == 1).all() and (det["action", "1"][: n // 2] == 2).all()


def test_loss_entropy_and_log_prob_on_a_masked_composite_actor():
    torch.manual_seed(1)
    actor = masked_actor()
    critic = structured_critic(
        [VEC3],
        leaf_keys=[("observation", "x")],
    )
    b = 8
    mask = torch.rand(b, 7) < 0.5
    mask[:, 0] = mask[:, 3] = True
    td = TensorDict({"observation": {"x": torch.randn(b, 3), "action_mask": mask}}, [b])
    with torch.no_grad():
        actor(td)
    td["advantage"] = torch.randn(b, 1)
    td["value_target"] = torch.randn(b, 1)
    loss = ClipPPOLoss(actor, critic, entropy_coeff={("action", "0"): 0.1, ("action", "1"): 0.0})
    out = loss(td.exclude("params"))
    # hand entropy: each head's softmax over its legal logits, summed
    h = torch.zeros(b)
    for head, (lo, hi) in (("0", (0, 3)), ("1", (3, 7))):
        logits = td["params", "action", head, "logits"]
        logp = logits.masked_fill(~mask[:, lo:hi], -math.inf).log_softmax(-1)
        h += -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)
    assert_close(out["entropy"], h.mean())
    assert torch.isfinite(out["loss_objective"]) and torch.isfinite(out["loss_entropy"])
    # per-head coefficient: only head 0's entropy enters the bonus
    logits0 = td["params", "action", "0", "logits"]
    lp0 = logits0.masked_fill(~mask[:, :3], -math.inf).log_softmax(-1)
    h0 = -(lp0.exp() * lp0.nan_to_num(neginf=0.0)).sum(-1)
    assert_close(out["loss_entropy"], -0.1 * h0.mean())


def test_mixed_dict_action_heads_and_bounds():
    leaves = [SpaceLeaf(("obs",), "vector", (2,))]
    # Dict(fire=MultiBinary(3), move=Box(-1, 1, (2, 2)), pick=Discrete(5))
    act = [
        SpaceLeaf(("fire",), "bernoulli", (3,)),
        SpaceLeaf(("move",), "normal", (2, 2), low=(-1.0,) * 4, high=(1.0,) * 4),
        SpaceLeaf(("pick",), "categorical", (), (5,)),
    ]
    actor = structured_actor(leaves, act, leaf_keys=[("observation", "obs")])
    td = actor(TensorDict({"observation": {"obs": torch.zeros(4, 2)}}, [4]))
    assert td["action", "fire"].shape == (4, 3) and td["action", "move"].shape == (4, 2, 2)
    assert td["action", "pick"].shape == (4,)
    for head in ("fire", "move", "pick"):
        assert td["action", f"{head}_log_prob"].shape == (4,)
    bounded = structured_actor(leaves, act, leaf_keys=[("observation", "obs")], bounded=True)
    out = bounded(TensorDict({"observation": {"obs": torch.zeros(4, 2)}}, [4]))
    assert out["action", "move"].abs().max() <= 1
    infinite = [SpaceLeaf((), "normal", (2,), low=(-math.inf,) * 2, high=(math.inf,) * 2)]
    with pytest.raises(ValueError, match="'<root>' is a Box with infinite bounds"):
        structured_actor(leaves, infinite, leaf_keys=[("observation", "obs")], bounded=True)
    with pytest.raises(
        ValueError,
        match=r"Discrete, MultiDiscrete and MultiBinary actions; action leaf .* is a Box",
    ):
        structured_actor(leaves, act, leaf_keys=[("observation", "obs")], mask_key="m")


def test_encoders_numbers_and_user_encoders():
    enc = OneHotEncoder((2, 3), multi=True)
    assert enc(torch.tensor([[[1, 0]], [[0, 2]]])).tolist() == [
        [[0.0, 1.0, 1.0, 0.0, 0.0]],
        [[1.0, 0.0, 0.0, 0.0, 1.0]],
    ]
    leaves = [SpaceLeaf(("pos",), "vector", (2, 2)), SpaceLeaf(("room",), "discrete", (), (3,))]
    mine = nn.Linear(4, 7)
    encoder = build_encoder(leaves, encoders={"pos": nn.Sequential(nn.Flatten(-2), mine)})
    assert encoder.out_features == 7 + 3
    x = torch.randn(5, 2, 2)
    out = encoder(x, torch.tensor([0, 1, 2, 0, 1]))
    assert_close(out[:, :7], mine(x.flatten(-2)))
    assert out[:, 7:].argmax(-1).tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match=r"\['posx'\], which are not observation leaves"):
        build_encoder(leaves, encoders={"posx": mine})
