"""Layouts beyond one scalar per sample, against TorchRL 0.14.1's losses.

* per-token log-probs ``[B, T, A]`` (a batch ``[B]``): ``ESS`` keeps the token dims;
* a multi-agent composite policy whose heads' log-probs keep an agent dim ``[B, N]`` next to
  a per-agent advantage ``[B, N, 1]`` (TorchRL's ``test_ppo_marl_aggregate`` layout);
* a critic with several value heads, in ``loss_critic``: TensorDicts in, TensorDicts out.
"""

from __future__ import annotations

import functools

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    CompositeDistribution,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    set_composite_lp_aggregate,
)
from torch import distributions as D
from torch import nn
from torch.testing import assert_close

from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor

torchrl_objectives = pytest.importorskip("torchrl.objectives")


def _grads(out, params):
    total = sum(v.sum() for k, v in out.items() if k.startswith("loss_"))
    return torch.autograd.grad(total, params, allow_unused=True)


def _compare(ours, theirs, params, *, skip=()):
    assert set(theirs.keys(True, True)) - set(skip) <= set(ours.keys(True, True))
    for key in theirs.keys(True, True):
        if key not in skip:
            assert ours[key].shape == theirs[key].shape, key
            assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6, msg=str(key))
    for a, b in zip(_grads(ours, params), _grads(theirs, params)):
        if a is not None or b is not None:
            assert_close(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- per-token log-probs
class _TokenActor(nn.Module):
    """TorchRL's own minimal per-token actor: a bias added to stored logits."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.randn(vocab))
        self.in_keys = ["logits"]

    def get_dist(self, tensordict):
        return D.Categorical(logits=tensordict["logits"] + self.bias)


@pytest.mark.parametrize("batch", [2, 1])
def test_per_token_ess_keeps_the_token_dims_as_torchrl(batch):
    torch.manual_seed(batch)
    chunk, width, vocab = 8, 7, 4
    logits = torch.randn(batch, chunk, width, vocab)
    action = torch.randint(vocab, (batch, chunk, width))
    behaviour = D.Categorical(logits=logits + torch.randn(vocab)).log_prob(action)
    td = TensorDict(
        {
            "logits": logits,
            "action": action,
            "sample_log_prob": behaviour,
            "advantage": torch.randn(batch, chunk, width, 1),
        },
        [batch],
    )
    actor = _TokenActor(vocab)
    outs = []
    for cls in (ClipPPOLoss, torchrl_objectives.ClipPPOLoss):
        loss = cls(actor, critic_network=None, entropy_bonus=False)
        loss.set_keys(action="action", sample_log_prob="sample_log_prob")
        outs.append(loss(td.clone()))
    ours, theirs = outs
    assert ours["ESS"].shape == (chunk, width)  # one ESS per token, over the batch dim
    _compare(ours, theirs, [actor.bias])
    # hand-worked: ESS of token (0, 0) = (sum w)^2 / (n sum w^2) over the batch
    w = (actor.get_dist(td).log_prob(action) - behaviour)[:, 0, 0].exp().detach()
    assert_close(ours["ESS"][0, 0], w.sum() ** 2 / (batch * (w**2).sum()))


# ----------------------------------------------------------------- per-agent heads
B, N_AGENTS, OBS = 3, 4, 5
HEADS = [("agents", "dirich"), ("agents", "categ")]


class _AgentParams(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conc = nn.Linear(OBS, 20)
        self.logits = nn.Linear(OBS, 7)

    def forward(self, obs):
        conc = nn.functional.softplus(self.conc(obs)).view(*obs.shape[:-1], 10, 2) + 0.1
        return conc, self.logits(obs)


def _marl_policy():
    dists = {
        HEADS[0]: lambda concentration: D.Independent(D.Dirichlet(concentration), 1),
        HEADS[1]: D.Categorical,
    }
    params = TensorDictModule(
        _AgentParams(),
        in_keys=[("agents", "observation")],
        out_keys=[
            ("params", "agents", "dirich", "concentration"),
            ("params", "agents", "categ", "logits"),
        ],
    )
    heads = ProbabilisticTensorDictModule(
        in_keys=["params"],
        out_keys=HEADS,
        distribution_class=functools.partial(CompositeDistribution, distribution_map=dists),
        return_log_prob=True,
    )
    return ProbabilisticTensorDictSequential(params, heads)


def test_per_agent_log_weights_match_torchrl():
    torch.manual_seed(0)
    policy = _marl_policy()
    critic = TensorDictModule(
        nn.Linear(OBS, 1), in_keys=[("agents", "observation")], out_keys=["state_value"]
    )
    obs = torch.randn(B, N_AGENTS, OBS)
    td = TensorDict({"agents": TensorDict({"observation": obs}, [B, N_AGENTS])}, [B])
    with set_composite_lp_aggregate(False), torch.no_grad():
        policy(td)
        for p in policy.parameters():  # the policy moves after collection: ratios != 1
            p.add_(0.1 * torch.randn_like(p))
    assert td["agents", "dirich_log_prob"].shape == (B, N_AGENTS)  # one per agent
    td["advantage"] = torch.randn(B, N_AGENTS, 1)
    td["value_target"] = torch.randn(B, N_AGENTS, 1)
    params = [*policy.parameters(), *critic.parameters()]
    with set_composite_lp_aggregate(False):
        outs = []
        for cls in (ClipPPOLoss, torchrl_objectives.ClipPPOLoss):
            loss = cls(policy, critic, entropy_coeff=0.05)
            loss.set_keys(action=HEADS)
            outs.append(loss(td.clone()))
    ours, theirs = outs
    # per-agent ESS [N] and explained variance [N, 1]: TorchRL's first-dim layout
    assert ours["ESS"].shape == (N_AGENTS,)
    assert ours["explained_variance"].shape == (N_AGENTS, 1)
    _compare(ours, theirs, params)


def test_per_agent_advantage_must_match_the_heads():
    torch.manual_seed(0)
    policy = _marl_policy()
    obs = torch.randn(B, N_AGENTS, OBS)
    td = TensorDict({"agents": TensorDict({"observation": obs}, [B, N_AGENTS])}, [B])
    with set_composite_lp_aggregate(False), torch.no_grad():
        policy(td)
    td["advantage"] = torch.randn(B, N_AGENTS + 1, 1)  # 5 "agents": not the heads' 4
    loss = ClipPPOLoss(policy, None)
    loss.set_keys(action=HEADS)
    with pytest.raises(ValueError, match=r"'advantage' entry has shape \(3, 5, 1\)"):
        loss(td)


# ----------------------------------------------------------------- critic value heads
class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 2)

    def forward(self, state):
        out = self.lin(state)
        return out[..., :1], out[..., 1:]


def _critic_heads_setup():
    torch.manual_seed(0)
    actor = ProbabilisticActor(
        TensorDictModule(nn.Linear(1, 2), ["state"], ["logits"]),
        in_keys=["logits"],
        distribution_class=Categorical,
    )
    critic = TensorDictModule(
        _TwoHeads(), ["state"], [("state_value", "v0"), ("state_value", "v1")]
    )

    def heads():
        return TensorDict(v0=torch.randn(6, 1), v1=torch.randn(6, 1), batch_size=[6])

    td = TensorDict({"state": torch.randn(6, 1), "value_target": heads()}, [6])
    td["state_value"] = heads()  # V_old, for clip_value
    return actor, critic, td


def test_loss_critic_with_value_heads_matches_torchrl():
    actor, critic, td = _critic_heads_setup()
    options = {"loss_critic_type": "l2", "critic_coeff": 0.5}
    ours = ClipPPOLoss(actor, critic, **options).loss_critic(td.clone())
    theirs = torchrl_objectives.ClipPPOLoss(actor, critic, **options).loss_critic(td.clone())
    assert ours[1] is None  # no clip_value
    for mine, ref in ((ours[0], theirs[0]), (ours[2], theirs[2])):
        assert isinstance(mine, TensorDict) and set(mine.keys()) == {"v0", "v1"}
        for head in ("v0", "v1"):
            # TorchRL's explained variance keeps the (size-1) feature dim of its dim-0 var
            assert_close(mine[head], ref[head].reshape(mine[head].shape))
    grads = torch.autograd.grad(ours[0]["v0"].sum(), list(critic.parameters()))
    ref_grads = torch.autograd.grad(theirs[0]["v0"].sum(), list(critic.parameters()))
    for a, b in zip(grads, ref_grads):
        assert_close(a, b)


def test_clipped_value_heads_match_torchrls_single_head_loss():
    # With clip_value, TorchRL's TensorDict path reads V_old from the nested TensorDict the
    # critic then overwrites in place, so it compares the new value with itself and never
    # clips. The reference is therefore TorchRL's own loss on one head at a time (tensor
    # keys), where it reads V_old correctly.
    actor, critic, td = _critic_heads_setup()
    options = {"loss_critic_type": "l2", "critic_coeff": 0.5, "clip_value": 0.1}
    loss, fraction, variance = ClipPPOLoss(actor, critic, **options).loss_critic(td.clone())
    for head in ("v0", "v1"):
        ref = torchrl_objectives.ClipPPOLoss(actor, critic, **options)
        ref.set_keys(value=("state_value", head), value_target=("value_target", head))
        ref_loss, ref_fraction, ref_variance = ref.loss_critic(td.clone())
        assert_close(loss[head], ref_loss)
        assert_close(fraction[head], ref_fraction)
        assert_close(variance[head], ref_variance.squeeze(-1))
    assert float(fraction["v0"]) > 0  # the clip really acted


def test_value_heads_must_have_the_targets_shape():
    actor, critic, td = _critic_heads_setup()
    td["value_target"] = TensorDict(v0=torch.randn(6, 1), v1=torch.randn(6, 2), batch_size=[6])
    with pytest.raises(ValueError, match=r"Value head 'v1': the value target has shape \(6, 2\)"):
        ClipPPOLoss(actor, critic).loss_critic(td)
    td["value_target"] = TensorDict(v0=torch.randn(6, 1), v2=torch.randn(6, 1), batch_size=[6])
    with pytest.raises(ValueError, match=r"Value head 'v2'.*no such entry"):
        ClipPPOLoss(actor, critic).loss_critic(td)
