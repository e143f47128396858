"""ppokit.objectives.klpen_math against TorchRL 0.14.1's KLPENPPOLoss.

TorchRL's loss runs on TorchRL's own actors; the KL term, the penalised objective and the
beta sequence are rebuilt from the pure pieces and compared. The gradient test shows the
one deliberate difference: TorchRL differentiates with the beta it has already updated.
"""

from __future__ import annotations

import itertools

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

from ppokit.objectives.composite import action_log_prob, stored_log_prob
from ppokit.objectives.klpen_math import (
    kl_term,
    klpen_objective,
    next_beta,
    previous_distribution,
    validate_klpen_options,
)

torchrl_modules = pytest.importorskip("torchrl.modules")
torchrl_objectives = pytest.importorskip("torchrl.objectives")

B, OBS, ACT = 8, 3, 2
BATCH = torch.Size([B])


class _LocScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(OBS, 2 * ACT)

    def forward(self, obs: torch.Tensor):
        out = self.lin(obs)
        return out[..., :ACT], out[..., ACT:].exp()


def gaussian_actor(dist_class):
    return torchrl_modules.ProbabilisticActor(
        TensorDictModule(_LocScale(), ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=dist_class,
        return_log_prob=True,
    )


class _Composite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(OBS, 2 * ACT + 3)

    def forward(self, obs: torch.Tensor):
        out = self.lin(obs)
        return out[..., :ACT], out[..., ACT : 2 * ACT].exp(), out[..., 2 * ACT :]


def composite_actor():
    agent = ("agents", "action")
    net = TensorDictModule(
        _Composite(),
        ["observation"],
        [("params", *agent, "loc"), ("params", *agent, "scale"), ("params", "disc", "logits")],
    )
    prob = ProbabilisticTensorDictModule(
        in_keys=["params"],
        out_keys=[agent, "disc"],
        distribution_class=CompositeDistribution,
        distribution_kwargs={"distribution_map": {agent: D.Normal, "disc": D.Categorical}},
        return_log_prob=True,
    )
    return ProbabilisticTensorDictSequential(net, prob)


def rollout(actor, move: float) -> TensorDict:
    td = TensorDict({"observation": torch.randn(B, OBS)}, [B])
    with torch.no_grad():
        actor(td)
        for p in actor.parameters():  # the policy moves after collection by `move`
            p.add_(move * torch.randn_like(p))
    td["advantage"] = torch.randn(B, 1)
    td["value_target"] = torch.randn(B, 1)
    return td


def torchrl_klpen(actor, **kwargs):
    critic = torchrl_modules.ValueOperator(nn.Linear(OBS, 1), in_keys=["observation"])
    return torchrl_objectives.KLPENPPOLoss(actor, critic, **kwargs)


def ppokit_terms(actor, td, beta, *, action_keys, log_prob_keys, samples_mc_kl=1):
    """The KLPEN objective from the pure pieces, in TorchRL's order of random draws."""
    td = td.copy()  # running the actor writes its outputs (loc, scale) into the data
    previous = previous_distribution(actor, td)
    current = actor.get_dist(td)
    log_weight = (
        action_log_prob(current, td, action_keys, batch_shape=BATCH)
        - stored_log_prob(td, log_prob_keys, batch_shape=BATCH)
    ).unsqueeze(-1)
    kl = kl_term(previous, current, samples_mc_kl=samples_mc_kl, batch_shape=BATCH)
    return kl, klpen_objective(log_weight, td["advantage"], kl, beta)


@pytest.mark.parametrize("dist_class", ["IndependentNormal", "TanhNormal"])
def test_closed_form_kl_objective_and_beta_sequence(dist_class):
    actor = gaussian_actor(getattr(torchrl_modules, dist_class))
    dtarg, inc, dec = 0.01, 1.7, 0.6
    loss = torchrl_klpen(
        actor, beta=0.8, dtarg=dtarg, increment=inc, decrement=dec, entropy_bonus=False
    )
    beta = torch.tensor(0.8)
    betas = [0.8]
    # large moves push the KL above 1.5 * dtarg (beta grows), no move gives KL 0 (shrinks)
    for move in (0.3, 0.0, 0.3, 0.3, 0.0, 0.05):
        td = rollout(actor, move)
        ref = loss(td.clone())
        kl, objective = ppokit_terms(
            actor, td, beta, action_keys="action", log_prob_keys="action_log_prob"
        )
        assert_close(kl.unsqueeze(-1), ref["kl"])
        assert_close(objective.mean(), ref["loss_objective"])
        beta = next_beta(beta, kl.detach().mean(), dtarg=dtarg, increment=inc, decrement=dec)
        assert_close(beta, loss.beta)
        betas.append(float(beta))
    steps = {round(b / a, 4) for a, b in itertools.pairwise(betas)}
    assert {inc, dec} <= steps  # both directions exercised


@pytest.mark.parametrize("samples", [1, 3])
def test_monte_carlo_kl_on_a_composite_draws_as_torchrl(samples):
    actor = composite_actor()
    td = rollout(actor, 0.3)
    loss = torchrl_klpen(actor, beta=1.3, samples_mc_kl=samples)  # closed-form entropies
    torch.manual_seed(11)
    ref = loss(td.clone())
    torch.manual_seed(11)
    kl, objective = ppokit_terms(
        actor,
        td,
        torch.tensor(1.3),
        samples_mc_kl=samples,
        action_keys=[("agents", "action"), "disc"],
        log_prob_keys=[("agents", "action_log_prob"), "disc_log_prob"],
    )
    assert_close(kl.unsqueeze(-1), ref["kl"])
    assert_close(objective.mean(), ref["loss_objective"])
    # a different seed draws different points: the comparison above is not vacuous
    torch.manual_seed(12)
    other = kl_term(
        previous_distribution(actor, td),
        actor.get_dist(td),
        samples_mc_kl=samples,
        batch_shape=BATCH,
    )
    assert not torch.allclose(other, kl)


def test_monte_carlo_kl_by_hand():
    p = D.Normal(torch.zeros(B), 1.0)
    q = D.StudentT(3.0, torch.ones(B), 2.0)  # torch has no closed-form KL for this pair
    torch.manual_seed(5)
    got = kl_term(p, q, samples_mc_kl=4, batch_shape=BATCH)
    torch.manual_seed(5)
    x = p.sample((4,))
    assert_close(got, (p.log_prob(x) - q.log_prob(x)).mean(0))


def test_gradient_is_that_of_the_returned_loss():
    actor = gaussian_actor(torchrl_modules.IndependentNormal)
    td = rollout(actor, 0.3)  # KL well above 1.5 * dtarg: beta doubles during the call
    loss = torchrl_klpen(
        actor, beta=1.0, dtarg=0.001, increment=2.0, entropy_bonus=False, critic_coeff=None
    )
    params = list(actor.parameters())

    def grads(beta: float) -> list[torch.Tensor]:
        _, objective = ppokit_terms(
            actor, td, torch.tensor(beta), action_keys="action", log_prob_keys="action_log_prob"
        )
        return torch.autograd.grad(objective.mean(), params)

    beta = torch.tensor(1.0)  # ppokit: build with beta, update beta, then differentiate
    kl, objective = ppokit_terms(
        actor, td, beta, action_keys="action", log_prob_keys="action_log_prob"
    )
    beta.copy_(next_beta(beta, kl.mean(), dtarg=0.001, increment=2.0, decrement=0.5))
    assert float(beta) == 2.0
    ours = torch.autograd.grad(objective.mean(), params)
    for g, g_ref in zip(ours, grads(1.0)):
        assert_close(g, g_ref)
    # TorchRL returns the beta=1 loss but its backward uses beta=2
    out = loss(td.clone())
    assert_close(out["loss_objective"], objective.mean())
    theirs = torch.autograd.grad(out["loss_objective"], params)
    for g, g_new in zip(theirs, grads(2.0)):
        assert_close(g, g_new)
    assert not all(torch.allclose(a, b) for a, b in zip(theirs, ours))


def test_next_beta_thresholds_by_hand():
    beta = torch.tensor(0.5)
    rule = {"dtarg": 0.02, "increment": 3.0, "decrement": 0.25}
    assert float(next_beta(beta, torch.tensor(0.031), **rule)) == 1.5  # 0.031 > 0.03
    assert float(next_beta(beta, torch.tensor(0.03), **rule)) == 0.5  # not strictly above
    assert float(next_beta(beta, torch.tensor(0.013), **rule)) == 0.125  # < 0.02 / 1.5
    assert float(next_beta(beta, torch.tensor(0.014), **rule)) == 0.5


def test_validation_messages():
    ok = {"dtarg": 0.01, "beta": 1.0, "increment": 2.0, "decrement": 0.5, "samples_mc_kl": 1}
    validate_klpen_options(**ok)
    validate_klpen_options(**{**ok, "increment": 1.0, "decrement": 1.0, "beta": 0.0})
    bad = [
        ("dtarg", 0.0, ValueError, "dtarg must be > 0"),
        ("beta", -0.1, ValueError, "beta must be >= 0"),
        ("increment", 0.9, ValueError, "increment must be >= 1"),
        ("decrement", 0.0, ValueError, r"decrement must be in \(0, 1\]"),
        ("decrement", 1.5, ValueError, r"decrement must be in \(0, 1\]"),
        ("samples_mc_kl", 0, ValueError, "samples_mc_kl must be an integer >= 1"),
        ("samples_mc_kl", 1.5, ValueError, "samples_mc_kl must be an integer >= 1"),
        ("dtarg", "0.1", TypeError, "dtarg must be a real number"),
        ("beta", float("nan"), ValueError, "beta must be finite"),
    ]
    for name, value, error, message in bad:
        with pytest.raises(error, match=message):
            validate_klpen_options(**{**ok, name: value})


def test_shape_and_input_errors():
    lw, adv = torch.zeros(B, 1), torch.zeros(B, 1)
    with pytest.raises(ValueError, match="one value per sample"):
        klpen_objective(lw, adv, torch.zeros(B, 2), 1.0)
    with pytest.raises(ValueError, match="must have the same shape"):
        klpen_objective(lw, torch.zeros(B), torch.zeros(B), 1.0)
    with pytest.raises(TypeError, match="rebuild pi_old"):
        previous_distribution(nn.Linear(2, 2), TensorDict({}, []))
    actor = gaussian_actor(torchrl_modules.IndependentNormal)
    with pytest.raises(KeyError, match="Store the actor's distribution parameters"):
        previous_distribution(actor, TensorDict({"observation": torch.zeros(B, OBS)}, [B]))
