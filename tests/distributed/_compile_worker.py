"""Two-rank ``--compile`` training for test_ranks_whole_runs.py (run by torchrun).

The same small Pendulum run twice in one session, each rank on its own env seed: eagerly
under DDP, then with ``compile=True`` (the fused update as two graphs, the ranks' gradient
average between them). Both average the same gradients, so after the run the compiled
weights must equal the eager ones up to float rounding, and be the same on every rank.
Rank 0 writes the comparison to argv[1] as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile

import torch
from _dist_helpers import flat_params

from ppokit.distributed import World, init_distributed, shutdown_distributed
from ppokit.train.trainer import PPOTrainer


def run(world: World, *, compile: bool) -> tuple[torch.Tensor, torch.Tensor, PPOTrainer]:
    trainer = PPOTrainer(
        env="Pendulum-v1",
        run_dir=tempfile.mkdtemp(),
        world=world,
        num_envs=2,
        num_steps=32,
        num_epochs=2,
        num_minibatches=2,
        total_steps=256,  # 2 ranks x 64 steps: 2 iterations, 8 minibatch updates
        eval_episodes=0,
        progress=False,
        compile=compile,
    )
    before = flat_params(trainer.params)
    trainer.train()
    return before, flat_params(trainer.params), trainer


def main() -> None:
    world = init_distributed(device="cpu")
    start_e, eager, _ = run(world, compile=False)
    start_c, fused, trainer = run(world, compile=True)
    result = {
        "kind": trainer.update_kind,
        "fused_calls": trainer.update_step.fused_calls,  # type: ignore[attr-defined]
        "same_start": torch.equal(start_e, start_c),
        "moved": not torch.equal(start_c, fused),
        "same_on_ranks": all(torch.equal(fused, g) for g in world.all_gather(fused)),
        "max_diff_to_eager": float((fused - eager).abs().max()),
    }
    if world.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump(result, f)
    shutdown_distributed(synchronize=True)


if __name__ == "__main__":  # pytest --doctest-modules imports this file: no side effects
    main()
