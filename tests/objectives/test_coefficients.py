"""Schedulable coefficients: ``entropy_coeff``, ``critic_coeff``, ``clip_epsilon`` (and a
float ``clip_value``) are 0-d buffers, as in TorchRL 0.14.1: assigning a number changes the
next forward and the state travels with ``state_dict``. Numbers are checked against TorchRL
given the same modules, data, seed and schedule.
"""

from __future__ import annotations

import pytest
import torch
from loss_builders import critic, make_batch, normal_actor
from test_loss_parity_torchrl import build, make_data
from torch.testing import assert_close

from ppokit import ClipPPOLoss, PPOLoss, compile_loss

torchrl_objectives = pytest.importorskip("torchrl.objectives")


def _compare(ours, theirs, td):
    torch.manual_seed(3)
    a = ours(td)
    torch.manual_seed(3)
    b = theirs(td)
    for key in ("loss_objective", "loss_critic", "loss_entropy", "clip_fraction"):
        assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("kind", ["discrete", "normal"])
def test_assigned_coefficients_change_the_next_forward_as_in_torchrl(kind):
    actor, value, policy, value_op = build(kind, "separate")
    td = make_data(policy, value_op, computed=False, deterministic=False, seed=4)
    ours = ClipPPOLoss(actor, value, clip_value=0.3)
    theirs = torchrl_objectives.ClipPPOLoss(actor, value, clip_value=0.3)
    _compare(ours, theirs, td)
    before = ours(td)
    for loss in (ours, theirs):
        loss.entropy_coeff = 0.5
        loss.critic_coeff = 0.25
        loss.clip_epsilon = 0.05
        loss.clip_value = 0.1
    after = ours(td)
    # the schedule took effect (not silently ignored) ...
    assert not torch.equal(before["loss_entropy"], after["loss_entropy"])
    assert not torch.equal(before["loss_critic"], after["loss_critic"])
    # ... with TorchRL's numbers: -0.5 * H, 0.25 * critic loss, the narrower clip range
    _compare(ours, theirs, td)
    assert_close(after["loss_entropy"], -0.5 * after["entropy"])


def test_ppokit_spellings_are_views_of_the_same_buffers():
    loss = ClipPPOLoss(normal_actor(), critic(), entropy_coef=0.02, critic_coef=0.7)
    buffer = loss.entropy_coeff
    assert isinstance(buffer, torch.Tensor) and buffer.dim() == 0
    assert loss.entropy_coef == pytest.approx(0.02) and loss.critic_coef == pytest.approx(0.7)
    loss.entropy_coef = 0.1
    assert loss.entropy_coeff is buffer and float(buffer) == pytest.approx(0.1)
    loss.critic_coeff = torch.tensor(0.3)  # a 0-d tensor is copied in, too
    assert loss.critic_coef == pytest.approx(0.3)


def test_coefficients_round_trip_through_state_dict():
    actor, value = normal_actor(), critic()
    loss = ClipPPOLoss(actor, value, clip_value=0.4)
    loss.entropy_coeff, loss.critic_coeff, loss.clip_epsilon = 0.05, 2.0, 0.15
    state = loss.state_dict()
    for name, expected in (
        ("entropy_coeff", 0.05),
        ("critic_coeff", 2.0),
        ("clip_epsilon", 0.15),
        ("clip_value", 0.4),
    ):
        assert float(state[name]) == pytest.approx(expected), name
    fresh = ClipPPOLoss(actor, value, clip_value=0.1)
    fresh.load_state_dict(state)
    td = make_batch(actor, (10,))
    torch.manual_seed(0)
    a = loss(td)
    torch.manual_seed(0)
    b = fresh(td)
    for key in a.keys():
        assert torch.equal(a[key], b[key]), key


def test_torchrl_state_dict_loads_into_ppokit():
    actor, value, _policy, _value_op = build("discrete", "separate")
    theirs = torchrl_objectives.ClipPPOLoss(
        actor, value, entropy_coeff=0.2, critic_coeff=0.5, clip_epsilon=0.25
    )
    ours = ClipPPOLoss(actor, value)
    missing, _unexpected = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert not missing
    assert (ours.entropy_coef, ours.critic_coef, float(ours.clip_epsilon)) == pytest.approx(
        (0.2, 0.5, 0.25)
    )


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("entropy_coeff", -0.1, r"entropy_coeff must be a finite number >= 0.0, got -0.1"),
        ("critic_coeff", float("nan"), r"critic_coeff must be a finite number >= 0.0, got nan"),
        ("clip_epsilon", 1.0, r"clip_epsilon must be a number in \(0.0, 1.0\), got 1.0"),
        ("clip_value", 0.0, r"clip_value must be a finite number > 0.0, got 0.0"),
    ],
)
def test_bad_scheduled_values_are_refused(name, value, match):
    loss = ClipPPOLoss(normal_actor(), critic(), clip_value=0.2)
    before = float(getattr(loss, name))
    with pytest.raises(ValueError, match=match):
        setattr(loss, name, value)
    assert float(getattr(loss, name)) == before  # nothing half-applied


def test_plain_ppo_has_no_clip_epsilon_and_tensor_coefficients_are_accepted():
    loss = PPOLoss(normal_actor(), critic(), entropy_coeff=torch.tensor(0.03))
    assert loss.entropy_coef == pytest.approx(0.03)
    assert "clip_epsilon" not in loss.state_dict()


def test_compiled_loss_follows_a_schedule_without_recompiling():
    actor, value = normal_actor(), critic()
    loss = ClipPPOLoss(actor, value)
    compiled = compile_loss(loss, backend="aot_eager")
    td = make_batch(actor, (16,))
    compiled(td)  # eager warm-up
    graphs = None
    for coef in (0.01, 0.2, 0.7):
        loss.entropy_coeff = coef
        loss.clip_epsilon = coef / 2 + 0.05
        got, expected = compiled(td), loss(td)
        for key in ("loss_entropy", "loss_objective", "clip_fraction"):
            assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
        if graphs is None:  # after the first compile
            graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert compiled.compiled_calls == 3
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # no recompile


# --------------------------------------------------------------------------- value estimator
def test_make_value_estimator_takes_another_value_network_and_a_member_name():
    # The loss only forwards to ppokit.value.estimators.make_value_estimator, whose defaults
    # (gamma 0.99, lambda 0.95) apply; value_network= replaces the critic it runs.
    from ppokit.value.estimators import make_value_estimator

    actor, value = normal_actor(), critic()
    other = critic()
    loss = ClipPPOLoss(actor, value)
    # (TorchRL's enum member would build TorchRL's estimator: tests/value/test_estimators.py)
    loss.make_value_estimator("TDLambda", value_network=other)
    reference = make_value_estimator("td_lambda", value_network=other)
    assert type(loss.value_estimator) is type(reference)
    assert (loss.value_estimator.gamma, loss.value_estimator.lmbda) == (
        reference.gamma,
        reference.lmbda,
    )
    g = torch.Generator().manual_seed(0)
    td = make_batch(actor, (2, 6))
    td["next"] = td.select("observation").clone()
    td["next", "observation"] = torch.randn(td["observation"].shape, generator=g)
    td["next", "reward"] = torch.randn(2, 6, 1, generator=g)
    td["next", "done"] = torch.zeros(2, 6, 1, dtype=torch.bool)
    td["next", "terminated"] = torch.zeros(2, 6, 1, dtype=torch.bool)
    data = td.exclude("advantage", "value_target")
    expected = data.copy()
    with torch.no_grad():
        reference(expected)  # the advantage and target from `other`, computed outside
    torch.manual_seed(0)
    inside = loss(data)  # no advantage in the data: the loss runs its estimator on `other`
    torch.manual_seed(0)
    outside = loss(expected)
    for key in ("loss_objective", "loss_critic", "explained_variance"):
        assert_close(inside[key], outside[key], msg=key)
    actor_only = ClipPPOLoss(actor)
    with pytest.raises(ValueError, match="this loss has no critic, so pass value_network="):
        actor_only.make_value_estimator("gae")
    actor_only.make_value_estimator("gae", value_network=other)
    assert torch.isfinite(actor_only(data)["loss_objective"])
