"""Bad distribution parameters coming out of the policy network, inside the loss.

On its fast path the loss builds ppokit's distributions without their per-call value checks
(its one finiteness probe on the outputs covers them); when the probe trips, the checks run
again and raise the distribution's own message. These tests pin that down, eager and compiled.
"""

from __future__ import annotations

import math

import pytest
import torch
from loss_builders import OBS, critic, make_batch
from tensordict.nn import TensorDictModule
from torch import nn

from ppokit import Categorical, ClipPPOLoss, IndependentNormal, ProbabilisticActor
from ppokit.fast.compile import compile_loss


class Gaussian(nn.Module):
    """loc = Linear(obs), scale = a fixed tensor we can poison."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(OBS, 2)
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.linear(obs)
        return loc, self.scale.expand_as(loc)


def _normal_actor() -> ProbabilisticActor:
    return ProbabilisticActor(
        TensorDictModule(Gaussian(), ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=IndependentNormal,
        return_log_prob=True,
    )


def _discrete_actor() -> ProbabilisticActor:
    return ProbabilisticActor(
        TensorDictModule(nn.Linear(OBS, 3), ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )


def _poison_loc(actor):
    actor.module[0].module.linear.bias[0] = math.nan


def _negative_scale(actor):
    actor.module[0].module.scale[1] = -0.5


def _zero_scale(actor):
    actor.module[0].module.scale[0] = 0.0


def _poison_logits(actor):
    actor.module[0].module.weight[1, 0] = math.inf


CASES = [
    (_normal_actor, _poison_loc, r"IndependentNormal: loc has 8 NaN/Inf entries \(of 16\)"),
    (
        _normal_actor,
        _negative_scale,
        r"scale must be finite and > 0, got 8 bad entries, "
        r"e\.g\. \[-0\.5, -0\.5, -0\.5\]",
    ),
    (_normal_actor, _zero_scale, r"scale must be finite and > 0, got 8 bad entries"),
    (_discrete_actor, _poison_logits, r"Categorical: logits contain NaN or \+inf"),
]


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize(("build", "poison", "match"), CASES)
def test_bad_policy_parameters_are_named(build, poison, match, compiled):
    actor = build()
    td = make_batch(actor)  # acted while the parameters were fine
    loss = ClipPPOLoss(actor, critic(), entropy_coef=0.01)
    # the compiled loss's first call runs eagerly, so warm it up on the healthy policy
    fn = compile_loss(loss, backend="eager") if compiled else loss
    assert torch.isfinite(fn(td)["loss_objective"])
    if compiled:
        assert torch.isfinite(fn(td)["loss_objective"]) and fn.compiled_calls == 1
    with torch.no_grad():
        poison(actor)
    with pytest.raises(ValueError, match=match):
        fn(td)
    if compiled:
        assert fn.compiled_calls == 2  # the failing call ran the graph, then explained


def test_bad_parameters_also_raise_when_the_input_is_bad_too():
    # the policy's parameters are named first, as they are built before any loss math
    actor = _normal_actor()
    td = make_batch(actor)
    td["advantage"][0] = math.nan
    with torch.no_grad():
        _poison_loc(actor)
    with pytest.raises(ValueError, match="loc has 8 NaN/Inf"):
        ClipPPOLoss(actor, critic())(td)
