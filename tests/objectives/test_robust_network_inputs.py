"""Inputs the networks cannot take (issue 15, item 8): the error names key, expected, arrived.

Before: raw ``RuntimeError``s from inside ``torch.nn.functional.linear`` ("mat1 and mat2 must
have the same dtype", "shapes cannot be multiplied", "not on the expected device") that
named no key. Now a :class:`NetworkInputError` (a ValueError) chained to that error.
"""

from __future__ import annotations

import pytest
import torch
from loss_builders import OBS, critic, make_batch, normal_actor
from tensordict import TensorDict
from torch import nn

from ppokit import GAE, ClipPPOLoss, PPOLoss
from ppokit.objectives import network_inputs, networks
from ppokit.objectives.network_inputs import NetworkInputError, input_mismatch

# (case, what the data or networks get, words the message must hold: key, expected, arrived)
CASES = {
    "int_obs": ("actor", ["'observation'", "int64", "expects dtype float32", ".to(torch.float32)"]),
    "f64_obs": ("actor", ["'observation'", "float64", "expects dtype float32"]),
    "wide_obs": (
        "actor",
        ["'observation'", f"shape (6, {OBS + 2})", f"expects {OBS} features on the last dim"],
    ),
    "f64_critic": (
        "critic",
        ["'observation'", "float32 values", "expects dtype float64", "critic.to(torch.float32)"],
    ),
    "meta_critic": ("critic", ["'observation'", "on cpu", "expects device meta"]),
}


def _setup(case: str):
    actor, value = normal_actor(), critic()
    td = make_batch(actor, (6,))
    if case == "int_obs":
        td["observation"] = td["observation"].round().long()
    elif case == "f64_obs":
        td["observation"] = td["observation"].double()
    elif case == "wide_obs":
        td["observation"] = torch.randn(6, OBS + 2)
    elif case == "f64_critic":
        value = value.double()
    elif case == "meta_critic":
        value = value.to("meta")
    return actor, value, td


@pytest.mark.parametrize("path", ["direct", "tensordict"])
@pytest.mark.parametrize("functional", [True, False])
@pytest.mark.parametrize("loss_cls", [ClipPPOLoss, PPOLoss])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_error_names_key_expected_and_arrived(case, loss_cls, functional, path):
    role, words = CASES[case]
    actor, value, td = _setup(case)
    loss = loss_cls(actor, value, functional=functional)
    hook = value.register_forward_hook(lambda *args: None) if path == "tensordict" else None
    try:
        assert loss.execution_path == path
        with pytest.raises(NetworkInputError) as info:
            loss(td)
    finally:
        if hook is not None:
            hook.remove()
    message = str(info.value)
    assert message.startswith(f"The {role} cannot read 'observation'")
    for word in words:
        assert word in message, (word, message)
    assert "Fix:" in message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, RuntimeError)  # the original error is kept


def test_value_estimator_names_the_key():
    value = critic()
    g = torch.Generator().manual_seed(0)
    td = TensorDict(
        {
            "observation": torch.randn(2, 4, OBS, generator=g, dtype=torch.float64),
            "next": {
                "observation": torch.randn(2, 4, OBS, generator=g, dtype=torch.float64),
                "reward": torch.randn(2, 4, 1, generator=g),
                "done": torch.zeros(2, 4, 1, dtype=torch.bool),
                "terminated": torch.zeros(2, 4, 1, dtype=torch.bool),
            },
        },
        batch_size=[2, 4],
    )
    with pytest.raises(
        NetworkInputError,
        match=(
            r"The value_network cannot read 'observation': it holds float64 values of shape "
            r"\(2, 4, 3\) on cpu, but its first layer value_network\.module "
            r"\(Linear\(in_features=3.*expects dtype float32"
        ),
    ):
        GAE(gamma=0.9, lmbda=0.9, value_network=value)(td)
    assert "advantage" not in td.keys()


def test_an_error_the_inputs_do_not_explain_is_reraised_unchanged():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(OBS, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("a bug inside the user's critic")

    actor = normal_actor()
    td = make_batch(actor, (4,))
    with pytest.raises(RuntimeError, match="a bug inside the user's critic") as info:
        ClipPPOLoss(actor, critic(Broken()))(td)
    assert not isinstance(info.value, NetworkInputError)


def test_nothing_is_diagnosed_when_the_networks_run(monkeypatch):
    # the check costs nothing on the happy path: it is not even called
    def fail(*args, **kwargs):
        raise AssertionError("input_mismatch ran on a call that succeeded")

    monkeypatch.setattr(network_inputs, "input_mismatch", fail)
    actor, value = normal_actor(), critic()
    td = make_batch(actor, (5,))
    for loss in (ClipPPOLoss(actor, value), ClipPPOLoss(actor, value, functional=False)):
        loss(td)["loss_objective"].backward()
    assert networks.explain_input_error is network_inputs.explain_input_error


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matching_inputs_are_not_reported(dtype):
    value = critic().to(dtype)
    td = TensorDict(observation=torch.zeros(3, OBS, dtype=dtype), batch_size=[3])
    assert input_mismatch(value, td, role="critic") is None
    td["observation"] = torch.zeros(3, OBS + 1, dtype=dtype)
    assert "expects 3 features on the last dim" in str(input_mismatch(value, td, role="critic"))


def test_a_failing_diagnosis_never_hides_the_original_error(monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("the diagnosis itself broke")

    monkeypatch.setattr(network_inputs, "input_mismatch", broken)
    actor, value, td = _setup("f64_obs")
    with pytest.raises(RuntimeError, match="dtype") as info:
        ClipPPOLoss(actor, value)(td)
    assert not isinstance(info.value, NetworkInputError)


def test_integer_indices_for_an_embedding_are_not_blamed():
    from tensordict.nn import TensorDictModule

    value = TensorDictModule(
        nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 1)),
        in_keys=["token"],
        out_keys=["state_value"],
    )
    td = TensorDict(token=torch.zeros(2, dtype=torch.long), batch_size=[2])
    assert input_mismatch(value, td, role="critic") is None
    td["token"] = td["token"].to("meta")
    assert "expects device cpu" in str(input_mismatch(value, td, role="critic"))
