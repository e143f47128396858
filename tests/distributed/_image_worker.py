"""A rank of a 2-rank image run: a shared CNN trunk under DistributedDataParallel."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ppokit.distributed import World


def shared_trunk_worker(world: World) -> dict:
    """One iteration of a shared-trunk CNN trainer on this rank; its parameters afterwards."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train"))
    from image_toys import EndingImageEnv

    from ppokit.train.trainer import PPOTrainer

    trainer = PPOTrainer(
        env=EndingImageEnv,
        run_dir=tempfile.mkdtemp(prefix=f"ddp_image_{world.rank}_"),
        world=world,
        num_envs=2,
        num_steps=8,
        num_epochs=1,
        num_minibatches=2,
        total_steps=32,
        eval_episodes=0,
        progress=False,
    )
    before = [p.detach().clone() for p in trainer.params]
    trainer.update(trainer.collect())
    return {
        "before": before,
        "after": [p.detach().clone() for p in trainer.params],
        "keys": sorted(trainer.state_dict()["actor"]),
        "num_params": len(trainer.params),
    }
