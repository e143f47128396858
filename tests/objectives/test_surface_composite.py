"""ppokit.objectives.composite against TorchRL 0.14.1's ClipPPOLoss on composite actors.

The composite actor has a nested Gaussian head ``("agents", "action")`` and a categorical
head ``"disc"``; TorchRL's loss runs on it, and the same quantities are rebuilt from the
building blocks (log-prob of the stored actions, stored log-probs, clipped surrogate by
hand, entropy terms, entropy loss) and compared number for number.
"""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    CompositeDistribution,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import distributions as D
from torch import nn
from torch.testing import assert_close

from ppokit.objectives.composite import (
    action_log_prob,
    entropy_key,
    log_prob_key,
    policy_keys,
    stored_log_prob,
)
from ppokit.objectives.entropy import (
    EntropyTerms,
    composite_entropy_td,
    entropy_loss,
    entropy_terms,
    has_closed_form_entropy,
    resolve_entropy_coeff,
    sample_and_score,
)

torchrl_modules = pytest.importorskip("torchrl.modules")
torchrl_objectives = pytest.importorskip("torchrl.objectives")

B, OBS, ACT, N_DISC = 6, 3, 2, 4
AGENT = ("agents", "action")
HEADS = [AGENT, "disc"]
LOG_PROBS = [("agents", "action_log_prob"), "disc_log_prob"]
BATCH = torch.Size([B])


class _NoEntropyCategorical(D.Categorical):
    """A head with neither a closed-form entropy nor rsample (TorchRL's fallback branch)."""

    entropy = D.Distribution.entropy

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode


class _Params(nn.Module):
    def __init__(self, act: int) -> None:
        super().__init__()
        self.act = act
        self.lin = nn.Linear(OBS, 2 * max(act, 1) + N_DISC)

    def forward(self, obs: torch.Tensor):
        out = self.lin(obs)
        k = max(self.act, 1)
        loc, scale, logits = out[..., :k], out[..., k : 2 * k].exp(), out[..., 2 * k :]
        if self.act == 0:  # a scalar action per sample: entropy [B], no event dim
            loc, scale = loc.squeeze(-1), scale.squeeze(-1)
        return loc, scale, logits


def composite_actor(act: int = ACT, cont=D.Normal, disc=D.Categorical):
    net = TensorDictModule(
        _Params(act),
        ["observation"],
        [("params", *AGENT, "loc"), ("params", *AGENT, "scale"), ("params", "disc", "logits")],
    )
    prob = ProbabilisticTensorDictModule(
        in_keys=["params"],
        out_keys=HEADS,
        distribution_class=CompositeDistribution,
        distribution_kwargs={"distribution_map": {AGENT: cont, "disc": disc}},
        return_log_prob=True,
    )
    return ProbabilisticTensorDictSequential(net, prob)


def rollout(actor) -> TensorDict:
    td = TensorDict({"observation": torch.randn(B, OBS)}, [B])
    with torch.no_grad():
        actor(td)
        for p in actor.parameters():  # the policy moves after collection: ratios != 1
            p.add_(0.3 * torch.randn_like(p))
    td["advantage"] = torch.randn(B, 1)
    td["value_target"] = torch.randn(B, 1)
    return td


def torchrl_loss(actor, **kwargs):
    critic = torchrl_modules.ValueOperator(nn.Linear(OBS, 1), in_keys=["observation"])
    return torchrl_objectives.ClipPPOLoss(actor, critic, **kwargs)


def test_objective_and_kl_match_torchrl_on_nested_composite():
    actor = composite_actor()
    td = rollout(actor)
    ref = torchrl_loss(actor)(td.clone())
    dist = actor.get_dist(td)
    log_prob = action_log_prob(dist, td, HEADS, batch_shape=BATCH)
    old = stored_log_prob(td, LOG_PROBS, batch_shape=BATCH)
    assert log_prob.shape == old.shape == BATCH
    log_weight = (log_prob - old).unsqueeze(-1)
    adv = td["advantage"]
    clamped = log_weight.clamp(math.log1p(-0.2), math.log1p(0.2))
    gain = torch.minimum(log_weight.exp() * adv, clamped.exp() * adv)
    assert_close(-gain.mean(), ref["loss_objective"])
    assert_close((old - log_prob).mean(), ref["kl_approx"])
    assert_close((clamped != log_weight).float().mean(), ref["clip_fraction"])


def test_log_prob_by_hand():
    actor = composite_actor()
    td = rollout(actor)
    dist = actor.get_dist(td)
    p = td["params"]
    normal = D.Normal(p[(*AGENT, "loc")], p[(*AGENT, "scale")])
    cat = D.Categorical(logits=p["disc", "logits"])
    # the Gaussian head's 2 action dims are summed, then the categorical head is added
    expected = normal.log_prob(td[AGENT]).sum(-1) + cat.log_prob(td["disc"])
    assert_close(action_log_prob(dist, td, HEADS, batch_shape=BATCH), expected)
    stored = td[LOG_PROBS[0]].sum(-1) + td[LOG_PROBS[1]]
    assert_close(stored_log_prob(td, LOG_PROBS, batch_shape=BATCH), stored)


def test_entropy_and_composite_entropy_match_torchrl():
    actor = composite_actor()
    td = rollout(actor)
    ref = torchrl_loss(actor, entropy_coeff=0.03)(td.clone())
    terms = entropy_terms(actor.get_dist(td), batch_shape=BATCH)
    assert terms.closed_form
    assert_close(terms.total.mean(), ref["entropy"])
    assert_close(entropy_loss(terms, 0.03).mean(), ref["loss_entropy"])
    logged = composite_entropy_td(terms)
    assert logged.batch_size == ref["composite_entropy"].batch_size
    for key in ref["composite_entropy"].keys(include_nested=True, leaves_only=True):
        assert_close(logged[key], ref["composite_entropy"][key])


def test_per_head_coefficients_match_torchrl_on_per_sample_heads():
    actor = composite_actor(act=0)  # every head's entropy is one value per sample
    td = rollout(actor)
    coeff = {("agents", "action_entropy"): 0.1, "disc_entropy": 0.3}  # TorchRL's spelling
    ref = torchrl_loss(actor, entropy_coeff=coeff)(td.clone())
    terms = entropy_terms(actor.get_dist(td), batch_shape=BATCH)
    assert_close(entropy_loss(terms, coeff).mean(), ref["loss_entropy"])
    # every spelling of a head names the same head
    other_spelling = {AGENT: 0.1, "disc_log_prob": 0.3}
    assert_close(entropy_loss(terms, other_spelling), entropy_loss(terms, coeff))


def test_per_head_coefficients_sum_event_dims():
    actor = composite_actor()  # the Gaussian head's entropy is [B, 2]
    td = rollout(actor)
    terms = entropy_terms(actor.get_dist(td), batch_shape=BATCH)
    p = td["params"]
    h_agent = D.Normal(p[(*AGENT, "loc")], p[(*AGENT, "scale")]).entropy()  # [B, 2]
    h_disc = D.Categorical(logits=p["disc", "logits"]).entropy()  # [B]
    expected = -(0.1 * h_agent.sum(-1) + 0.3 * h_disc)
    loss = entropy_loss(terms, {AGENT: 0.1, "disc": 0.3})
    assert_close(loss, expected)
    # equal per-head coefficients give TorchRL's scalar-coefficient loss (ppokit's rule);
    # TorchRL's own per-head path would average the 2 Gaussian dims instead (documented)
    ref = torchrl_loss(actor, entropy_coeff=0.2)(td.clone())
    assert_close(entropy_loss(terms, {AGENT: 0.2, "disc": 0.2}).mean(), ref["loss_entropy"])


def test_monte_carlo_head_draws_as_torchrl():
    actor = composite_actor(cont=torchrl_modules.TanhNormal)  # no closed form, has rsample
    td = rollout(actor)
    loss = torchrl_loss(actor, samples_mc_entropy=3)
    torch.manual_seed(7)
    ref = loss(td.clone())
    torch.manual_seed(7)
    terms = entropy_terms(actor.get_dist(td), batch_shape=BATCH, samples_mc_entropy=3)
    assert not terms.closed_form
    assert_close(terms.total.mean(), ref["entropy"])
    assert_close(entropy_loss(terms, 0.01).mean(), ref["loss_entropy"])
    assert terms.total.requires_grad  # reparameterised draws keep the bonus's gradient


def test_fallback_branch_when_a_head_has_no_rule():
    actor = composite_actor(disc=_NoEntropyCategorical)
    td = rollout(actor)
    loss = torchrl_loss(actor, samples_mc_entropy=4)
    torch.manual_seed(3)
    ref = loss(td.clone())
    torch.manual_seed(3)
    terms = entropy_terms(actor.get_dist(td), batch_shape=BATCH, samples_mc_entropy=4)
    assert not terms.closed_form
    assert_close(terms.total.mean(), ref["entropy"])
    assert_close(entropy_loss(terms, 0.01).mean(), ref["loss_entropy"])


def test_policy_keys_are_torchrl_loss_keys():
    actor = composite_actor()
    keys = torchrl_loss(actor).tensor_keys
    assert policy_keys(actor) == (keys.action, keys.sample_log_prob)
    assert [log_prob_key(h) for h in HEADS] == LOG_PROBS
    assert entropy_key(AGENT) == ("agents", "action_entropy")
    assert policy_keys(nn.Linear(2, 2)) is None


def test_plain_distribution_matches_torchrl():
    actor = torchrl_modules.ProbabilisticActor(
        TensorDictModule(_Split(), ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=torchrl_modules.IndependentNormal,
        return_log_prob=True,
    )
    td = rollout(actor)
    ref = torchrl_loss(actor)(td.clone())
    dist = actor.get_dist(td)
    lw = action_log_prob(dist, td, "action", batch_shape=BATCH) - stored_log_prob(
        td, "action_log_prob", batch_shape=BATCH
    )
    assert_close(-lw.mean(), ref["kl_approx"])
    terms = entropy_terms(dist, batch_shape=BATCH)
    assert terms.per_head is None
    assert_close(terms.total.mean(), ref["entropy"])
    assert_close(entropy_loss(terms, 0.01).mean(), ref["loss_entropy"])


class _Split(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(OBS, 2 * ACT)

    def forward(self, obs: torch.Tensor):
        out = self.lin(obs)
        return out[..., :ACT], out[..., ACT:].exp()


def test_per_token_log_probs_keep_their_dims():
    logits = torch.randn(B, 5, N_DISC)  # 5 tokens per sample
    dist = D.Categorical(logits=logits)
    tokens = torch.randint(N_DISC, (B, 5))
    td = TensorDict({"action": tokens, "action_log_prob": dist.log_prob(tokens)}, [B])
    assert action_log_prob(dist, td, "action", batch_shape=BATCH).shape == (B, 5)
    assert stored_log_prob(td, "action_log_prob", batch_shape=BATCH).shape == (B, 5)
    assert entropy_terms(dist, batch_shape=BATCH).total.shape == (B, 5)


def test_aggregated_stored_log_prob_for_a_composite():
    actor = composite_actor()
    td = rollout(actor)
    td["sample_log_prob"] = td[LOG_PROBS[0]].sum(-1) + td[LOG_PROBS[1]]
    assert_close(
        stored_log_prob(td, "sample_log_prob", batch_shape=BATCH),
        stored_log_prob(td, LOG_PROBS, batch_shape=BATCH),
    )


def test_sampling_prefers_the_atomic_method():
    dist = torchrl_modules.TanhNormal(torch.zeros(3), torch.ones(3))
    torch.manual_seed(1)
    x, lp = sample_and_score(dist, 2, reparameterize=True)
    torch.manual_seed(1)
    x_ref, lp_ref = dist.rsample_and_log_prob((2,))
    assert_close(x, x_ref)
    assert_close(lp, lp_ref)
    assert not has_closed_form_entropy(dist)
    assert has_closed_form_entropy(D.Independent(D.Normal(torch.zeros(2), 1.0), 1))


# ---------------------------------------------------------------- errors
def test_missing_sub_key_names_it_and_what_is_there():
    actor = composite_actor()
    td = rollout(actor)
    dist = actor.get_dist(td)
    del td["disc"]
    with pytest.raises(KeyError, match=r"'disc' is missing from the data; it holds .*observation"):
        action_log_prob(dist, td, HEADS, batch_shape=BATCH)
    del td[LOG_PROBS[0]]
    with pytest.raises(KeyError, match=r"\('agents', 'action_log_prob'\) is missing"):
        stored_log_prob(td, LOG_PROBS, batch_shape=BATCH)


def test_action_keys_must_be_the_heads():
    actor = composite_actor()
    td = rollout(actor)
    with pytest.raises(KeyError, match=r"has heads \[\('agents', 'action'\), 'disc'\]"):
        action_log_prob(actor.get_dist(td), td, "action", batch_shape=BATCH)


def test_unknown_missing_or_repeated_head_in_coefficients():
    heads = list(HEADS)
    with pytest.raises(KeyError, match="names 'gripper', which is not a head"):
        resolve_entropy_coeff({AGENT: 0.1, "disc": 0.1, "gripper": 0.2}, heads)
    with pytest.raises(KeyError, match=r"no coefficient for the head\(s\) \['disc'\]"):
        resolve_entropy_coeff({AGENT: 0.1}, heads)
    with pytest.raises(KeyError, match="twice"):
        resolve_entropy_coeff({AGENT: 0.1, ("agents", "action_entropy"): 0.2, "disc": 0}, heads)


def test_mapping_with_a_plain_distribution():
    terms = EntropyTerms(total=torch.ones(B), per_head=None, closed_form=True)
    with pytest.raises(TypeError, match=r"not a CompositeDistribution.*give a float"):
        entropy_loss(terms, {"action": 0.1})


def test_shape_grad_and_option_errors():
    dist = D.Categorical(logits=torch.randn(B, N_DISC))
    td = TensorDict({"action": torch.zeros(B, dtype=torch.long)}, [B])
    with pytest.raises(ValueError, match=r"shape \(6,\), expected the batch shape \(3,\)"):
        action_log_prob(dist, td, "action", batch_shape=torch.Size([3]))
    with pytest.raises(ValueError, match="not a CompositeDistribution; pass one key"):
        action_log_prob(dist, td, ["action", "other"], batch_shape=BATCH)
    td["action_log_prob"] = torch.zeros(B, requires_grad=True)
    with pytest.raises(RuntimeError, match="requires grad"):
        stored_log_prob(td, "action_log_prob", batch_shape=BATCH)
    with pytest.raises(ValueError, match="samples_mc_entropy must be an integer >= 1"):
        entropy_terms(dist, batch_shape=BATCH, samples_mc_entropy=0)


class _OverflowingNormal(D.Normal):
    """A closed form that overflows for the first sample (a near-degenerate scale)."""

    def entropy(self) -> torch.Tensor:
        entropy = super().entropy()
        return torch.cat([torch.full_like(entropy[:1], float("inf")), entropy[1:]])


def test_non_finite_closed_form_falls_back_to_sampling():
    loc, scale = torch.randn(B, ACT), torch.rand(B, ACT) + 0.5
    dist = _OverflowingNormal(loc, scale)
    torch.manual_seed(2)
    terms = entropy_terms(dist, batch_shape=BATCH, samples_mc_entropy=5)
    torch.manual_seed(2)
    draws = D.Normal(loc, scale).rsample((5,))
    expected = -D.Normal(loc, scale).log_prob(draws).mean(0)  # every sample estimated
    assert not terms.closed_form
    assert_close(terms.total, expected)
    # without the check the closed form is kept as is (the caller diagnoses it later)
    kept = entropy_terms(dist, batch_shape=BATCH, check_finite=False)
    assert kept.closed_form and torch.isinf(kept.total[0]).all()


def test_entropy_compiles_in_one_graph():
    loc, scale = torch.randn(B, ACT), torch.rand(B, ACT) + 0.5

    def bonus(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        params = TensorDict({"move": {"loc": loc, "scale": scale}, "grip": {"logits": loc}}, [B])
        dist = CompositeDistribution(params, {"move": _OverflowingNormal, "grip": D.Categorical})
        return entropy_loss(entropy_terms(dist, batch_shape=BATCH), {"move": 0.1, "grip": 0.2})

    compiled = torch.compile(bonus, fullgraph=True)
    torch.manual_seed(4)
    got = compiled(loc, scale)
    torch.manual_seed(4)
    draws = D.Normal(loc, scale).rsample((1,))
    sampled = -D.Normal(loc, scale).log_prob(draws).mean(0)
    closed = D.Normal(loc, scale).entropy()
    # compiled: the estimate replaces only the non-finite elements (no data-dependent branch)
    move = torch.cat([sampled[:1], closed[1:]]).sum(-1)
    expected = -(0.1 * move + 0.2 * D.Categorical(logits=loc).entropy())
    assert_close(got, expected)
