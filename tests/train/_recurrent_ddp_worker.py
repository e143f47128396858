"""Two-rank recurrent training for test_recurrent_train.py (run by torchrun): after a few
iterations every rank must hold the same weights (DDP averaged the recurrent cores'
gradients too). Rank 0 writes ``{"same": bool, "wrapped": int}`` to argv[1]."""

from __future__ import annotations

import json
import sys
import tempfile

import torch
from torch.nn.parallel import DistributedDataParallel

from ppokit.distributed import init_distributed, shutdown_distributed
from ppokit.train.trainer import PPOTrainer


def main() -> None:
    world = init_distributed(device="cpu")
    trainer = PPOTrainer(
        env="ppokit/CartPoleNoVel-v1",
        run_dir=tempfile.mkdtemp(),
        world=world,
        recurrent="gru",
        recurrent_size=8,
        num_envs=2,
        num_steps=16,
        recurrent_seq_len=8,
        num_minibatches=2,
        num_epochs=2,
        total_steps=128,
        eval_episodes=0,
        progress=False,
    )
    trainer.train()
    flat = torch.cat([p.detach().flatten() for p in trainer.params])
    gathered = [torch.zeros_like(flat) for _ in range(world.world_size)]
    torch.distributed.all_gather(gathered, flat)
    wrapped = sum(isinstance(m, DistributedDataParallel) for m in trainer.actor.modules())
    if world.is_main:
        same = all(torch.equal(gathered[0], g) for g in gathered[1:])
        with open(sys.argv[1], "w") as f:
            json.dump({"same": same, "wrapped": wrapped}, f)
    shutdown_distributed(synchronize=True)


if __name__ == "__main__":  # pytest --doctest-modules imports this file: no side effects
    main()
