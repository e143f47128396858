"""Where one PPO update's time goes: ``cProfile`` over ``PPOTrainer.update``.

Run: ``python benchmarks/profile_update.py [--task halfcheetah] [--compile] [--sort tottime]``

Builds the trainer of ``bench_train.py``'s task (same hyperparameters and networks), collects
one rollout, runs two untimed updates (the second compiles, with ``--compile``), times a
third, then profiles a fourth and prints the top functions. The share of ``torch.mm`` /
``torch.addmm`` is the networks' own matmul work, which every trainer pays alike.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import TASKS, ppokit_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="halfcheetah", choices=list(TASKS))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--sort", default="tottime", help="pstats sort key")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from ppokit.train.trainer import PPOTrainer

    task = TASKS[args.task]
    batch = task.num_envs * task.num_steps
    cfg = ppokit_config(task, 100, 1, compile=args.compile)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = PPOTrainer(cfg, run_dir=Path(tmp) / "run")
        rollout = trainer.collect()
        trainer.update(rollout)
        trainer.update(rollout)
        minibatches = task.num_epochs * batch // task.minibatch_size
        start = time.perf_counter()
        trainer.update(rollout)
        seconds = time.perf_counter() - start
        print(
            f"{task.env_id}: {seconds * 1e3 / minibatches:.2f} ms per minibatch "
            f"({minibatches} minibatches, compile={args.compile})"
        )
        profile = cProfile.Profile()
        profile.enable()
        trainer.update(rollout)
        profile.disable()
        stats = pstats.Stats(profile)
        matmul = sum(
            v[2]
            for k, v in stats.stats.items()
            if k[2] in ("<built-in method torch.mm>", "<built-in method torch.addmm>")
        )
        print(f"torch.mm + torch.addmm: {matmul / stats.total_tt:.0%} of the profiled update")
        stats.sort_stats(args.sort).print_stats(args.top)
        trainer.env.close()


if __name__ == "__main__":
    main()
