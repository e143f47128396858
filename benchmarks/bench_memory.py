"""Memory of a training run: peak RSS, and RSS at 10k vs 100k steps (it must not grow).

Run: ``python benchmarks/bench_memory.py [--env HalfCheetah-v5] [--steps 100000]
[--early 10000] [--compile]``

Trains with the task's preset (HalfCheetah: 1 env x 512 steps, 20 epochs, minibatch 64,
256x256 networks, observation and reward normalisation, logging on, checkpoints every 50
iterations) in this process. A thread samples the resident set size (psutil) every 0.1 s
together with the trainer's step count. Printed: RSS before training, the first sample at or after
``--early`` steps, the last sample (at ``--steps``), their ratio, and the peak RSS of the
process (``getrusage``). The goal is a ratio within 1.10: no per-iteration leak. With
``--compile`` the updates run :class:`ppokit.FusedPPOUpdate` (compiled in the first
iterations, well before ``--early``).
A 100k-step HalfCheetah run takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--early", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="train with compile=True")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from ppokit.train.settings.presets import preset_config
    from ppokit.train.trainer import PPOTrainer

    print(machine_line())
    proc = psutil.Process()
    samples: list[tuple[int, int]] = []  # (env steps, rss bytes)
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = preset_config(
            args.env,
            seed=args.seed,
            total_steps=args.steps,
            eval_episodes=0,
            progress=False,
            torch_threads=1,
            compile=args.compile,
        )
        trainer = PPOTrainer(cfg, run_dir=Path(tmp) / "run")
        rss_start = proc.memory_info().rss

        def sample() -> None:
            while not stop.is_set():
                samples.append((trainer.env_steps, proc.memory_info().rss))
                time.sleep(0.1)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        stop.set()
        thread.join()
        samples.append((trainer.env_steps, proc.memory_info().rss))
    early = next(((s, r) for s, r in samples if s >= args.early), samples[0])
    last = samples[-1]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    mb = 1024 * 1024
    mode = ", compile=True" if args.compile else ""
    print(f"{args.env}: {last[0]} steps in {seconds:.0f} s, preset config{mode}")
    print("| measure | RSS |")
    print("|---|---|")
    print(f"| before training | {rss_start / mb:.0f} MB |")
    print(f"| at {early[0]} steps | {early[1] / mb:.0f} MB |")
    print(f"| at {last[0]} steps | {last[1] / mb:.0f} MB |")
    print(f"| ratio last / early | {last[1] / early[1]:.3f} |")
    print(f"| peak (getrusage) | {peak_kb / 1024:.0f} MB |")


if __name__ == "__main__":
    main()
