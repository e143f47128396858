"""ClipPPOLoss against an independent per-sample reference, and its contract.

The reference below recomputes every output with a plain Python loop over samples, straight
from the paper's formulas (ratio-space clipping, unbiased advantage std), so it shares no code
with ppokit.objectives.
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from loss_builders import OBS, critic, discrete_actor, make_batch, normal_actor
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    NormalParamExtractor,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictSequential,
    set_interaction_type,
)
from torch import distributions as D
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close

from ppokit import ClipPPOLoss, PPOLoss


def _distance(t: float, v: torch.Tensor, kind: str) -> torch.Tensor:
    d = v - t
    if kind == "l1":
        return d.abs()
    if kind == "l2":
        return d * d
    return 0.5 * d * d if d.abs() < 1 else d.abs() - 0.5


def reference(
    actor_net,
    critic_net,
    td,
    *,
    eps=0.2,
    entropy_coef=0.01,
    critic_coef=1.0,
    loss_type="smooth_l1",
    normalize=False,
    clip_value=None,
    reduction="mean",
    entropy_bonus=True,
):
    """Per-sample loop for a Categorical actor (logits = actor_net(obs))."""
    obs = td["observation"].reshape(-1, OBS)
    n = obs.shape[0]
    actions = td["action"].reshape(-1)
    old_lp = td["action_log_prob"].reshape(-1)
    adv = td["advantage"].reshape(-1)
    vt = td["value_target"].reshape(-1)
    old_v = td["state_value"].reshape(-1)
    if normalize:
        mean = sum(adv[i] for i in range(n)) / n
        var = sum((adv[i] - mean) ** 2 for i in range(n)) / (n - 1)
        adv = torch.stack([(adv[i] - mean) / max(var.sqrt(), torch.tensor(1e-6)) for i in range(n)])
    objs, ents, crits = [], [], []
    for i in range(n):
        logits = actor_net(obs[i])
        logp = logits - torch.logsumexp(logits, 0)
        ratio = torch.exp(logp[actions[i]] - old_lp[i])
        clipped = torch.clamp(ratio, 1 - eps, 1 + eps)
        objs.append(-torch.minimum(ratio * adv[i], clipped * adv[i]))
        ents.append(-(logp.exp() * logp).sum())
        v = critic_net(obs[i])[0]
        c = _distance(vt[i], v, loss_type)
        if clip_value is not None:
            v_clip = old_v[i] + torch.clamp(v - old_v[i], -clip_value, clip_value)
            c = torch.maximum(c, _distance(vt[i], v_clip, loss_type))
        crits.append(critic_coef * c)
    out = {"loss_objective": torch.stack(objs), "loss_critic": torch.stack(crits)}
    if entropy_bonus:
        out["loss_entropy"] = -entropy_coef * torch.stack(ents)
    shape = td.batch_size
    for k, v in out.items():
        out[k] = {"mean": v.mean(), "sum": v.sum(), "none": v.reshape(shape)}[reduction]
    out["entropy"] = torch.stack(ents).mean().detach()
    return out


def _total(losses):
    return sum(v.sum() for k, v in losses.items() if k.startswith("loss_"))


GRID = list(
    itertools.product(
        [0.1, 0.2],  # clip_epsilon
        [False, True],  # normalize_advantage
        ["l1", "l2", "smooth_l1"],  # loss_critic_type
        [None, 0.05],  # clip_value
        ["mean", "sum", "none"],  # reduction
        [True, False],  # functional
    )
)


@pytest.mark.parametrize("eps, normalize, loss_type, clip_value, reduction, functional", GRID)
def test_matches_per_sample_reference(eps, normalize, loss_type, clip_value, reduction, functional):
    actor_net, critic_net = nn.Linear(OBS, 4).double(), nn.Linear(OBS, 1).double()
    actor = discrete_actor(actor_net)
    td = make_batch(actor, (3, 4), dtype=torch.float64)
    loss = ClipPPOLoss(
        actor,
        critic(critic_net),
        clip_epsilon=eps,
        entropy_coef=0.05,
        critic_coef=0.7,
        loss_critic_type=loss_type,
        normalize_advantage=normalize,
        clip_value=False if clip_value is None else clip_value,
        reduction=reduction,
        functional=functional,
    )
    out = loss(td)
    ref = reference(
        actor_net,
        critic_net,
        td,
        eps=eps,
        entropy_coef=0.05,
        critic_coef=0.7,
        loss_type=loss_type,
        normalize=normalize,
        clip_value=clip_value,
        reduction=reduction,
    )
    for key in ("loss_objective", "loss_critic", "loss_entropy", "entropy"):
        assert_close(out[key], ref[key], msg=key)
    params = list(actor_net.parameters()) + list(critic_net.parameters())
    got = torch.autograd.grad(_total(out), params)
    want = torch.autograd.grad(_total(ref), params)
    for g, w in zip(got, want):
        assert_close(g, w)


def test_diagnostics_hand_checked():
    actor_net = nn.Linear(OBS, 4)
    actor = discrete_actor(actor_net)
    td = make_batch(actor, (10,))
    out = ClipPPOLoss(actor, critic(), clip_epsilon=0.2)(td)
    logits = actor_net(td["observation"])
    lp = torch.log_softmax(logits, -1).gather(-1, td["action"][:, None]).squeeze(-1)
    lw = (lp - td["action_log_prob"]).detach()
    w = lw.exp()
    assert_close(out["kl_approx"], (-lw).mean())
    assert_close(out["ESS"], w.sum() ** 2 / (w**2).sum() / 10)
    assert_close(out["clip_fraction"], ((w < 0.8) | (w > 1.2)).float().mean())
    assert_close(out["max_ratio"], w.max())
    assert_close(out["mean_ratio"], w.mean())
    assert 0 < float(out["clip_fraction"]) < 1, "the fixture should clip some samples"
    for key in out.keys():
        if not key.startswith("loss_"):
            assert not out[key].requires_grad, key
    assert out.batch_size == torch.Size([])


def test_output_keys_follow_options():
    actor = discrete_actor()
    td = make_batch(actor)
    out = ClipPPOLoss(actor, critic(), clip_value=True)(td)
    assert set(out.keys()) == {
        "loss_objective",
        "loss_critic",
        "loss_entropy",
        "entropy",
        "clip_fraction",
        "kl_approx",
        "ESS",
        "explained_variance",
        "value_clip_fraction",
        "max_ratio",
        "mean_ratio",
    }
    out = ClipPPOLoss(actor, critic(), entropy_bonus=False, critic_coef=0.0)(td)
    assert "loss_entropy" not in out.keys() and "loss_critic" not in out.keys()
    # actor only: no critic at all, the advantage comes from the data
    out = ClipPPOLoss(actor, None, critic_coef=0)(td)
    assert "loss_critic" not in out.keys()


def test_clip_value_true_uses_clip_epsilon():
    actor = discrete_actor()
    td = make_batch(actor)
    c = critic()
    a = ClipPPOLoss(actor, c, clip_epsilon=0.15, clip_value=True)(td)
    b = ClipPPOLoss(actor, c, clip_epsilon=0.15, clip_value=0.15)(td)
    assert_close(a["loss_critic"], b["loss_critic"])
    plain = ClipPPOLoss(actor, c, clip_epsilon=0.15)(td)
    assert not torch.allclose(a["loss_critic"], plain["loss_critic"])


def test_entropy_bonus_off_changes_only_entropy_terms():
    actor_net, critic_net = nn.Linear(OBS, 4), nn.Linear(OBS, 1)
    actor = discrete_actor(actor_net)
    td = make_batch(actor)
    out = ClipPPOLoss(actor, critic(critic_net), entropy_bonus=False)(td)
    ref = reference(actor_net, critic_net, td, entropy_bonus=False)
    assert "loss_entropy" not in out.keys() and "entropy" not in out.keys()
    assert_close(out["loss_objective"], ref["loss_objective"])


def test_reduction_none_on_two_batch_dims_keeps_shape():
    actor = discrete_actor()
    td = make_batch(actor, (2, 5))
    out = ClipPPOLoss(actor, critic(), reduction="none")(td)
    for key in ("loss_objective", "loss_critic", "loss_entropy"):
        assert out[key].shape == (2, 5)
    mean = ClipPPOLoss(actor, critic(), reduction="mean")(td)
    assert_close(out["loss_objective"].mean(), mean["loss_objective"])


def test_continuous_closed_form_entropy_consumes_no_randomness():
    actor_net = nn.Linear(OBS, 4)
    actor = normal_actor(actor_net)
    td = make_batch(actor)
    loss = ClipPPOLoss(actor, critic())
    state = torch.get_rng_state()
    out = loss(td)
    assert torch.equal(state, torch.get_rng_state())
    _, raw = actor_net(td["observation"]).chunk(2, -1)
    scale = tensordict_scale(raw)
    # H[N(mu, s)] = 0.5 log(2 pi e s^2), summed over the 2 action dims
    expected = (0.5 * torch.log(2 * math.pi * math.e * scale**2)).sum(-1).mean()
    assert_close(out["entropy"], expected)


def tensordict_scale(raw: torch.Tensor) -> torch.Tensor:
    # tensordict's default NormalParamExtractor: softplus(x + b) + 0.01 with b chosen so
    # that x = 0 maps to 1.0, i.e. softplus(b) = 0.99 -> b = log(expm1(0.99)); floor 1e-4
    bias = math.log(math.expm1(0.99))
    return (F.softplus(raw + bias) + 0.01).clamp_min(1e-4)


class _NoEntropyNormal(D.Independent):
    """A reparameterisable distribution without a closed-form entropy."""

    def __init__(self, loc, scale):
        super().__init__(D.Normal(loc, scale), 1)

    def entropy(self):
        raise NotImplementedError


@pytest.mark.parametrize("samples", [1, 7])
def test_mc_entropy_uses_reparameterised_samples(samples):
    actor_net = nn.Linear(OBS, 4)
    actor = _no_entropy_actor(actor_net)
    td = make_batch(actor)
    loss = ClipPPOLoss(actor, critic(), samples_mc_entropy=samples, entropy_coef=1.0)
    torch.manual_seed(123)
    out = loss(td)
    # Reference: same seed, draw the same [samples, B, 2] standard normals by hand.
    loc, raw = actor_net(td["observation"]).chunk(2, -1)
    scale = tensordict_scale(raw)
    torch.manual_seed(123)
    x = loc + scale * torch.randn(samples, *loc.shape)
    log_p = D.Normal(loc, scale).log_prob(x).sum(-1)
    expected = -log_p.mean(0)
    assert_close(out["entropy"], expected.mean().detach())
    # the estimate is differentiable: the bonus pushes the scale parameters
    (g,) = torch.autograd.grad(out["loss_entropy"], [actor_net.bias])
    assert g[2:].abs().sum() > 0


def _no_entropy_actor(actor_net: nn.Module) -> ProbabilisticTensorDictSequential:
    return ProbabilisticTensorDictSequential(
        TensorDictModule(
            nn.Sequential(actor_net, NormalParamExtractor()), ["observation"], ["loc", "scale"]
        ),
        ProbabilisticTensorDictModule(
            ["loc", "scale"], ["action"], distribution_class=_NoEntropyNormal, return_log_prob=True
        ),
    )


def test_mc_entropy_close_to_truth_with_many_samples():
    actor_net = nn.Linear(OBS, 4)
    actor = _no_entropy_actor(actor_net)
    td = make_batch(actor)
    out = ClipPPOLoss(actor, critic(), samples_mc_entropy=4000)(td)
    _, raw = actor_net(td["observation"]).chunk(2, -1)
    truth = (0.5 * torch.log(2 * math.pi * math.e * tensordict_scale(raw) ** 2)).sum(-1).mean()
    assert abs(float(out["entropy"]) - float(truth)) < 0.05


# --------------------------------------------------------------------------- keys
def test_set_keys_renames_every_entry():
    actor_net, critic_net = nn.Linear(OBS, 4), nn.Linear(OBS, 1)
    actor = discrete_actor(actor_net)
    td = make_batch(actor)
    base = ClipPPOLoss(actor, critic(critic_net), clip_value=True)(td)
    renamed = td.clone()
    for old, new in [
        ("advantage", "adv"),
        ("value_target", "ret"),
        ("state_value", "v_old"),
        ("action_log_prob", "sample_log_prob"),
        ("action", "act"),
    ]:
        renamed.rename_key_(old, new)
    actor2 = ProbabilisticTensorDictSequential(
        TensorDictModule(actor_net, ["observation"], ["logits"]),
        ProbabilisticTensorDictModule(["logits"], ["act"], distribution_class=D.Categorical),
    )
    c2 = TensorDictModule(critic_net, ["observation"], ["v"])
    loss = ClipPPOLoss(actor2, c2, clip_value=True)
    loss.set_keys(
        advantage="adv", value_target_key="ret", value="v", sample_log_prob="sample_log_prob"
    )
    # the value key names both the critic output and the stored V_old
    renamed.rename_key_("v_old", "v")
    out = loss(renamed)
    for key in ("loss_objective", "loss_critic", "loss_entropy"):
        assert_close(out[key], base[key])
    with pytest.raises(ValueError, match=r"unknown key name 'advantages'.*accepted names"):
        loss.set_keys(advantages="a")
    loss.set_keys(advantage=None)
    assert loss.tensor_keys.advantage == "advantage"


def test_action_and_log_prob_keys_follow_the_actor():
    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(nn.Linear(OBS, 4), ["observation"], ["logits"]),
        ProbabilisticTensorDictModule(
            ["logits"],
            ["my_action"],
            distribution_class=D.Categorical,
            return_log_prob=True,
            log_prob_key="my_lp",
        ),
    )
    loss = ClipPPOLoss(actor, critic())
    assert loss.tensor_keys.action == "my_action"
    assert loss.tensor_keys.sample_log_prob == "my_lp"


def test_deprecated_key_arguments_warn_and_work():
    actor = discrete_actor()
    td = make_batch(actor)
    td.rename_key_("advantage", "adv")
    with pytest.warns(DeprecationWarning, match=r"set_keys\(advantage='adv'\)"):
        loss = ClipPPOLoss(actor, critic(), advantage_key="adv")
    assert loss.tensor_keys.advantage == "adv"
    loss(td)
    with pytest.warns(DeprecationWarning, match="value_target_key.*value_key.*set_keys"):
        loss = ClipPPOLoss(actor, critic(), value_target_key="vt", value_key="v")
    assert (loss.tensor_keys.value_target, loss.tensor_keys.value) == ("vt", "v")


def test_coef_spellings():
    actor = discrete_actor()
    td = make_batch(actor)
    c = critic()
    a = ClipPPOLoss(actor, c, entropy_coef=0.3, critic_coef=0.2)(td)
    b = ClipPPOLoss(actor, c, entropy_coeff=0.3, critic_coeff=0.2)(td)
    assert_close(a["loss_entropy"], b["loss_entropy"])
    assert_close(a["loss_critic"], b["loss_critic"])
    with pytest.raises(TypeError, match=r"entropy_coef=0\.1 and entropy_coeff=0\.2"):
        ClipPPOLoss(actor, c, entropy_coef=0.1, entropy_coeff=0.2)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clip_epsilon": 0.0}, r"clip_epsilon must be a number in \(0, 1\), got 0.0"),
        ({"clip_epsilon": 1.0}, r"clip_epsilon must be a number in \(0, 1\), got 1.0"),
        ({"clip_epsilon": -0.2}, "clip_epsilon must be"),
        ({"samples_mc_entropy": 0}, "samples_mc_entropy must be an integer >= 1, got 0"),
        ({"samples_mc_entropy": 1.5}, "samples_mc_entropy must be an integer"),
        (
            {"loss_critic_type": "huber"},
            r"loss_critic_type must be one of \('l1', 'l2', 'smooth_l1'\)",
        ),
        ({"reduction": "avg"}, "reduction must be one of"),
        ({"clip_value": -1.0}, "clip_value must be True, False, None or a finite float > 0"),
        ({"entropy_coef": float("nan")}, "entropy_coef must be a finite number"),
        ({"critic_coef": -1.0}, "critic_coef must be a finite number >= 0"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClipPPOLoss(discrete_actor(), critic(), **kwargs)


def test_bad_networks():
    with pytest.raises(TypeError, match="actor_network must be a probabilistic"):
        ClipPPOLoss(nn.Linear(3, 2), critic())
    # TorchRL 0.14.1 accepts critic_network=None (actor-only use, critic_coeff then 0);
    # asking for a critic loss without a critic is still refused
    with pytest.raises(TypeError, match="critic_network is missing"):
        ClipPPOLoss(discrete_actor(), None, critic_coef=1.0)
    with pytest.raises(ValueError, match="clip_value=True takes its threshold from clip_epsilon"):
        PPOLoss(discrete_actor(), critic(), clip_value=True)


def _bad_input_cases():
    def drop(key):
        return lambda td: td.exclude(key)

    def setv(key, fn):
        def f(td):
            td = td.clone()
            td.set(key, fn(td.get(key)))
            return td

        return f

    def nan_at(key):
        def fn(v):
            v = v.clone()
            v.view(-1)[1] = float("nan")
            return v

        return setv(key, fn)

    return [
        (
            drop("action_log_prob"),
            KeyError,
            r"no 'action_log_prob' entry .*Present keys: \[.*'action'.*set_keys\(sample_log_prob=",
        ),
        (drop("action"), KeyError, r"no 'action' entry"),
        (drop("value_target"), KeyError, r"no 'value_target' entry"),
        (
            setv("advantage", lambda v: v.squeeze(-1)),
            ValueError,
            r"'advantage' entry has shape \(8,\), expected \(8, 1\).*unsqueeze\(-1\)",
        ),
        (
            setv("value_target", lambda v: v.expand(8, 2).clone()),
            ValueError,
            r"'value_target' entry has shape \(8, 2\), expected \(8, 1\)",
        ),
        (
            setv("action_log_prob", lambda v: v.unsqueeze(-1)),
            ValueError,
            r"log-prob at 'action_log_prob' has shape \(8, 1\), expected the batch shape \(8,\)",
        ),
        (
            setv("action_log_prob", lambda v: v.clone().requires_grad_()),
            ValueError,
            r"stored 'action_log_prob' requires grad",
        ),
        (nan_at("advantage"), ValueError, r"'advantage' entry holds 1 non-finite"),
        (nan_at("action_log_prob"), ValueError, r"'action_log_prob' entry holds 1 non-finite"),
        (nan_at("value_target"), ValueError, r"'value_target' entry holds 1 non-finite"),
        (
            setv("advantage", lambda v: v.fill_(math.inf)),
            ValueError,
            r"'advantage' entry holds 8 non-finite",
        ),
    ]


@pytest.mark.parametrize("corrupt, exc, match", _bad_input_cases())
def test_bad_input_is_named_and_leaves_data_untouched(corrupt, exc, match):
    actor = discrete_actor()
    td = corrupt(make_batch(actor))
    before = {k: v.clone() for k, v in td.items(include_nested=True, leaves_only=True)}
    with pytest.raises(exc, match=match):
        ClipPPOLoss(actor, critic())(td)
    after = dict(td.items(include_nested=True, leaves_only=True))
    assert set(before) == set(after)
    for k, v in before.items():
        assert torch.equal(v.nan_to_num(), after[k].nan_to_num()), k


def test_action_requiring_grad_raises():
    actor = normal_actor()
    td = make_batch(actor)
    td["action"] = td["action"].clone().requires_grad_()
    with pytest.raises(ValueError, match=r"stored 'action' requires grad.*torch.no_grad"):
        ClipPPOLoss(actor, critic())(td)


def test_nan_in_old_value_and_critic_output_raise():
    actor = discrete_actor()
    td = make_batch(actor)
    td["state_value"][0] = float("nan")
    with pytest.raises(ValueError, match="'state_value' entry holds 1 non-finite"):
        ClipPPOLoss(actor, critic(), clip_value=0.1)(td)
    broken = nn.Linear(OBS, 1)
    with torch.no_grad():
        broken.bias.fill_(math.nan)
    with pytest.raises(ValueError, match="'state_value' entry holds 8 non-finite"):
        ClipPPOLoss(actor, critic(broken))(make_batch(actor))


def test_wrong_critic_output_shape_and_key():
    actor = discrete_actor()
    td = make_batch(actor)
    wide = TensorDictModule(nn.Linear(OBS, 2), ["observation"], ["state_value"])
    with pytest.raises(ValueError, match=r"critic's output 'state_value' has shape \(8, 2\)"):
        ClipPPOLoss(actor, wide)(td)
    other = TensorDictModule(nn.Linear(OBS, 1), ["observation"], ["value"])
    with pytest.raises(KeyError, match=r"critic does not write 'state_value'.*\['value'\]"):
        ClipPPOLoss(actor, other)(td)


def test_multi_dim_action_with_plain_normal_raises():
    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(
            nn.Sequential(nn.Linear(OBS, 4), NormalParamExtractor()),
            ["observation"],
            ["loc", "scale"],
        ),
        ProbabilisticTensorDictModule(
            ["loc", "scale"], ["action"], distribution_class=D.Normal, return_log_prob=True
        ),
    )
    td = make_batch(actor)
    td["action_log_prob"] = td["action_log_prob"].sum(-1)
    with pytest.raises(ValueError, match=r"log-probs of shape \(8, 2\).*IndependentNormal"):
        ClipPPOLoss(actor, critic())(td)


def test_not_a_tensordict_and_no_batch():
    loss = ClipPPOLoss(discrete_actor(), critic())
    with pytest.raises(TypeError, match="expects a TensorDict, got dict"):
        loss({"observation": torch.zeros(3)})
    with pytest.raises(ValueError, match="no batch dimension"):
        loss(TensorDict({"observation": torch.zeros(3)}, []))


# --------------------------------------------------------------------------- masks
def test_mask_excludes_samples_everywhere():
    actor_net, critic_net = nn.Linear(OBS, 4), nn.Linear(OBS, 1)
    actor = discrete_actor(actor_net)
    td = make_batch(actor, (10,))
    mask = torch.tensor([True] * 6 + [False] * 4)
    padded = td.clone()
    padded["shifted_valid"] = mask
    padded["advantage"][~mask] = float("nan")  # padding may hold garbage
    loss = ClipPPOLoss(actor, critic(critic_net), normalize_advantage=True, clip_value=0.1)
    got = loss(padded)
    want = loss(td[:6])
    for key in want.keys():
        assert_close(got[key], want[key], msg=key)
    loss.set_keys(mask="valid")
    with pytest.raises(KeyError, match="mask key was set to 'valid'"):
        loss(padded)
    padded["valid"] = mask.float()
    with pytest.raises(ValueError, match="must be a bool tensor"):
        loss(padded)


# --------------------------------------------------------------------------- modes
def test_functional_and_plain_modes_agree_and_train_same_tensors():
    actor_net, critic_net = nn.Linear(OBS, 4), nn.Linear(OBS, 1)
    actor, crit = discrete_actor(actor_net), critic(critic_net)
    td = make_batch(actor)
    f = ClipPPOLoss(actor, crit, functional=True)
    p = ClipPPOLoss(actor, crit, functional=False)
    assert f.functional and not p.functional
    of, op = f(td), p(td)
    for key in of.keys():
        assert_close(of[key], op[key])
    module_params = {id(t) for t in list(actor.parameters()) + list(crit.parameters())}
    for loss in (f, p):
        assert {id(t) for t in loss.parameters()} == module_params
        assert len(list(loss.parameters())) == len(module_params)
    # a step of an optimizer built on loss.parameters() moves the modules themselves
    opt = torch.optim.SGD(f.parameters(), lr=0.5)
    before = actor_net.weight.detach().clone()
    opt.zero_grad()
    _total(f(td)).backward()
    opt.step()
    assert not torch.equal(before, actor_net.weight)
    assert_close(p(td)["loss_objective"], f(td)["loss_objective"])


def test_state_dict_holds_each_tensor_once():
    loss = ClipPPOLoss(discrete_actor(), critic())
    # each parameter once, plus the schedulable coefficients (0-d buffers, as in TorchRL)
    coefficients = ["clip_epsilon", "critic_coeff", "entropy_coeff"]
    assert sorted(loss.state_dict()) == sorted(
        [n for n, _ in loss.named_parameters()] + coefficients
    )
    assert len(loss.state_dict()) == 4 + 3


# --------------------------------------------------------------------------- shared trunk
class _Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(OBS, 6), nn.Tanh())

    def forward(self, x):
        return self.net(x)


def _shared_model():
    trunk = TensorDictModule(_Trunk(), ["observation"], ["hidden"])
    actor_head = ProbabilisticTensorDictSequential(
        TensorDictModule(nn.Linear(6, 4), ["hidden"], ["logits"]),
        ProbabilisticTensorDictModule(
            ["logits"], ["action"], distribution_class=D.Categorical, return_log_prob=True
        ),
    )
    value_head = TensorDictModule(nn.Linear(6, 1), ["hidden"], ["state_value"])
    return trunk, actor_head, value_head


def _option(option: int):
    trunk, actor_head, value_head = _shared_model()
    # acting uses the flattened policy (trunk, head, distribution): tensordict cannot call a
    # probabilistic sequence nested in another one, though get_dist(), all the loss uses, can
    acting = ProbabilisticTensorDictSequential(trunk, *actor_head.module)
    if option == 1:  # two calls on the common module
        return trunk, acting, TensorDictSequential(trunk, value_head), acting
    # one call: the whole model (which samples an action on its way) then the head
    model = TensorDictSequential(trunk, actor_head, value_head)
    return trunk, ProbabilisticTensorDictSequential(model, actor_head), value_head, acting


@pytest.mark.parametrize("option", [1, 2])
@pytest.mark.parametrize("functional", [True, False])
def test_separate_losses_blocks_critic_gradient_into_trunk(option, functional):
    trunk, policy, value, acting = _option(option)
    td = make_batch(acting)
    trunk_params = list(trunk.parameters())
    for separate in (False, True):
        loss = ClipPPOLoss(policy, value, separate_losses=separate, functional=functional)
        out = loss(td)
        grads = torch.autograd.grad(
            out["loss_critic"], trunk_params, allow_unused=True, retain_graph=True
        )
        total = sum(0.0 if g is None else float(g.abs().sum()) for g in grads)
        if separate:
            assert total == 0.0
        else:
            assert total > 0.0
        # the policy loss trains the trunk in both cases
        grads = torch.autograd.grad(out["loss_objective"], trunk_params, retain_graph=True)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        # the value head is trained by the critic loss in both cases
        head = [p for p in value.parameters() if all(p is not t for t in trunk_params)]
        grads = torch.autograd.grad(out["loss_critic"], head)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_shared_trunk_options_agree_and_score_the_stored_action():
    trunk, actor_head, value_head = _shared_model()
    acting = ProbabilisticTensorDictSequential(trunk, *actor_head.module)
    td = make_batch(acting)
    base = ClipPPOLoss(acting, TensorDictSequential(trunk, value_head))(td)
    # option 2 on the same modules: the model samples fresh actions inside, yet every
    # result must match option 1, whatever the random draws.
    model = TensorDictSequential(trunk, actor_head, value_head)
    loss2 = ClipPPOLoss(ProbabilisticTensorDictSequential(model, actor_head), value_head)
    for seed in range(3):
        torch.manual_seed(seed)
        out = loss2(td)
        for key in ("loss_objective", "loss_critic", "loss_entropy", "kl_approx"):
            assert_close(out[key], base[key], msg=key)
    # hand check of the objective on the stored action
    hidden = trunk.module(td["observation"])
    logp = torch.log_softmax(actor_head.module[0].module(hidden), -1)
    lw = logp.gather(-1, td["action"][:, None]).squeeze(-1) - td["action_log_prob"]
    r = lw.exp()[:, None]
    a = td["advantage"]
    assert_close(base["loss_objective"], (-torch.minimum(r * a, r.clamp(0.8, 1.2) * a)).mean())


def test_option_two_without_advantage_explains_itself():
    _, policy, value, acting = _option(2)
    td = make_batch(acting).exclude("advantage")
    td["next"] = TensorDict(
        {
            "observation": td["observation"],
            "reward": torch.ones(8, 1),
            "done": torch.zeros(8, 1, dtype=torch.bool),
            "terminated": torch.zeros(8, 1, dtype=torch.bool),
        },
        [8],
    )
    with pytest.raises(KeyError, match="compute the advantage beforehand"):
        ClipPPOLoss(policy, value)(td)


# --------------------------------------------------------------------------- advantage inside
def _rollout(actor, n_envs=3, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n_envs, t + 1, OBS, generator=g)
    td = TensorDict({"observation": obs[:, :-1]}, [n_envs, t])
    done = torch.rand(n_envs, t, 1, generator=g) < 0.2
    term = done & (torch.rand(n_envs, t, 1, generator=g) < 0.5)
    td["next"] = TensorDict(
        {
            "observation": obs[:, 1:],
            "reward": torch.randn(n_envs, t, 1, generator=g),
            "done": done,
            "terminated": term,
        },
        [n_envs, t],
    )
    with torch.no_grad():
        actor(td)
    return td


def test_advantage_computed_inside_matches_gae_beforehand():
    from ppokit import GAE

    actor, crit = discrete_actor(), critic()
    td = _rollout(actor)
    loss = ClipPPOLoss(actor, crit)
    inside = loss(td)
    assert "advantage" not in td.keys(), "the input must not be modified"
    given = td.clone()
    GAE(gamma=0.99, lmbda=0.95, value_network=crit)(given)
    outside = loss(given)
    for key in inside.keys():
        assert_close(inside[key], outside[key], msg=key)
    # the estimator runs on detached critic parameters: only the critic loss trains them
    inside = loss(td)
    grads = torch.autograd.grad(
        inside["loss_objective"], list(crit.parameters()), allow_unused=True
    )
    assert all(g is None or float(g.abs().sum()) == 0 for g in grads)
    # another estimator changes the result, and keys are forwarded to it
    loss.make_value_estimator("td0", gamma=0.5)
    assert not torch.allclose(loss(td)["loss_objective"], outside["loss_objective"])
    with pytest.raises(ValueError, match="td42"):
        loss.make_value_estimator("td42")


@pytest.mark.parametrize("functional", [True, False])
def test_estimator_follows_set_keys(functional):
    actor, crit = discrete_actor(), critic()
    td = _rollout(actor)
    expected = ClipPPOLoss(actor, crit, functional=functional)(td)
    renamed = td.clone()
    renamed.rename_key_(("next", "reward"), ("next", "r"))
    loss = ClipPPOLoss(actor, crit, functional=functional)
    loss.set_keys(reward="r")
    _ = loss.value_estimator
    loss.set_keys(reward="r")
    assert_close(loss(renamed)["loss_objective"], expected["loss_objective"])


# --------------------------------------------------------------------------- meta-RL
def test_second_order_meta_gradient_matches_torch_func():
    torch.set_default_dtype(torch.float64)
    try:
        actor_net, critic_net = nn.Linear(OBS, 4), nn.Linear(OBS, 1)
        actor, crit = discrete_actor(actor_net), critic(critic_net)
        inner_td = make_batch(actor, (6,), seed=1, dtype=torch.float64)
        outer_td = make_batch(actor, (6,), seed=2, dtype=torch.float64)
        lr = 0.3
        loss = ClipPPOLoss(actor, crit, entropy_coef=0.1)
        params = TensorDict.from_module(loss)
        # the parameters; the loss's coefficient buffers are constants of the loss
        keys = [k for k in params.keys(True, True) if params.get(k).requires_grad]
        leaves = [params.get(k) for k in keys]
        assert len(leaves) == 4
        inner = _total(loss(inner_td))
        grads = torch.autograd.grad(inner, leaves, create_graph=True)
        adapted = params.clone(False)
        for key, g in zip(keys, grads):
            adapted.set(key, params.get(key) - lr * g)
        with adapted.to_module(loss):
            outer = _total(loss(outer_td))
        meta = torch.autograd.grad(outer, leaves)

        # torch.func reference: the same PPO loss written as a pure function of raw weights
        def ppo(p, td):
            logits = torch.func.functional_call(
                actor_net, {"weight": p[0], "bias": p[1]}, (td["observation"],)
            )
            v = torch.func.functional_call(
                critic_net, {"weight": p[2], "bias": p[3]}, (td["observation"],)
            )
            logp = torch.log_softmax(logits, -1)
            lw = logp.gather(-1, td["action"][:, None]) - td["action_log_prob"][:, None]
            a = td["advantage"]
            obj = -torch.minimum(lw.exp() * a, lw.exp().clamp(0.8, 1.2) * a).mean()
            ent = -(logp.exp() * logp).sum(-1).mean()
            crit_loss = F.smooth_l1_loss(v, td["value_target"])
            return obj - 0.1 * ent + crit_loss

        def outer_of(p):
            g = torch.func.grad(ppo)(p, inner_td)
            return ppo(tuple(x - lr * gx for x, gx in zip(p, g)), outer_td)

        raw = (actor_net.weight, actor_net.bias, critic_net.weight, critic_net.bias)
        ref = torch.func.grad(outer_of)(tuple(t.detach() for t in raw))
        by_id = dict(zip([id(t) for t in leaves], meta))
        for r, t in zip(ref, raw):
            assert_close(by_id[id(t)], r)
        # the second-order term matters: a first-order answer would differ
        assert not torch.allclose(
            by_id[id(raw[0])], torch.autograd.grad(_total(loss(outer_td)), [raw[0]])[0]
        )
    finally:
        torch.set_default_dtype(torch.float32)


def test_deterministic_interaction_does_not_change_scoring():
    actor = discrete_actor()
    td = make_batch(actor)
    loss = ClipPPOLoss(actor, critic())
    base = loss(td)
    with set_interaction_type(InteractionType.DETERMINISTIC):
        again = loss(td)
    assert_close(base["loss_objective"], again["loss_objective"])


def test_no_warnings_on_the_happy_path():
    actor = discrete_actor()
    td = make_batch(actor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ClipPPOLoss(actor, critic())(td)
