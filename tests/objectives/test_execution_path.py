"""The direct path (ppokit.internals.direct) is visible, gated and exact.

``loss.execution_path`` says which path the next call takes; every change is logged at
DEBUG level; an unsupported tensordict release, a forward hook or ``set_skip_existing``
sends the call through tensordict, and both paths give the very same numbers.
"""

from __future__ import annotations

import logging

import pytest
import tensordict
import torch
from loss_builders import critic, discrete_actor, make_batch, normal_actor
from tensordict.nn import set_skip_existing

from ppokit import ClipPPOLoss, PPOLoss
from ppokit.internals.direct import ModulePlan
from ppokit.internals.versions import SUPPORTED_TENSORDICT, direct_path_supported


def _losses_and_grads(loss, td):
    out = loss(td)
    total = sum(v for k, v in out.items() if k.startswith("loss_"))
    params = list(loss.parameters())
    return out, torch.autograd.grad(total, params)


def _assert_same(a, b):
    (out_a, grads_a), (out_b, grads_b) = a, b
    assert set(out_a.keys()) == set(out_b.keys())
    for key in out_a.keys():
        assert torch.equal(out_a[key], out_b[key]), key
    for ga, gb in zip(grads_a, grads_b):
        assert torch.equal(ga, gb)


def test_version_check_accepts_the_supported_series_only():
    assert direct_path_supported(tensordict.__version__)
    assert (0, 14) in SUPPORTED_TENSORDICT and (0, 15) in SUPPORTED_TENSORDICT
    assert direct_path_supported("0.15.0rc1")
    for other in ("0.13.2", "0.16.0", "1.0.0", "nightly", ""):
        assert not direct_path_supported(other), other


@pytest.mark.parametrize("make_actor", [discrete_actor, normal_actor])
def test_unsupported_tensordict_takes_the_tensordict_path_with_the_same_numbers(
    monkeypatch, make_actor
):
    torch.manual_seed(0)
    actor, value = make_actor(), critic()
    td = make_batch(actor, (12,))
    direct = ClipPPOLoss(actor, value, clip_value=0.2)
    assert direct.execution_path == "direct"
    monkeypatch.setattr(tensordict, "__version__", "0.99.0")
    assert ModulePlan.for_actor(actor) is None
    gated = ClipPPOLoss(actor, value, clip_value=0.2)
    assert gated.execution_path == "tensordict"
    assert gated.execution_path_reason() == (
        "tensordict 0.99.0 is not a release the direct path was checked on"
    )
    _assert_same(_losses_and_grads(direct, td), _losses_and_grads(gated, td))


def test_a_forward_hook_switches_to_tensordict_visibly_and_back(caplog):
    actor, value = normal_actor(), critic()
    td = make_batch(actor, (6,))
    loss = PPOLoss(actor, value)
    caplog.set_level(logging.DEBUG, logger="ppokit.objectives")
    first = _losses_and_grads(loss, td)
    assert loss.execution_path == "direct"
    assert [r.getMessage() for r in caplog.records] == [
        "PPOLoss runs its networks on the direct path (plain TensorDict modules, no hooks)"
    ]
    calls = []
    handle = value.register_forward_hook(lambda *args: calls.append(1))
    try:
        assert loss.execution_path == "tensordict"
        hooked = _losses_and_grads(loss, td)
        assert calls == [1]  # the hook really ran: the tensordict path calls the wrapper
    finally:
        handle.remove()
    assert caplog.records[-1].getMessage() == (
        "PPOLoss runs its networks on the tensordict path (a hook, set_skip_existing or a "
        "swapped network is active on the critic)"
    )
    loss(td)
    assert loss.execution_path == "direct"
    assert "on the direct path" in caplog.records[-1].getMessage()
    assert len(caplog.records) == 3  # one line per change, not per call
    _assert_same(first, hooked)


def test_skip_existing_runs_through_tensordict():
    actor, value = discrete_actor(), critic()
    loss = ClipPPOLoss(actor, value)
    with set_skip_existing(True):
        assert loss.execution_path == "tensordict"
    assert loss.execution_path == "direct"
