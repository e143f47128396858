"""compile_loss: one graph (fullgraph=True), same numbers and gradients as the eager loss.

Compiling takes tens of seconds on a small CPU, so the unmarked case is a single small
network; the slow case adds the value clip, a mask and TanhNormal's Monte-Carlo entropy.
"""

from __future__ import annotations

import copy

import pytest
import torch
from loss_builders import make_batch
from tensordict import TensorDict
from tensordict.nn import (
    CompositeDistribution,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import nn
from torch.testing import assert_close

from ppokit import (
    Categorical,
    ClipPPOLoss,
    FusedPPOUpdate,
    IndependentNormal,
    KLPENPPOLoss,
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


# --------------------------------------------------------------------------- KL penalty
def _klpen_setup(dist):
    torch.manual_seed(0)
    if dist is Categorical:
        actor = ProbabilisticActor(
            TensorDictModule(nn.Linear(OBS, 4), ["observation"], ["logits"]),
            in_keys=["logits"],
            distribution_class=Categorical,
            return_log_prob=True,
        )
    else:
        actor = _actor(dist)
    critic = ValueOperator(nn.Linear(OBS, 1))
    td = TensorDict({"observation": torch.randn(16, OBS)}, [16])
    with torch.no_grad():
        actor(td)  # keeps the distribution parameters pi_old is rebuilt from
        for p in actor.parameters():
            p.add_(0.3 * torch.randn_like(p))
    td["advantage"], td["value_target"] = torch.randn(16, 1), torch.randn(16, 1)
    twins = [copy.deepcopy(actor), copy.deepcopy(critic)]
    # dtarg small: the KL is above 1.5 * dtarg, so beta doubles on every call
    eager = KLPENPPOLoss(actor, critic, beta=0.5, dtarg=1e-4)
    traced = KLPENPPOLoss(*twins, beta=0.5, dtarg=1e-4)
    return eager, traced, td


@pytest.mark.parametrize("dist", [Categorical, IndependentNormal, TanhNormal])
def test_klpen_runs_in_the_graph_with_eager_numbers_gradients_and_beta(dist):
    # closed-form KL (ppokit's traceable formulas) or, for TanhNormal, the sampled KL; the
    # aot_eager backend traces as inductor does and draws the same random numbers as eager
    eager, traced, td = _klpen_setup(dist)
    compiled = compile_loss(traced, backend="aot_eager")
    for seed in range(3):
        torch.manual_seed(seed)
        want = eager(td)
        torch.manual_seed(seed)
        got = compiled(td)
        assert set(got.keys()) == set(want.keys())
        for key in want.keys():
            assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
        for a, b in zip(
            _grads(got, list(traced.parameters())), _grads(want, list(eager.parameters()))
        ):
            assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert_close(traced.beta, eager.beta)
    assert float(eager.beta) == 0.5 * 2**3  # the update really ran, in both
    assert (compiled.eager_calls, compiled.compiled_calls) == (1, 2)


def test_klpen_with_a_kl_only_torch_knows_runs_eagerly():
    # a Beta policy: torch's kl_divergence has its closed form, ppokit's formulas do not, and
    # that lookup cannot be traced, so every call runs the eager loss (same numbers)
    class Conc(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(OBS, 2)

        def forward(self, obs):
            c = nn.functional.softplus(self.lin(obs)) + 0.5
            return c[..., 0], c[..., 1]

    actor = ProbabilisticActor(
        TensorDictModule(Conc(), ["observation"], ["concentration1", "concentration0"]),
        in_keys=["concentration1", "concentration0"],
        distribution_class=torch.distributions.Beta,
        return_log_prob=True,
    )
    td = TensorDict({"observation": torch.randn(8, OBS)}, [8])
    with torch.no_grad():
        actor(td)
    td["advantage"] = torch.randn(8, 1)
    compiled = compile_loss(KLPENPPOLoss(actor, None), backend="aot_eager")
    for _ in range(3):
        compiled(td)
    assert (compiled.eager_calls, compiled.compiled_calls) == (3, 0)
    assert compiled.loss._kl_form == "torch"


def test_composite_policies_are_refused_at_construction():
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(OBS, 5)

        def forward(self, obs):
            out = self.lin(obs)
            return out[..., :2], out[..., 2:]

    net = TensorDictModule(
        TwoHeads(), ["observation"], [("params", "move", "logits"), ("params", "grip", "logits")]
    )
    heads = ProbabilisticTensorDictModule(
        in_keys=["params"],
        out_keys=["move", "grip"],
        distribution_class=CompositeDistribution,
        distribution_kwargs={
            "distribution_map": {"move": torch.distributions.Categorical, "grip": Categorical}
        },
        return_log_prob=True,
    )
    loss = ClipPPOLoss(
        ProbabilisticTensorDictSequential(net, heads), ValueOperator(nn.Linear(OBS, 1))
    )
    with pytest.raises(TypeError, match=r"compile_loss cannot compile .*several action heads"):
        compile_loss(loss)
    opt = torch.optim.Adam(loss.parameters())
    with pytest.raises(TypeError, match=r"FusedPPOUpdate cannot compile .*eager update"):
        FusedPPOUpdate(loss, opt)
