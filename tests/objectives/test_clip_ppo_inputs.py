"""ClipPPOLoss's keys (set_keys, TorchRL's spellings) and its errors on bad options and data."""

from __future__ import annotations

import math

import pytest
import torch
from loss_builders import OBS, critic, discrete_actor, make_batch, normal_actor
from tensordict import TensorDict
from tensordict.nn import (
    NormalParamExtractor,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import distributions as D
from torch import nn
from torch.testing import assert_close

from ppokit import ClipPPOLoss, PPOLoss


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
