"""Two-rank recurrent training for test_ranks_whole_runs.py (run by torchrun), in one session:

- ``separate``: GRU actor and critic with their own cores (DDP wraps encoder, core, head);
- ``shared``: one LSTM encoder and core for both (DDP cannot wrap it: the gradients are
  all-reduced after backward by ``GradientAverager``).

After a few iterations every rank must hold the same weights. The averager is also checked
on rank-specific gradients against the mean of all ranks' gathered gradients. Rank 0 writes
``{"separate": {...}, "shared": {...}, "averaged": bool}`` to argv[1].
"""

from __future__ import annotations

import json
import sys
import tempfile

import torch
from _dist_helpers import flat_params
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ppokit.distributed import GradientAverager, World, init_distributed, shutdown_distributed
from ppokit.train.trainer import PPOTrainer


def run(world: World, **layout: object) -> dict:
    trainer = PPOTrainer(
        env="ppokit/CartPoleNoVel-v1",
        run_dir=tempfile.mkdtemp(),
        world=world,
        recurrent_size=8,
        num_envs=2,
        num_steps=16,
        recurrent_seq_len=8,
        num_minibatches=2,
        num_epochs=2,
        total_steps=128,
        eval_episodes=0,
        progress=False,
        **layout,
    )
    before = flat_params(trainer.params)
    trainer.train()
    flat = flat_params(trainer.params)
    wrapped = sum(isinstance(m, DistributedDataParallel) for m in trainer.actor.modules())
    return {
        "same": all(torch.equal(flat, g) for g in world.all_gather(flat)),
        "moved": not torch.equal(before, flat),
        "wrapped": wrapped,
    }


def averaged(world: World) -> bool:
    """GradientAverager's gradients equal the mean of every rank's own gradients."""
    torch.manual_seed(world.rank)
    net = nn.Linear(3, 2)
    params = list(net.parameters())
    net(torch.randn(5, 3) * (world.rank + 1)).square().sum().backward()
    own = [p.grad.clone() for p in params]
    GradientAverager(world)(params)
    return all(
        torch.allclose(p.grad, torch.stack(world.all_gather(g)).mean(0))
        for p, g in zip(params, own)
    )


def main() -> None:
    world = init_distributed(device="cpu")
    result = {
        "separate": run(world, recurrent="gru"),
        "shared": run(world, recurrent="lstm", recurrent_shared=True),
        "averaged": averaged(world),
    }
    if world.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump(result, f)
    shutdown_distributed(synchronize=True)


if __name__ == "__main__":  # pytest --doctest-modules imports this file: no side effects
    main()
