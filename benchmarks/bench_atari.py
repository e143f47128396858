"""Atari throughput: ppokit vs Stable-Baselines3 PPO ``CnnPolicy``, the two env backends, RSS.

Run: ``python benchmarks/bench_atari.py [--env BreakoutNoFrameskip-v4] [--rounds 4]
[--threads 1] [--rss-iterations 30] [--skip-env] [--skip-train] [--gym] [--bf16]``

Three parts, all in this process:

1. **Environment only**: 8 games stepped with random actions through ale-py's threaded C++
   ``AtariVectorEnv`` (ppokit's default backend) and through Gymnasium's ``SyncVectorEnv`` of
   ``AtariPreprocessing`` + ``FrameStackObservation`` games (its ``"gymnasium"`` backend). No
   trainer can beat these rates.
2. **Training, side by side**: the PPO paper's Atari settings for every candidate (8 envs x 128
   steps, 4 epochs x 4 minibatches of 256, lr 2.5e-4, clip 0.1, entropy 0.01, value
   coefficient 0.5, gamma 0.99, lambda 0.95, grad norm 0.5; Nature CNN shared by actor and
   critic, uint8 frames scaled in the network; CPU, ``--threads`` torch threads):
   ``sb3`` (``PPO("CnnPolicy")`` on SB3's own ``make_atari_env`` + ``VecFrameStack``),
   ``ppokit`` (its default ALE vector env), ``ppokit-compile`` (the same with ``compile=True``:
   the fused update) and, with ``--gym``, ``ppokit-gym`` (the Gymnasium backend, the same
   kind of Python-side env as SB3's), and with ``--bf16`` ``ppokit-bf16`` and
   ``ppokit-compile-bf16`` (``precision="bfloat16"``: the CNN in mixed precision; needs
   native bfloat16; SB3 has no such option, so these are no matched-settings comparison).
   Each ppokit candidate prints its rollout's measured
   bytes, and the CPU seconds of its collect and update (GAE + epochs) phases. The
   candidates are interleaved: each round runs one 1,024-step iteration (collect + update)
   of each, so a burst of load from other
   processes hits all alike; one untimed warm-up iteration each first. Reported: median
   steps per second over rounds, by wall clock and by this process's CPU time (all threads:
   on a shared machine the CPU figure is the fairer one), and the ratios to SB3.
3. **RSS**: the resident memory of a ppokit run after each of ``--rss-iterations``
   iterations (flat means no growth), and the rollout's bytes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line

N_ENVS, N_STEPS, EPOCHS, MINIBATCH = 8, 128, 4, 256


def env_only(env_id: str, steps: int) -> dict[str, float]:
    """Random-action steps per second of the two backends (8 games each)."""
    from ppokit.envs.atari import make_atari_vector_env

    out = {}
    for backend in ("ale", "gymnasium"):
        venv = make_atari_vector_env(env_id, N_ENVS, backend=backend)
        venv.reset(seed=0)
        rng = np.random.default_rng(0)
        n = int(venv.single_action_space.n)
        t0 = time.perf_counter()
        for _ in range(steps):
            venv.step(rng.integers(0, n, N_ENVS))
        out[backend] = steps * N_ENVS / (time.perf_counter() - t0)
        venv.close()
    return out


#: CPU seconds of each ppokit candidate's phases, per timed iteration
PHASES: dict[str, dict[str, list[float]]] = {}


def ppokit_candidate(
    env_id: str,
    backend: str,
    threads: int,
    *,
    compile: bool = False,
    precision: str = "float32",
    name: str = "ppokit",
) -> Callable[[], None]:
    from ppokit.envs.atari import make_atari_vector_env
    from ppokit.train.settings.presets import preset_config
    from ppokit.train.trainer import PPOTrainer

    cfg = preset_config(
        env_id,
        total_steps=10_000_000,
        eval_episodes=0,
        progress=False,
        device="cpu",
        torch_threads=threads,
        clip_value=False,  # as SB3's default (clip_range_vf=None)
        compile=compile,
        precision=precision,
    )
    env: Any = (
        env_id if backend == "ale" else make_atari_vector_env(env_id, N_ENVS, backend=backend)
    )
    trainer = PPOTrainer(cfg, env=env, run_dir=tempfile.mkdtemp(prefix=f"bench_{backend}_"))

    rollout = trainer.collector.rollout
    leaves = rollout.values(include_nested=True, leaves_only=True)
    print(f"{name}: rollout {sum(leaf.nbytes for leaf in leaves):,} bytes (measured)")
    phases = PHASES.setdefault(name, {"collect": [], "update": []})

    def iteration() -> None:
        trainer.iteration += 1
        for group in trainer.optimizer.param_groups:
            group["lr"] = trainer.learning_rate(trainer.iteration)
        c0 = time.process_time()
        rollout = trainer.collect()
        c1 = time.process_time()
        trainer.update(rollout)  # GAE (on the recorded values), then the epochs
        phases["collect"].append(c1 - c0)
        phases["update"].append(time.process_time() - c1)

    return iteration


def sb3_candidate(env_id: str, threads: int) -> Callable[[], None]:
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    torch.set_num_threads(threads)
    env = VecFrameStack(make_atari_env(env_id, n_envs=N_ENVS, seed=0), n_stack=4)
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=N_STEPS,
        n_epochs=EPOCHS,
        batch_size=MINIBATCH,
        learning_rate=lambda frac: 2.5e-4 * frac,
        clip_range=0.1,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        gamma=0.99,
        gae_lambda=0.95,
        device="cpu",
        seed=0,
        verbose=0,
    )

    def iteration() -> None:
        model.learn(N_ENVS * N_STEPS, reset_num_timesteps=False)

    return iteration


def train_side_by_side(
    env_id: str, rounds: int, threads: int, *, gym: bool, bf16: bool
) -> dict[str, dict[str, float]]:
    makers: dict[str, Callable[[], Callable[[], None]]] = {
        "sb3": lambda: sb3_candidate(env_id, threads),
        "ppokit": lambda: ppokit_candidate(env_id, "ale", threads),
        "ppokit-compile": lambda: ppokit_candidate(
            env_id, "ale", threads, compile=True, name="ppokit-compile"
        ),
    }
    if gym:
        makers["ppokit-gym"] = lambda: ppokit_candidate(
            env_id, "gymnasium", threads, name="ppokit-gym"
        )
    if bf16:
        makers["ppokit-bf16"] = lambda: ppokit_candidate(
            env_id, "ale", threads, precision="bfloat16", name="ppokit-bf16"
        )
        makers["ppokit-compile-bf16"] = lambda: ppokit_candidate(
            env_id, "ale", threads, compile=True, precision="bfloat16", name="ppokit-compile-bf16"
        )
    runs = {}
    for name, make in makers.items():
        runs[name] = make()
        torch.set_num_threads(threads)
        runs[name]()  # warm-up iteration (first-use costs; the compiled graphs)
        for times in PHASES.get(name, {}).values():
            times.clear()
    wall: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            torch.set_num_threads(threads)
            w0, c0 = time.perf_counter(), time.process_time()
            runs[name]()
            wall[name].append(N_ENVS * N_STEPS / (time.perf_counter() - w0))
            cpu[name].append(N_ENVS * N_STEPS / (time.process_time() - c0))
            print(
                f"  round {r}: {name:10s} wall {wall[name][-1]:7.1f} SPS, "
                f"cpu {cpu[name][-1]:7.1f} SPS",
                flush=True,
            )
    return {k: {"wall": statistics.median(wall[k]), "cpu": statistics.median(cpu[k])} for k in runs}


def rss_over_run(env_id: str, iterations: int, threads: int) -> list[float]:
    import psutil

    proc = psutil.Process()
    step = ppokit_candidate(env_id, "ale", threads)
    out = []
    for _ in range(iterations):
        step()
        out.append(proc.memory_info().rss / 2**20)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--env-steps", type=int, default=500)
    parser.add_argument("--rss-iterations", type=int, default=0)
    parser.add_argument("--skip-env", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--gym", action="store_true", help="also ppokit on Gymnasium's envs")
    parser.add_argument("--bf16", action="store_true", help="also ppokit --precision bfloat16")
    args = parser.parse_args()
    print(machine_line())
    print(
        f"env {args.env}; {N_ENVS} envs x {N_STEPS} steps, {EPOCHS} epochs, minibatch "
        f"{MINIBATCH}; torch threads {args.threads}"
    )
    obs_bytes = N_ENVS * N_STEPS * 4 * 84 * 84
    print(
        f"rollout observations: {N_ENVS} x {N_STEPS} x 4 x 84 x 84 = {obs_bytes:,} bytes "
        f"({obs_bytes / 1e6:.1f} MB) as uint8, {4 * obs_bytes / 1e6:.1f} MB as float32"
    )
    if not args.skip_env:
        rates = env_only(args.env, args.env_steps)
        print("\n| env backend (random actions, 8 games) | steps/s |\n|---|---|")
        for name, sps in rates.items():
            print(f"| {name} | {sps:,.0f} |")
    if not args.skip_train:
        res = train_side_by_side(args.env, args.rounds, args.threads, gym=args.gym, bf16=args.bf16)
        base = res["sb3"]
        print("\n| trainer | SPS (wall) | SPS (CPU time) | x SB3 (wall) | x SB3 (CPU) |")
        print("|---|---|---|---|---|")
        for name, r in res.items():
            print(
                f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | "
                f"{r['wall'] / base['wall']:.2f} | {r['cpu'] / base['cpu']:.2f} |"
            )
        print("\n| ppokit candidate | collect (CPU s) | GAE + epochs (CPU s) |\n|---|---|---|")
        for name, times in PHASES.items():
            print(
                f"| {name} | {statistics.median(times['collect']):.2f} | "
                f"{statistics.median(times['update']):.2f} |"
            )
    if args.rss_iterations:
        rss = rss_over_run(args.env, args.rss_iterations, args.threads)
        print(f"\nRSS (MiB) after iterations 1..{len(rss)}: " + ", ".join(f"{x:.0f}" for x in rss))
        print(
            f"first {rss[0]:.0f} MiB, last {rss[-1]:.0f} MiB, "
            f"growth after iteration 2: {rss[-1] - rss[min(1, len(rss) - 1)]:+.0f} MiB"
        )


if __name__ == "__main__":
    main()
