"""Shared pieces of the fused-update tests: small losses, minibatches, and the eager
reference step written independently of ppokit (loss, backward, torch's clip, Adam)."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from ppokit import (
    Categorical,
    ClipPPOLoss,
    IndependentNormal,
    ProbabilisticActor,
    ValueOperator,
)

OBS, ACT, N = 5, 3, 4


class GaussianNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(OBS, 16), nn.Tanh(), nn.Linear(16, ACT))
        self.log_std = nn.Parameter(torch.full((ACT,), -0.5))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.net(obs)
        return loc, self.log_std.exp().expand_as(loc)


def setup_loss(kind: str, *, lr: float = 0.05, seed: int = 0, loss_cls=ClipPPOLoss, **loss_kw):
    torch.manual_seed(seed)
    if kind == "gaussian":
        params = TensorDictModule(GaussianNet(), in_keys=["observation"], out_keys=["loc", "scale"])
        actor = ProbabilisticActor(
            params,
            in_keys=["loc", "scale"],
            distribution_class=IndependentNormal,
            return_log_prob=True,
        )
    else:
        params = TensorDictModule(
            nn.Sequential(nn.Linear(OBS, 16), nn.Tanh(), nn.Linear(16, N)),
            in_keys=["observation"],
            out_keys=["logits"],
        )
        actor = ProbabilisticActor(
            params, in_keys=["logits"], distribution_class=Categorical, return_log_prob=True
        )
    critic = ValueOperator(
        nn.Sequential(nn.Linear(OBS, 16), nn.Tanh(), nn.Linear(16, 1)), in_keys=["observation"]
    )
    loss = loss_cls(actor, critic, entropy_coef=0.01, **loss_kw)
    opt = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=lr, eps=1e-5)
    return loss, opt


def make_batches(loss: ClipPPOLoss, n: int, size: int = 32, seed: int = 1) -> list[TensorDict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        td = TensorDict({"observation": torch.randn(size, OBS, generator=g)}, [size])
        with torch.no_grad():
            loss.actor_network(td)
        td["advantage"] = torch.randn(size, 1, generator=g)
        td["value_target"] = torch.randn(size, 1, generator=g)
        out.append(td)
    return out


def reference_step(loss, opt, td, max_grad_norm):
    out = loss(td)
    opt.zero_grad(set_to_none=True)
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    params = [p for group in opt.param_groups for p in group["params"]]
    norm = (
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm) if max_grad_norm is not None else None
    )
    opt.step()
    return out, norm


def adam_state(opt):
    return [
        (s["step"].clone(), s["exp_avg"].clone(), s["exp_avg_sq"].clone())
        for s in (opt.state[p] for p in opt.param_groups[0]["params"])
    ]


# each distribution once, and the gradient clip on and off (0.05: every step is clipped);
# the other two pairings add a compile each and no code path
