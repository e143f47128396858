"""Small builders shared by the loss tests: tiny networks and a batch of fake transitions.

A module of its own (not conftest.py) so that importing it by name never clashes with the
conftest.py files of other test folders.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import (
    NormalParamExtractor,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import distributions as D
from torch import nn

OBS = 3
N_ACTIONS = 4
ACT_DIM = 2


class IndependentNormal(D.Independent):
    """Normal over the last dim, built from keyword params (independent of ppokit's)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__(D.Normal(loc, scale), 1)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.base_dist.loc


class Categorical(D.Categorical):
    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.probs.argmax(-1)


def discrete_actor(net: nn.Module | None = None) -> ProbabilisticTensorDictSequential:
    net = net if net is not None else nn.Linear(OBS, N_ACTIONS)
    return ProbabilisticTensorDictSequential(
        TensorDictModule(net, in_keys=["observation"], out_keys=["logits"]),
        ProbabilisticTensorDictModule(
            in_keys=["logits"],
            out_keys=["action"],
            distribution_class=Categorical,
            return_log_prob=True,
        ),
    )


def normal_actor(net: nn.Module | None = None) -> ProbabilisticTensorDictSequential:
    net = net if net is not None else nn.Linear(OBS, 2 * ACT_DIM)
    return ProbabilisticTensorDictSequential(
        TensorDictModule(
            nn.Sequential(net, NormalParamExtractor()),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        ),
        ProbabilisticTensorDictModule(
            in_keys=["loc", "scale"],
            out_keys=["action"],
            distribution_class=IndependentNormal,
            return_log_prob=True,
        ),
    )


def critic(net: nn.Module | None = None) -> TensorDictModule:
    net = net if net is not None else nn.Linear(OBS, 1)
    return TensorDictModule(net, in_keys=["observation"], out_keys=["state_value"])


def make_batch(
    actor: nn.Module,
    batch: tuple[int, ...] = (8,),
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TensorDict:
    """Transitions acted by ``actor``, then the actor is moved so ratios differ from 1."""
    g = torch.Generator().manual_seed(seed)
    td = TensorDict(
        {"observation": torch.randn(*batch, OBS, generator=g, dtype=dtype)}, batch_size=batch
    )
    with torch.no_grad():
        actor(td)
        for p in actor.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    td["advantage"] = torch.randn(*batch, 1, generator=g, dtype=dtype)
    td["value_target"] = torch.randn(*batch, 1, generator=g, dtype=dtype)
    td["state_value"] = torch.randn(*batch, 1, generator=g, dtype=dtype)
    for key in ("loc", "scale", "logits"):
        td.pop(key, None)
    return td


def total_loss(out) -> torch.Tensor:
    """The sum of every ``loss_*`` entry of a loss's output (what a trainer backpropagates)."""
    return sum(v.sum() for k, v in out.items() if k.startswith("loss_"))
