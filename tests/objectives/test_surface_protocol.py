"""ppokit.objectives.protocol on small stand-in losses, compared with TorchRL 0.14.1's losses.

``Standin`` is a tiny loss defined here: the protocol mixin over an ``nn.Module`` whose
forward delegates the math to a TorchRL loss, so every difference in what comes out of a
TensorDict call, a keyword call or ``select_out_keys`` is the protocol's.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import (
    CompositeDistribution,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictSequential,
)
from torch import distributions as D
from torch import nn
from torch.testing import assert_close

from ppokit.objectives.protocol import (
    LossProtocol,
    keyword_name,
    keyword_tensordict,
    loss_in_keys,
)

torchrl_modules = pytest.importorskip("torchrl.modules")
torchrl_objectives = pytest.importorskip("torchrl.objectives")

B, OBS, ACT = 5, 3, 2


class _LocScale(nn.Module):
    def __init__(self, in_dim: int = OBS) -> None:
        super().__init__()
        self.lin = nn.Linear(in_dim, 2 * ACT)

    def forward(self, x: torch.Tensor):
        out = self.lin(x)
        return out[..., :ACT], out[..., ACT:].exp()


def gaussian_actor(in_key: str = "observation"):
    return torchrl_modules.ProbabilisticActor(
        TensorDictModule(_LocScale(), [in_key], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=torchrl_modules.IndependentNormal,
        return_log_prob=True,
    )


def critic(in_key: str = "observation"):
    return torchrl_modules.ValueOperator(nn.Linear(OBS, 1), in_keys=[in_key])


def composite_actor():
    agent = ("agents", "action")
    net = TensorDictModule(
        _LocScale(), ["observation"], [("params", *agent, "loc"), ("params", *agent, "scale")]
    )
    prob = ProbabilisticTensorDictModule(
        in_keys=["params"],
        out_keys=[agent],
        distribution_class=CompositeDistribution,
        distribution_kwargs={"distribution_map": {agent: D.Normal}},
        return_log_prob=True,
    )
    return ProbabilisticTensorDictSequential(net, prob)


class Standin(LossProtocol, nn.Module):
    """The protocol over a TorchRL loss's math (``inner``), with TorchRL's keys."""

    def __init__(self, inner: nn.Module, extra: list | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.actor_network = inner.actor_network
        self.critic_network = inner.critic_network
        self.tensor_keys = inner.tensor_keys
        self.extra = extra or []
        self.source_out_keys = list(inner.out_keys)

    def _all_out_keys(self) -> list[str]:
        return list(self.source_out_keys)

    def _extra_in_keys(self) -> list:
        return self.extra

    def _optional_keyword_keys(self) -> list:
        return ["advantage", "value_target"]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self.inner(tensordict)


def rollout(actor, value) -> TensorDict:
    td = TensorDict({"observation": torch.randn(B, OBS)}, [B])
    with torch.no_grad():
        actor(td)
    td["next"] = TensorDict(
        {
            "observation": torch.randn(B, OBS),
            "reward": torch.randn(B, 1),
            "done": torch.zeros(B, 1, dtype=torch.bool),
            "terminated": torch.zeros(B, 1, dtype=torch.bool),
        },
        [B],
    )
    return td


def _same_keys(ours: list, theirs: list) -> None:
    assert len(ours) == len(set(ours))  # no repeats
    assert set(ours) == set(theirs)


@pytest.mark.parametrize("layout", ["separate", "critic_reads_other_key", "no_critic"])
def test_in_keys_are_torchrl_in_keys(layout):
    actor = gaussian_actor()
    value = {"separate": critic(), "critic_reads_other_key": critic("pixels"), "no_critic": None}[
        layout
    ]
    ref = torchrl_objectives.ClipPPOLoss(actor, value, critic_coeff=None if value is None else 1.0)
    _same_keys(Standin(ref).in_keys, ref.in_keys)


def test_in_keys_of_a_composite_actor_and_of_klpen():
    actor = composite_actor()
    ref = torchrl_objectives.ClipPPOLoss(actor, critic())
    _same_keys(Standin(ref).in_keys, ref.in_keys)
    gaussian = gaussian_actor()
    klpen = torchrl_objectives.KLPENPPOLoss(gaussian, critic())
    _same_keys(Standin(klpen, extra=["loc", "scale"]).in_keys, klpen.in_keys)


def test_in_keys_by_hand_and_setter():
    actor = TensorDictModule(nn.Linear(OBS, 2), [("agents", "obs")], ["logits"])
    keys = loss_in_keys(
        actor,
        critic("state"),
        action=["a", ("agents", "b")],
        sample_log_prob="lp",
        reward="r",
        done="d",
        terminated="t",
        extra=["state"],
    )  # a repeat: listed once
    assert keys == [
        ("agents", "obs"),
        ("next", "agents", "obs"),
        "state",
        "a",
        ("agents", "b"),
        "lp",
        ("next", "r"),
        ("next", "d"),
        ("next", "t"),
    ]
    loss = Standin(torchrl_objectives.ClipPPOLoss(gaussian_actor(), critic()))
    loss.in_keys = ["observation", ("next", "observation")]
    assert loss.in_keys == ["observation", ("next", "observation")]
    loss.in_keys = None
    assert "action" in loss.in_keys


def test_keyword_call_returns_what_torchrl_returns():
    actor, value = gaussian_actor(), critic()
    ref = torchrl_objectives.ClipPPOLoss(actor, value)
    loss = Standin(torchrl_objectives.ClipPPOLoss(actor, value))
    td = rollout(actor, value)
    kwargs = {keyword_name(k): td.get(k) for k in loss.in_keys}
    assert "next_reward" in kwargs
    ours, theirs = loss(**kwargs), ref(**kwargs)
    assert isinstance(ours, tuple) and len(ours) == len(theirs) == len(ref.out_keys)
    for a, b in zip(ours, theirs):
        assert_close(a, b)
    assert loss.out_keys == ref.out_keys

    # select_out_keys: keyword calls return those values, in that order
    ref.select_out_keys("loss_critic", "loss_objective")
    loss.select_out_keys("loss_critic", "loss_objective")
    assert loss.out_keys == ref.out_keys == ["loss_critic", "loss_objective"]
    ours, theirs = loss(**kwargs), ref(**kwargs)
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        assert_close(a, b)
    # ... and TensorDict calls return only those entries
    assert (
        set(loss(td.clone()).keys())
        == set(ref(td.clone()).keys())
        == {"loss_critic", "loss_objective"}
    )

    # one selected key: a bare tensor, as tensordict's dispatch returns
    ref.select_out_keys("loss_objective")
    loss.select_out_keys("loss_objective")
    assert isinstance(loss(**kwargs), torch.Tensor)
    assert_close(loss(**kwargs), ref(**kwargs))
    loss.reset_out_keys()
    assert loss.out_keys == loss.out_keys_source
    assert len(loss(**kwargs)) == len(loss.out_keys_source)
    # assigning out_keys selects, as TorchRL's setter does; None restores them all
    ref.out_keys = ["loss_critic"]
    loss.out_keys = ["loss_critic"]
    assert_close(loss(**kwargs), ref(**kwargs))
    loss.out_keys = None
    assert loss.out_keys == loss.out_keys_source


def test_optional_keyword_key_is_used():
    actor, value = gaussian_actor(), critic()
    loss = Standin(torchrl_objectives.ClipPPOLoss(actor, value))
    td = rollout(actor, value)
    kwargs = {keyword_name(k): td.get(k) for k in loss.in_keys}
    loss.select_out_keys("loss_objective")
    advantage, target = torch.randn(B, 1), torch.randn(B, 1)
    got = loss(**kwargs, advantage=advantage, value_target=target)
    td["advantage"], td["value_target"] = advantage, target
    assert_close(got, loss.inner(td)["loss_objective"])


def test_keyword_errors_name_the_keys():
    loss = Standin(torchrl_objectives.ClipPPOLoss(gaussian_actor(), critic()))
    td = rollout(loss.actor_network, None)
    kwargs = {keyword_name(k): td.get(k) for k in loss.in_keys}
    with pytest.raises(TypeError, match=r"Unknown keyword argument\(s\) \['bogus'\]"):
        loss(**kwargs, bogus=torch.zeros(B))
    kwargs.pop("next_reward")
    with pytest.raises(TypeError, match=r"Missing keyword argument\(s\) \['next_reward'\]"):
        loss(**kwargs)
    with pytest.raises(TypeError, match="expects a TensorDict, got Tensor"):
        loss(torch.zeros(B, OBS))
    with pytest.raises(TypeError, match="needs a TensorDict or keyword arguments"):
        loss()
    with pytest.raises(ValueError, match=r"pick one or more of this loss's out_keys"):
        loss.select_out_keys("loss_nope")
    with pytest.raises(ValueError, match="both spelled 'next_reward'"):
        keyword_tensordict({}, [("next", "reward"), "next_reward"])


def test_keyword_tensordict_nests_and_batches():
    td = keyword_tensordict(
        {"a_b_c": torch.zeros(3, 2), "d": torch.ones(3)}, [("a", "b", "c")], ["d"]
    )
    assert td.batch_size == (3,)
    assert td["a", "b", "c"].shape == (3, 2)
    assert keyword_name(("a", "b"), separator="sep") == "asepb"


def test_reset_parameters_recursive_like_torchrl():
    # a common trunk shared by actor and critic: each layer is reset exactly once
    trunk = TensorDictModule(nn.Linear(OBS, OBS), ["observation"], ["hidden"])
    actor = ProbabilisticTensorDictSequential(trunk, gaussian_actor("hidden"))
    value = TensorDictSequential(
        trunk, torchrl_modules.ValueOperator(nn.Linear(OBS, 1), in_keys=["hidden"])
    )
    inner = torchrl_objectives.ClipPPOLoss(actor, value, functional=False)
    loss = Standin(inner)
    calls: dict[int, int] = {}
    linears = {id(m): m for m in [*actor.modules(), *value.modules()] if isinstance(m, nn.Linear)}
    for m in linears.values():
        original = m.reset_parameters

        def counted(m=m, original=original):
            calls[id(m)] = calls.get(id(m), 0) + 1
            original()

        m.reset_parameters = counted
    before = [p.detach().clone() for p in loss.parameters()]
    loss.reset_parameters_recursive()
    after = list(loss.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert sorted(calls.values()) == [1, 1, 1]  # trunk, actor head, value head

    # TorchRL's own reset changes every parameter of a functional loss the same way (with
    # functional=False it walks only its functional copies and resets nothing)
    ref = torchrl_objectives.ClipPPOLoss(gaussian_actor(), critic())
    before = [p.detach().clone() for p in ref.parameters()]
    ref.reset_parameters_recursive()
    assert all(not torch.equal(a, b) for a, b in zip(before, ref.parameters()))


def test_reset_reaches_parameter_views_sharing_storage():
    actor = gaussian_actor()
    loss = Standin(torchrl_objectives.ClipPPOLoss(actor, critic(), functional=False))
    view = TensorDict.from_module(actor, as_module=True)  # as ppokit's functional mode keeps
    before = view.detach().clone()
    loss.reset_parameters_recursive()
    for key, value in view.items(include_nested=True, leaves_only=True):
        assert not torch.equal(value, before[key])
    assert_close(view["module", "0", "module", "lin", "weight"], actor.module[0].module.lin.weight)
