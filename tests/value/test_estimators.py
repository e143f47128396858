"""ppokit.value.estimators: TensorDict plumbing around the functional math."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, set_skip_existing
from torch import nn

from ppokit.value.estimators import (
    GAE,
    TD0Estimate,
    TD1Estimate,
    TDLambdaEstimate,
    ValueEstimators,
    make_value_estimator,
)
from ppokit.value.functional import (
    generalized_advantage_estimate,
    td0_return_estimate,
    td1_return_estimate,
    td_lambda_return_estimate,
)


def make_critic(seed=0):
    torch.manual_seed(seed)
    return TensorDictModule(
        nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1)),
        in_keys=["observation"],
        out_keys=["state_value"],
    )


def make_rollout(batch=(4,), steps=12, seed=0, done_prob=0.15):
    gen = torch.Generator().manual_seed(seed)
    shape = (*batch, steps)
    terminated = torch.rand(*shape, 1, generator=gen) < done_prob / 2
    done = terminated | (torch.rand(*shape, 1, generator=gen) < done_prob / 2)
    return TensorDict(
        {
            "observation": torch.randn(*shape, 3, generator=gen),
            "next": {
                "observation": torch.randn(*shape, 3, generator=gen),
                "reward": torch.randn(*shape, 1, generator=gen),
                "done": done,
                "terminated": terminated,
            },
        },
        batch_size=shape,
    )


def values_of(critic, td):
    with torch.no_grad():
        return critic.module(td["observation"]), critic.module(td["next", "observation"])


# ---------------------------------------------------------------------------
# modules vs functional
# ---------------------------------------------------------------------------


def test_gae_module_matches_functional_and_writes_values():
    critic, td = make_critic(), make_rollout()
    out = GAE(gamma=0.97, lmbda=0.9, value_network=critic)(td)
    assert out is td
    value, next_value = values_of(critic, td)
    adv, target = generalized_advantage_estimate(
        0.97, 0.9, value, next_value, td["next", "reward"], td["next", "done"],
        td["next", "terminated"],
    )  # fmt: skip
    torch.testing.assert_close(td["advantage"], adv)
    torch.testing.assert_close(td["value_target"], target)
    torch.testing.assert_close(td["state_value"], value)
    torch.testing.assert_close(td["next", "state_value"], next_value)
    assert td["advantage"].shape == (4, 12, 1)
    assert not td["advantage"].requires_grad


@pytest.mark.parametrize(
    "cls,kwargs,fn",
    [
        (
            TDLambdaEstimate,
            {"gamma": 0.9, "lmbda": 0.7},
            lambda nv, r, d, t: td_lambda_return_estimate(0.9, 0.7, nv, r, d, t),
        ),
        (TD1Estimate, {"gamma": 0.9}, lambda nv, r, d, t: td1_return_estimate(0.9, nv, r, d, t)),
        (TD0Estimate, {"gamma": 0.9}, lambda nv, r, d, t: td0_return_estimate(0.9, nv, r, t)),
    ],
)
def test_td_modules_match_functional(cls, kwargs, fn):
    critic, td = make_critic(), make_rollout(batch=(2, 3))
    cls(value_network=critic, **kwargs)(td)
    value, next_value = values_of(critic, td)
    target = fn(next_value, td["next", "reward"], td["next", "done"], td["next", "terminated"])
    torch.testing.assert_close(td["value_target"], target)
    torch.testing.assert_close(td["advantage"], target - value)


def test_value_network_none_reads_values_from_data():
    critic, td = make_critic(), make_rollout()
    GAE(gamma=0.9, lmbda=0.9, value_network=critic)(td)
    expected = td["advantage"].clone()
    data = td.exclude("advantage", "value_target", "observation", ("next", "observation"))
    GAE(gamma=0.9, lmbda=0.9, value_network=None)(data)
    torch.testing.assert_close(data["advantage"], expected)


def test_missing_terminated_falls_back_to_done():
    critic, td = make_critic(), make_rollout()
    td["next", "terminated"] = td["next", "done"].clone()
    GAE(gamma=0.9, lmbda=0.9, value_network=critic)(td)
    expected = td["advantage"].clone()
    del td["next", "terminated"]
    GAE(gamma=0.9, lmbda=0.9, value_network=critic)(td)
    torch.testing.assert_close(td["advantage"], expected)


def test_time_dim_first_and_named_time_dim():
    critic, td = make_critic(), make_rollout(batch=(3,), steps=7)
    GAE(gamma=0.9, lmbda=0.8, value_network=critic)(td)
    td_t = make_rollout(batch=(3,), steps=7).transpose(0, 1).contiguous()  # [T, B]
    GAE(gamma=0.9, lmbda=0.8, value_network=critic, time_dim=0)(td_t)
    torch.testing.assert_close(td_t["advantage"].transpose(0, 1), td["advantage"])
    named = make_rollout(batch=(3,), steps=7).transpose(0, 1).contiguous()
    named.refine_names("time", None)
    GAE(gamma=0.9, lmbda=0.8, value_network=critic)(named)
    torch.testing.assert_close(named["advantage"], td_t["advantage"])


def test_average_gae_standardises_advantage_only():
    critic, td = make_critic(), make_rollout(batch=(8,), steps=20)
    raw = GAE(gamma=0.99, lmbda=0.95, value_network=critic)(td.clone())
    td = GAE(gamma=0.99, lmbda=0.95, value_network=critic, average_gae=True)(td)
    adv = raw["advantage"]
    torch.testing.assert_close(td["advantage"], (adv - adv.mean()) / adv.std())
    torch.testing.assert_close(td["value_target"], raw["value_target"])


# ---------------------------------------------------------------------------
# parameters, gradients, skip_existing
# ---------------------------------------------------------------------------


def test_params_are_used_and_module_is_untouched():
    critic, td = make_critic(), make_rollout()
    params = TensorDict.from_module(critic).detach().clone()
    params["module", "2", "bias"] += 1.0  # V shifts by +1 everywhere
    before = [p.clone() for p in critic.parameters()]
    GAE(gamma=0.9, lmbda=0.9, value_network=critic)(td, params=params)
    value, next_value = values_of(critic, td)
    adv, _ = generalized_advantage_estimate(
        0.9, 0.9, value + 1, next_value + 1, td["next", "reward"], td["next", "done"],
        td["next", "terminated"],
    )  # fmt: skip
    torch.testing.assert_close(td["advantage"], adv)
    for p, b in zip(critic.parameters(), before):
        assert torch.equal(p, b)


def test_target_params_give_next_values():
    critic, td = make_critic(), make_rollout()
    params = TensorDict.from_module(critic).detach().clone()
    target = params.clone()
    target["module", "2", "bias"] += 2.0
    TD0Estimate(gamma=0.5, value_network=critic)(td, params=params, target_params=target)
    _, next_value = values_of(critic, td)
    torch.testing.assert_close(td["next", "state_value"], next_value + 2.0)
    expected = td0_return_estimate(
        0.5, next_value + 2, td["next", "reward"], td["next", "terminated"]
    )
    torch.testing.assert_close(td["value_target"], expected)


def test_differentiable_flag():
    critic, td = make_critic(), make_rollout()
    GAE(gamma=0.9, lmbda=0.9, value_network=critic, differentiable=True)(td)
    assert td["advantage"].requires_grad
    assert not td["next", "state_value"].requires_grad  # semi-gradient target
    td["advantage"].sum().backward()
    assert all(p.grad is not None for p in critic.parameters())
    critic.zero_grad()
    td2 = GAE(gamma=0.9, lmbda=0.9, value_network=critic)(make_rollout())
    assert not td2["advantage"].requires_grad and not td2["state_value"].requires_grad


def test_skip_existing():
    critic, td = make_critic(), make_rollout()
    td["state_value"] = torch.zeros(4, 12, 1)
    td["next", "state_value"] = torch.ones(4, 12, 1)
    reused = GAE(gamma=0.5, lmbda=0.5, value_network=critic, skip_existing=True)(td.clone())
    torch.testing.assert_close(reused["state_value"], torch.zeros(4, 12, 1))
    expected = GAE(gamma=0.5, lmbda=0.5, value_network=None)(td.clone())
    torch.testing.assert_close(reused["advantage"], expected["advantage"])
    recomputed = GAE(gamma=0.5, lmbda=0.5, value_network=critic, skip_existing=False)(td.clone())
    torch.testing.assert_close(recomputed["state_value"], values_of(critic, td)[0])
    with set_skip_existing(True):  # None follows the global tensordict setting
        followed = GAE(gamma=0.5, lmbda=0.5, value_network=critic)(td.clone())
    torch.testing.assert_close(followed["advantage"], expected["advantage"])


# ---------------------------------------------------------------------------
# keys and masks
# ---------------------------------------------------------------------------


def test_set_keys_renames_everything():
    critic = TensorDictModule(make_critic().module, ["observation"], ["v"])
    td = make_rollout()
    ref = GAE(gamma=0.9, lmbda=0.9, value_network=make_critic())(td.clone())
    renamed = td.rename_key_(("next", "reward"), ("next", "r"))
    renamed.rename_key_(("next", "done"), ("next", "d"))
    renamed.rename_key_(("next", "terminated"), ("next", "t"))
    est = GAE(gamma=0.9, lmbda=0.9, value_network=critic).set_keys(
        advantage="A", value_target="G", value="v", reward="r", done="d", terminated="t"
    )
    est(renamed)
    torch.testing.assert_close(renamed["A"], ref["advantage"])
    torch.testing.assert_close(renamed["G"], ref["value_target"])
    assert est.tensor_keys.advantage == "A"


def test_set_keys_unknown_name():
    with pytest.raises(ValueError, match=r"Unknown key name\(s\) \['bogus'\].*advantage"):
        GAE(gamma=0.9, lmbda=0.9, value_network=None).set_keys(bogus="x")


@pytest.mark.parametrize("cls", [GAE, TDLambdaEstimate, TD1Estimate, TD0Estimate])
def test_mask_key(cls):
    critic, td = make_critic(), make_rollout(batch=(3,), steps=10)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, 7:] = False  # a short sequence, right-padded
    td["mask"] = mask
    kwargs = {"gamma": 0.9} if cls in (TD0Estimate, TD1Estimate) else {"gamma": 0.9, "lmbda": 0.8}
    cls(value_network=critic, **kwargs).set_keys(mask="mask")(td)
    assert (td["advantage"][0, 7:] == 0).all()
    torch.testing.assert_close(td["value_target"][0, 7:], td["state_value"][0, 7:])
    # the short sequence alone (its last valid step ends the window) gives the same numbers
    short = make_rollout(batch=(3,), steps=10)[0:1, :7]
    cls(value_network=critic, **kwargs)(short)
    torch.testing.assert_close(td["advantage"][0:1, :7], short["advantage"])
    torch.testing.assert_close(td["value_target"][0:1, :7], short["value_target"])
    # the unmasked rows are untouched by the mask
    full = cls(value_network=critic, **kwargs)(make_rollout(batch=(3,), steps=10))
    torch.testing.assert_close(td["advantage"][1:], full["advantage"][1:])


def test_mask_ignores_nan_in_padding():
    td = make_rollout(batch=(2,), steps=5)
    td["state_value"] = torch.randn(2, 5, 1)
    td["next", "state_value"] = torch.randn(2, 5, 1)
    td["state_value"][1, 3:] = float("nan")
    td["next", "reward"][1, 3:] = float("nan")
    td["valid"] = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    GAE(gamma=0.9, lmbda=0.9, value_network=None, average_gae=True).set_keys(mask="valid")(td)
    adv = td["advantage"]
    assert torch.isfinite(adv).all()
    valid = adv[td["valid"]]
    torch.testing.assert_close(valid.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(valid.std(), torch.tensor(1.0))


# ---------------------------------------------------------------------------
# make_value_estimator and the enum
# ---------------------------------------------------------------------------


def test_make_value_estimator():
    critic = make_critic()
    assert isinstance(make_value_estimator("gae", value_network=critic), GAE)
    est = make_value_estimator(ValueEstimators.TDLambda, value_network=critic, lmbda=0.5)
    assert isinstance(est, TDLambdaEstimate) and est.gamma == 0.99 and est.lmbda == 0.5
    assert isinstance(make_value_estimator("td0", value_network=critic), TD0Estimate)
    assert isinstance(make_value_estimator("TD1", value_network=critic), TD1Estimate)
    assert [m.value for m in ValueEstimators] == [
        "gae",
        "td_lambda",
        "td0",
        "td1",
        "magae",
        "vtrace",
    ]
    with pytest.raises(ValueError, match=r"Unknown value estimator 'retrace'.*'td_lambda'"):
        make_value_estimator("retrace", value_network=critic)


def test_torchrl_enum_builds_torchrl_estimator_and_ppokit_names_build_ppokit_ones():
    # TorchRL's enum member names TorchRL's estimator class (what TorchRL's losses build and
    # its users check with isinstance); a string or ppokit's member builds ppokit's class.
    pytest.importorskip("torchrl")
    from torchrl.objectives import ValueEstimators as TorchRLEstimators
    from torchrl.objectives import value as torchrl_value

    expected = {
        "TD0": torchrl_value.TD0Estimator,
        "TD1": torchrl_value.TD1Estimator,
        "TDLambda": torchrl_value.TDLambdaEstimator,
        "GAE": torchrl_value.GAE,
        "MAGAE": torchrl_value.MultiAgentGAE,
        "VTrace": torchrl_value.VTrace,
    }
    actor = TensorDictModule(nn.Linear(1, 1), ["observation"], ["loc"])
    for member in TorchRLEstimators:
        est = make_value_estimator(member, value_network=None, actor_network=actor)
        assert type(est) is expected[member.name], member
        assert float(est.gamma) == pytest.approx(0.99)  # the defaults are TorchRL's
        if member.name in ("GAE", "TDLambda", "MAGAE"):
            assert float(est.lmbda) == pytest.approx(0.95)
    assert isinstance(make_value_estimator("TDLambda", value_network=None), TDLambdaEstimate)
    assert isinstance(
        make_value_estimator(ValueEstimators.TDLambda, value_network=None), TDLambdaEstimate
    )


# ---------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------


def test_missing_key_lists_present_keys():
    td = make_rollout()
    del td["next", "reward"]
    with pytest.raises(KeyError, match=r"\('next', 'reward'\) is missing.*present keys.*'done'"):
        GAE(gamma=0.9, lmbda=0.9, value_network=make_critic())(td)
    with pytest.raises(KeyError, match=r"'state_value' is missing"):
        GAE(gamma=0.9, lmbda=0.9, value_network=None)(make_rollout())
    td = make_rollout()
    del td["next", "observation"]
    with pytest.raises(KeyError, match=r"\('next', 'observation'\) is missing"):
        GAE(gamma=0.9, lmbda=0.9, value_network=make_critic())(td)


def test_reward_without_trailing_dim():
    td = make_rollout()
    td["next", "reward"] = td["next", "reward"][..., 0]
    with pytest.raises(ValueError, match=r"reward .* shape \(4, 12\).*reward.unsqueeze\(-1\)"):
        GAE(gamma=0.9, lmbda=0.9, value_network=make_critic())(td)


def test_done_without_trailing_dim():
    td = make_rollout()
    td["next", "done"] = td["next", "done"][..., 0]
    with pytest.raises(ValueError, match=r"done .* shape \(4, 12\).*done.unsqueeze\(-1\)"):
        TD1Estimate(gamma=0.9, value_network=make_critic())(td)


def test_value_network_with_wrong_output_shape():
    critic = TensorDictModule(lambda x: x.sum(-1), ["observation"], ["state_value"])
    with pytest.raises(ValueError, match=r"value 'state_value' has shape \(4, 12\).*trailing"):
        GAE(gamma=0.9, lmbda=0.9, value_network=critic)(make_rollout())


@pytest.mark.parametrize("key", [("next", "reward"), "state_value", ("next", "state_value")])
def test_non_finite_inputs_name_the_key(key):
    td = make_rollout()
    td["state_value"] = torch.randn(4, 12, 1)
    td["next", "state_value"] = torch.randn(4, 12, 1)
    td["next", "done"][:] = False
    td["next", "terminated"][:] = False
    td[key][1, 3] = float("inf") if key == "state_value" else float("nan")
    pattern = repr(key).replace("(", ".").replace(")", ".")
    with pytest.raises(ValueError, match=rf"{pattern} holds 1"):
        GAE(gamma=0.9, lmbda=0.9, value_network=None)(td)


def test_nan_next_value_at_terminal_step_is_ignored():
    td = make_rollout()
    td["state_value"] = torch.randn(4, 12, 1)
    td["next", "state_value"] = torch.randn(4, 12, 1)
    td["next", "done"][0, 4] = td["next", "terminated"][0, 4] = True
    td["next", "state_value"][0, 4] = float("nan")
    GAE(gamma=0.9, lmbda=0.9, value_network=None)(td)
    assert torch.isfinite(td["advantage"]).all()


def test_bad_constructor_and_batch():
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\]"):
        GAE(gamma=1.1, lmbda=0.9, value_network=None)
    with pytest.raises(ValueError, match=r"lmbda must lie in \[0, 1\]"):
        TDLambdaEstimate(gamma=0.9, lmbda=torch.tensor(-0.5), value_network=None)
    td = TensorDict({"next": {"reward": torch.zeros(1)}}, batch_size=[])
    with pytest.raises(ValueError, match=r"batch dims \[\*B, T\]"):
        GAE(gamma=0.9, lmbda=0.9, value_network=None)(td)
    with pytest.raises(ValueError, match=r"time_dim=2 is out of range"):
        GAE(gamma=0.9, lmbda=0.9, value_network=make_critic(), time_dim=2)(make_rollout())
