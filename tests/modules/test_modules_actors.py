"""Actors and value operators: keys written, numbers agree with the distribution, shared trunk."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictSequential,
    set_interaction_type,
)
from torch import nn

from ppokit.modules.actors import (
    ActorCriticOperator,
    ActorValueOperator,
    ProbabilisticActor,
    ValueOperator,
)
from ppokit.modules.distributions import (
    Categorical,
    IndependentNormal,
    NormalParamExtractor,
    OneHotCategorical,
    TanhNormal,
)
from ppokit.modules.mlp import MLP


def _obs(batch: int = 6, dim: int = 3) -> TensorDict:
    return TensorDict(observation=torch.randn(batch, dim), batch_size=[batch])


def _gaussian_net(obs_dim: int = 3, act_dim: int = 2) -> nn.Module:
    return nn.Sequential(MLP(obs_dim, 2 * act_dim, num_cells=(8,)), NormalParamExtractor())


def test_actor_end_to_end_tanh_normal():
    torch.manual_seed(0)
    net = _gaussian_net()
    actor = ProbabilisticActor(
        net,
        in_keys=["observation"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -2.0, "high": 2.0},
        return_log_prob=True,
    )
    td = actor(_obs())
    assert set(td.keys()) == {"observation", "loc", "scale", "action", "action_log_prob"}
    loc, scale = net(td["observation"])
    torch.testing.assert_close(td["loc"], loc)
    torch.testing.assert_close(td["scale"], scale)
    # the stored log-prob is the distribution's log-prob of the stored action
    ref = TanhNormal(loc, scale, low=-2.0, high=2.0).log_prob(td["action"])
    torch.testing.assert_close(td["action_log_prob"], ref)
    torch.testing.assert_close(actor.get_dist(td).log_prob(td["action"]), ref)
    assert td["action_log_prob"].shape == (6,)
    assert actor.log_prob_key == "action_log_prob"
    assert actor.log_prob_keys == ["action_log_prob"] and actor.dist_sample_keys == ["action"]
    assert actor.in_keys == ["observation"]


def test_actor_random_by_default_and_deterministic_in_context():
    torch.manual_seed(1)
    actor = ProbabilisticActor(
        _gaussian_net(), in_keys=["observation"], distribution_class=TanhNormal
    )
    obs = _obs()
    a1, a2 = actor(obs.clone())["action"], actor(obs.clone())["action"]
    assert not torch.allclose(a1, a2)
    with set_interaction_type(InteractionType.DETERMINISTIC):
        d1, d2 = actor(obs.clone()), actor(obs.clone())
    torch.testing.assert_close(d1["action"], d2["action"])
    torch.testing.assert_close(d1["action"], torch.tanh(d1["loc"]))


def test_actor_deterministic_default_interaction_type():
    actor = ProbabilisticActor(
        nn.Linear(3, 4),
        in_keys=["observation"],
        distribution_class=Categorical,
        default_interaction_type=InteractionType.DETERMINISTIC,
    )
    td = actor(_obs())
    assert torch.equal(td["action"], td["logits"].argmax(-1))


@pytest.mark.parametrize("cls", [Categorical, OneHotCategorical])
def test_actor_discrete_log_prob(cls):
    torch.manual_seed(2)
    net = nn.Linear(3, 4)
    actor = ProbabilisticActor(
        net, in_keys=["observation"], distribution_class=cls, return_log_prob=True
    )
    td = actor(_obs())
    logits = net(td["observation"])
    index = td["action"] if cls is Categorical else td["action"].argmax(-1)
    # log softmax picked at the sampled index, computed directly
    expected = (logits - logits.exp().sum(-1, keepdim=True).log()).gather(-1, index[:, None])[:, 0]
    torch.testing.assert_close(td["action_log_prob"], expected)


def test_actor_from_tensordict_module_torchrl_style():
    torch.manual_seed(3)
    net = _gaussian_net()
    tdm = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    a_list = ProbabilisticActor(tdm, in_keys=["loc", "scale"], distribution_class=IndependentNormal)
    a_none = ProbabilisticActor(tdm, distribution_class=IndependentNormal, return_log_prob=True)
    a_dict = ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["mu", "sigma"]),
        in_keys={"loc": "mu", "scale": "sigma"},
        out_keys=[("agent", "action")],
        distribution_class=IndependentNormal,
        return_log_prob=True,
    )
    td = _obs()
    d_list, d_none = a_list.get_dist(td.clone()), a_none.get_dist(td.clone())
    torch.testing.assert_close(d_list.loc, d_none.loc)
    out = a_dict(td.clone())
    assert a_dict.log_prob_keys == [("agent", "action_log_prob")]
    ref = IndependentNormal(out["mu"], out["sigma"]).log_prob(out["agent", "action"])
    torch.testing.assert_close(out["agent", "action_log_prob"], ref)


def test_actor_custom_log_prob_key():
    actor = ProbabilisticActor(
        nn.Linear(3, 2),
        in_keys=["observation"],
        distribution_class=Categorical,
        return_log_prob=True,
        log_prob_key="sample_log_prob",
    )
    assert actor(_obs()).get("sample_log_prob", None) is not None
    assert actor.log_prob_keys == ["sample_log_prob"]


def test_actor_bad_arguments():
    with pytest.raises(ValueError, match=r"in_keys must list the keys the module reads"):
        ProbabilisticActor(nn.Linear(3, 2), distribution_class=Categorical)
    with pytest.raises(ValueError, match=r"cannot tell which parameters .* pass out_keys"):
        ProbabilisticActor(
            nn.Linear(3, 2), in_keys=["observation"], distribution_class=lambda **kw: None
        )
    tdm = TensorDictModule(nn.Linear(3, 2), in_keys=["observation"], out_keys=["logits"])
    with pytest.raises(KeyError, match=r"\['probs'\] are not among its out_keys \['logits'\]"):
        ProbabilisticActor(tdm, in_keys=["probs"], distribution_class=Categorical)
    with pytest.raises(ValueError, match=r"out_keys must name one action key"):
        ProbabilisticActor(tdm, out_keys=["a", "b"], distribution_class=Categorical)
    with pytest.raises(TypeError, match=r"distribution_class must be a Distribution class"):
        ProbabilisticActor(tdm, distribution_class="categorical")
    with pytest.raises(TypeError, match=r"module must be an nn.Module"):
        ProbabilisticActor(lambda x: x, in_keys=["observation"], distribution_class=Categorical)


def test_value_operator():
    torch.manual_seed(4)
    net = MLP(3, 1, num_cells=(8,))
    critic = ValueOperator(net)
    td = critic(_obs())
    torch.testing.assert_close(td["state_value"], net(td["observation"]))
    assert critic.in_keys == ["observation"] and critic.out_keys == ["state_value"]
    custom = ValueOperator(net, in_keys=["obs"], out_keys=["v"])
    td2 = custom(TensorDict(obs=td["observation"], batch_size=[6]))
    torch.testing.assert_close(td2["v"], td["state_value"])
    with pytest.raises(ValueError, match=r"in_keys must name at least one key"):
        ValueOperator(net, in_keys=[])


def _shared_operator(cls=ActorValueOperator):
    trunk = TensorDictModule(
        MLP(3, 8, num_cells=(8,)), in_keys=["observation"], out_keys=["hidden"]
    )
    policy = ProbabilisticActor(
        nn.Sequential(nn.Linear(8, 4), NormalParamExtractor()),
        in_keys=["hidden"],
        distribution_class=TanhNormal,
        return_log_prob=True,
    )
    value = ValueOperator(nn.Linear(8, 1), in_keys=["hidden"])
    return cls(trunk, policy, value), trunk, policy, value


def test_actor_value_operator_shares_the_trunk():
    torch.manual_seed(5)
    op, trunk, policy, value = _shared_operator()
    po, vo = op.get_policy_operator(), op.get_value_operator()
    assert isinstance(po, ProbabilisticTensorDictSequential)
    assert isinstance(vo, TensorDictSequential)
    trunk_params = list(trunk.parameters())
    po_ids = {id(p) for p in po.parameters()}
    vo_ids = {id(p) for p in vo.parameters()}
    # the very same tensor objects, not copies
    assert all(id(p) in po_ids and id(p) in vo_ids for p in trunk_params)
    assert op.get_policy_head() is policy and op.get_value_head() is value
    assert po.log_prob_keys == ["action_log_prob"] and po.dist_sample_keys == ["action"]
    assert po.in_keys == ["observation"] and vo.in_keys == ["observation"]

    # the full operator: hidden, action, log-prob and value, consistent with the parts
    td = op(_obs())
    hidden = trunk.module(td["observation"])
    torch.testing.assert_close(td["hidden"], hidden)
    torch.testing.assert_close(td["state_value"], value.module(hidden))
    loc, scale = policy.module[0].module(hidden)
    torch.testing.assert_close(td["action_log_prob"], TanhNormal(loc, scale).log_prob(td["action"]))
    torch.testing.assert_close(
        po.get_dist(td.clone()).log_prob(td["action"]), td["action_log_prob"]
    )
    torch.testing.assert_close(vo(td.select("observation"))["state_value"], td["state_value"])

    # a value loss reaches the trunk through the value operator
    vo(td.select("observation"))["state_value"].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trunk_params)


def test_actor_critic_operator_is_the_same_operator():
    op, *_ = _shared_operator(ActorCriticOperator)
    assert isinstance(op, ActorValueOperator)
    assert op.get_critic_operator().out_keys == ["hidden", "state_value"]
    td = op(_obs())
    assert {"action", "action_log_prob", "state_value"} <= set(td.keys())


def test_actor_value_operator_bad_arguments():
    trunk = TensorDictModule(nn.Linear(3, 8), in_keys=["observation"], out_keys=["hidden"])
    value = ValueOperator(nn.Linear(8, 1), in_keys=["hidden"])
    with pytest.raises(TypeError, match=r"policy_operator must be probabilistic"):
        ActorValueOperator(trunk, value, value)
    with pytest.raises(TypeError, match=r"common_operator must be a tensordict.nn module"):
        ActorValueOperator(nn.Linear(3, 8), value, value)
