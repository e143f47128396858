"""MaskedBernoulli (MultiBinary actions with a per-flag mask): numbers by hand, actor, errors."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type
from torch.testing import assert_close

from ppokit.envs.spaces import SpaceLeaf
from ppokit.modules.distributions.masked_bernoulli import MaskedBernoulli
from ppokit.modules.heads import structured_actor

LN = math.log
T, F = True, False


def test_log_prob_entropy_and_mode_by_hand():
    # three flags: p(1) = 3/4 free, p(1) = 1/5 forced to 1, p(1) = 1/2 forced to 0
    logits = torch.tensor([LN(3.0), LN(1 / 4), 0.0])
    mask = torch.tensor([[T, T], [F, T], [T, F]])
    d = MaskedBernoulli(logits, mask=mask)
    # only the free flag counts: log p([1, 1, 0]) = log 3/4; [0, 1, 0]: log 1/4
    assert_close(d.log_prob(torch.tensor([1.0, 1.0, 0.0])), torch.tensor(LN(3 / 4)))
    assert_close(d.log_prob(torch.tensor([0.0, 1.0, 0.0])), torch.tensor(LN(1 / 4)))
    # a forbidden value anywhere: probability 0
    assert d.log_prob(torch.tensor([1.0, 0.0, 0.0])) == -math.inf
    assert d.log_prob(torch.tensor([1.0, 1.0, 1.0])) == -math.inf
    # entropy: the free flag's -(3/4 log 3/4 + 1/4 log 1/4) = 0.5623; forced flags add 0
    assert_close(d.entropy(), torch.tensor(-(0.75 * LN(0.75) + 0.25 * LN(0.25))))
    # mode: the free flag's most likely value (1), the forced values (1, 0)
    assert d.deterministic_sample.tolist() == [1.0, 1.0, 0.0]


def test_forced_flags_are_always_sampled_and_get_no_gradient():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, -3.0, 0.5]] * 4000, requires_grad=True)
    mask = torch.tensor([[T, T], [F, T], [T, F]]).expand(4000, 3, 2)
    d = MaskedBernoulli(logits, mask=mask)
    x = d.sample()
    assert (x[:, 1] == 1).all() and (x[:, 2] == 0).all()
    # the free flag is a Bernoulli(sigmoid(2) = 0.881): 4000 draws within 4 standard errors
    assert abs(x[:, 0].mean().item() - torch.sigmoid(torch.tensor(2.0)).item()) < 4 * 0.0052
    d.log_prob(x).sum().backward()
    assert logits.grad is not None
    assert (logits.grad[:, 1:] == 0).all() and (logits.grad[:, 0] != 0).any()
    assert torch.isfinite(logits.grad).all()


def test_bad_masks_are_refused_with_what_was_expected():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"mask must be a bool tensor .* got torch.int64"):
        MaskedBernoulli(logits, mask=torch.ones(2, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask of shape \[2, 6\] .* expected \[2, 3, 2\]"):
        MaskedBernoulli(logits, mask=torch.ones(2, 6, dtype=torch.bool))
    stuck = torch.ones(2, 3, 2, dtype=torch.bool)
    stuck[1, 2] = False
    with pytest.raises(ValueError, match=r"flag \(1, 2\) of \[2, 3\] allows neither 0 nor 1"):
        MaskedBernoulli(logits, mask=stuck)


def test_a_masked_multibinary_actor_acts_within_the_mask():
    torch.manual_seed(0)
    leaves = [SpaceLeaf(("x",), "vector", (3,))]
    heads = [SpaceLeaf((), "bernoulli", (3,))]
    actor = structured_actor(
        leaves, heads, leaf_keys=[("observation", "x")], mask_key=("observation", "mask")
    )
    n = 500
    # per flag (allow 0, allow 1), concatenated as the env gives it: flag 0 free, flag 1
    # forced to 1, flag 2 forced to 0
    mask = torch.tensor([T, T, F, T, T, F]).expand(n, 6)
    td = TensorDict({"observation": {"x": torch.randn(n, 3), "mask": mask}}, [n])
    with torch.no_grad():
        actor(td)
    action = td["action"]
    assert (action[:, 1] == 1).all() and (action[:, 2] == 0).all()
    assert set(action[:, 0].tolist()) == {0.0, 1.0}
    # the written log-prob is the free flag's alone
    logit0 = td["params", "action", "logits"][:, 0]
    expect = torch.where(
        action[:, 0] == 1,
        torch.nn.functional.logsigmoid(logit0),
        torch.nn.functional.logsigmoid(-logit0),
    )
    assert_close(td["action_log_prob"], expect)
    with set_interaction_type(InteractionType.DETERMINISTIC), torch.no_grad():
        det = actor(td.select("observation"))["action"]
    assert (det[:, 1] == 1).all() and (det[:, 2] == 0).all()


def test_one_mask_covers_a_dict_action_mixing_categorical_and_binary_leaves():
    torch.manual_seed(0)
    leaves = [SpaceLeaf(("x",), "vector", (3,))]
    heads = [SpaceLeaf(("fire",), "bernoulli", (2,)), SpaceLeaf(("pick",), "categorical", (), (3,))]
    actor = structured_actor(
        leaves, heads, leaf_keys=[("observation", "x")], mask_key=("observation", "mask")
    )
    n = 300
    # fire: flag 0 forced to 1, flag 1 free (4 flags); pick: choices 0 and 2 (3 flags)
    mask = torch.tensor([F, T, T, T, T, F, T]).expand(n, 7)
    td = TensorDict({"observation": {"x": torch.randn(n, 3), "mask": mask}}, [n])
    with torch.no_grad():
        actor(td)
    assert (td["action", "fire"][:, 0] == 1).all()
    assert set(td["action", "fire"][:, 1].tolist()) == {0.0, 1.0}
    assert set(td["action", "pick"].tolist()) == {0, 2}
    assert torch.isfinite(td["action", "fire_log_prob"]).all()
