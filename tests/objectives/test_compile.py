"""compile_loss: one graph (fullgraph=True), same numbers and gradients as the eager loss.

Compiling takes tens of seconds on a small CPU, so the unmarked case is a single small
network; the slow case adds the value clip, a mask and TanhNormal's Monte-Carlo entropy.
"""

from __future__ import annotations

import pytest
import torch
from loss_builders import make_batch
from tensordict import TensorDict
from tensordict.nn import ProbabilisticTensorDictModule, TensorDictModule
from torch import nn
from torch.testing import assert_close

from ppokit import (
    ClipPPOLoss,
    IndependentNormal,
    NormalParamExtractor,
    ProbabilisticActor,
    TanhNormal,
    ValueOperator,
)
from ppokit.fast.compile import CompiledLoss, compile_loss

OBS, ACT = 3, 2


def _actor(dist=IndependentNormal):
    net = nn.Sequential(nn.Linear(OBS, 8), nn.Tanh(), nn.Linear(8, 2 * ACT), NormalParamExtractor())
    return ProbabilisticActor(
        TensorDictModule(net, ["observation"], ["loc", "scale"]),
        distribution_class=dist,
        return_log_prob=True,
    )


def _grads(out, params):
    total = sum(v.sum() for k, v in out.items() if k.startswith("loss_"))
    return torch.autograd.grad(total, params)


def _compare(loss, compiled, td, params):
    eager = loss(td)
    got = compiled(td)
    assert set(got.keys()) == set(eager.keys())
    for key in eager.keys():
        assert_close(got[key], eager[key], rtol=1e-5, atol=1e-5, msg=key)
    for a, b in zip(_grads(got, params), _grads(eager, params)):
        assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compiled_loss_is_one_graph_with_eager_numbers():
    actor, critic = _actor(), ValueOperator(nn.Linear(OBS, 1))
    td = make_batch(actor, (16,))
    loss = ClipPPOLoss(actor, critic, entropy_coef=0.05)
    compiled = compile_loss(loss)  # fullgraph=True: a graph break would raise
    params = [*actor.parameters(), *critic.parameters()]
    _compare(loss, compiled, td, params)  # first call: eager
    assert (compiled.eager_calls, compiled.compiled_calls) == (1, 0)
    _compare(loss, compiled, td, params)
    _compare(loss, compiled, make_batch(actor, (16,), seed=3), params)
    assert compiled.compiled_calls == 2
    # the graph is not recompiled for a new minibatch of the same shape
    assert list(compiled.parameters()) == list(loss.parameters())


def test_compiled_loss_falls_back_to_eager_under_a_parameter_swap():
    actor, critic = _actor(), ValueOperator(nn.Linear(OBS, 1))
    td = make_batch(actor, (8,))
    loss = ClipPPOLoss(actor, critic)
    compiled = compile_loss(loss, backend="eager")  # tracing only: fast
    compiled(td)
    compiled(td)
    assert compiled.compiled_calls == 1
    params = TensorDict.from_module(loss)
    doubled = params.apply(lambda p: p.detach() * 2)
    with doubled.to_module(loss):
        swapped = compiled(td)
        expected = loss(td)
    assert compiled.compiled_calls == 1  # the swapped call ran eagerly
    assert_close(swapped["loss_objective"], expected["loss_objective"])
    assert not torch.allclose(swapped["loss_objective"], loss(td)["loss_objective"])


def test_compiled_loss_reports_bad_inputs_like_the_eager_loss():
    actor, critic = _actor(), ValueOperator(nn.Linear(OBS, 1))
    td = make_batch(actor, (8,))
    compiled = compile_loss(ClipPPOLoss(actor, critic), backend="eager")
    compiled(td)
    compiled(td)
    td["advantage"][2] = float("nan")
    with pytest.raises(ValueError, match="'advantage' entry holds 1 non-finite"):
        compiled(td)
    assert compiled.compiled_calls == 2  # the check runs on the compiled result


def test_compile_loss_rejects_other_modules():
    with pytest.raises(TypeError, match="expects a ppokit PPOLoss"):
        compile_loss(nn.Linear(2, 2))
    assert isinstance(
        compile_loss(ClipPPOLoss(_actor(), ValueOperator(nn.Linear(OBS, 1))), backend="eager"),
        CompiledLoss,
    )


@pytest.mark.slow
def test_compiled_loss_with_mask_clip_value_and_mc_entropy():
    torch._dynamo.reset()
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(nn.Linear(OBS, 2 * ACT), NormalParamExtractor()),
            ["observation"],
            ["loc", "scale"],
        ),
        distribution_class=TanhNormal,
        return_log_prob=True,
    )
    critic = ValueOperator(nn.Sequential(nn.Linear(OBS, 8), nn.Tanh(), nn.Linear(8, 1)))
    td = make_batch(actor, (12,))
    td["mask"] = torch.arange(12) % 4 != 0
    loss = ClipPPOLoss(
        actor, critic, clip_value=0.1, samples_mc_entropy=3, normalize_advantage=True
    ).set_keys(mask="mask")
    compiled = compile_loss(loss)
    params = [*actor.parameters(), *critic.parameters()]
    previous = torch._inductor.config.fallback_random
    torch._inductor.config.fallback_random = True  # the same random draws as eager
    try:
        for _ in range(2):
            torch.manual_seed(5)
            eager = loss(td)
            torch.manual_seed(5)
            got = compiled(td)
        for key in eager.keys():
            assert_close(got[key], eager[key], rtol=1e-5, atol=1e-5, msg=key)
        for a, b in zip(_grads(got, params), _grads(eager, params)):
            assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert compiled.compiled_calls == 1  # the second call
    finally:
        torch._inductor.config.fallback_random = previous


def test_plain_modules_take_the_fast_path_and_give_the_general_path_numbers():
    # The same loss with the fast path disabled (a no-op forward hook on the actor's
    # wrapper makes the plan unusable) must give identical numbers and gradients.
    actor = _actor()
    critic = ValueOperator(nn.Sequential(nn.Linear(OBS, 8), nn.Tanh(), nn.Linear(8, 1)))
    td = make_batch(actor, (10,))
    loss = ClipPPOLoss(actor, critic, clip_value=0.2)
    params = [*actor.parameters(), *critic.parameters()]
    assert loss.execution_path == "direct"
    fast = loss(td)
    g_fast = _grads(fast, params)
    handle = actor.module[0].register_forward_hook(lambda *a: None)
    try:
        assert loss.execution_path == "tensordict"
        slow = loss(td)
        g_slow = _grads(slow, params)
    finally:
        handle.remove()
    for key in fast.keys():
        assert torch.equal(fast[key], slow[key]), key
    for a, b in zip(g_fast, g_slow):
        assert torch.equal(a, b)


def test_fast_path_skips_the_swap_only_while_the_params_are_the_modules_own():
    actor, critic = _actor(), ValueOperator(nn.Linear(OBS, 1))
    loss = ClipPPOLoss(actor, critic)
    assert loss._actor_slots.in_place(loss.actor_network_params)
    assert loss._critic_slots.in_place(loss.critic_network_params)
    # a parameter replaced on the module: the loss's own tensors must be swapped back in
    net = actor.module[0].module[0]
    original = net.weight
    net.weight = nn.Parameter(original.detach() * 0)
    try:
        assert not loss._actor_slots.in_place(loss.actor_network_params)
        td = make_batch(actor, (6,))
        with torch.no_grad():
            net.weight.copy_(original)  # same values, other tensor: results still equal
        out = loss(td)
        grads = torch.autograd.grad(out["loss_objective"], [original], allow_unused=True)
        assert grads[0] is not None  # the loss ran on ITS parameter, not the module's new one
    finally:
        net.weight = original


def test_probabilistic_module_with_custom_dist_falls_back():
    # A ProbabilisticTensorDictModule subclass that overrides get_dist is not planned.
    class Shifted(ProbabilisticTensorDictModule):
        def get_dist(self, tensordict):
            return super().get_dist(tensordict)

    from tensordict.nn import ProbabilisticTensorDictSequential

    net = TensorDictModule(
        nn.Sequential(nn.Linear(OBS, 2 * ACT), NormalParamExtractor()),
        ["observation"],
        ["loc", "scale"],
    )
    actor = ProbabilisticTensorDictSequential(
        net,
        Shifted(
            in_keys=["loc", "scale"],
            out_keys=["action"],
            distribution_class=IndependentNormal,
            return_log_prob=True,
        ),
    )
    loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(OBS, 1)))
    assert loss._actor_plan is None
    out = loss(make_batch(actor, (5,)))
    assert torch.isfinite(out["loss_objective"])
