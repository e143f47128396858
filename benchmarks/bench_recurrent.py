"""Recurrent PPO throughput: ``ppokit train --recurrent lstm`` vs sb3-contrib's RecurrentPPO.

Run: ``python benchmarks/bench_recurrent.py [--iterations 8] [--repeats 2]``
(needs ``pip install sb3-contrib``; not a ppokit dependency).

Both trainers run in this process, one after the other (alternating order over repeats), on
``ppokit/CartPoleNoVel-v1`` with the same settings: 8 envs x 128 steps, 10 epochs, minibatches
of 256 steps, lr 1e-3 (constant), gamma 0.99, GAE lambda 0.95, clip 0.2, no entropy bonus,
value coefficient 0.5, gradient norm 0.5, advantage normalisation, no observation
normalisation, one torch thread, CPU, synchronous vector env, separate actor and critic LSTMs
of 64 units. The networks differ in where the 64-unit tanh layer sits (sb3-contrib: obs ->
LSTM -> 64 -> head; ppokit: obs -> 64 -> LSTM -> head), the same depth and nearly the same
size. ppokit trains on sequences of 32 steps (4 minibatches of 8 sequences); sb3-contrib
cuts its minibatches of 256 steps at episode starts and pads them.

SPS = environment steps / seconds of ``learn``/``train`` (collection and updates;
construction excluded), on the wall clock and on the calling thread's CPU clock (the latter
ignores time descheduled by other processes on a shared machine). The median over repeats
is reported, and the ratio ppokit / sb3-contrib.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line

ENV = "ppokit/CartPoleNoVel-v1"
NUM_ENVS, NUM_STEPS, EPOCHS, MINIBATCH, LR, HIDDEN = 8, 128, 10, 256, 1e-3, 64


def run_ppokit(iterations: int, seed: int) -> tuple[float, float]:
    from ppokit.train.trainer import PPOTrainer

    trainer = PPOTrainer(
        env=ENV,
        run_dir=tempfile.mkdtemp(),
        seed=seed,
        total_steps=iterations * NUM_ENVS * NUM_STEPS,
        num_envs=NUM_ENVS,
        num_steps=NUM_STEPS,
        num_epochs=EPOCHS,
        num_minibatches=NUM_ENVS * NUM_STEPS // MINIBATCH,
        lr=LR,
        anneal_lr=False,
        gamma=0.99,
        gae_lambda=0.95,
        entropy_coef=0.0,
        obs_norm=False,
        hidden_sizes=(HIDDEN,),
        recurrent="lstm",
        recurrent_size=HIDDEN,
        recurrent_seq_len=32,
        eval_episodes=0,
        checkpoint_every=10**6,
        progress=False,
    )
    wall, cpu = time.perf_counter(), time.thread_time()
    result = trainer.train()
    return result.env_steps / (time.perf_counter() - wall), result.env_steps / (
        time.thread_time() - cpu
    )


def run_sb3(iterations: int, seed: int) -> tuple[float, float]:
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env

    import ppokit.envs  # noqa: F401  (registers ppokit/CartPoleNoVel-v1)

    env = make_vec_env(ENV, n_envs=NUM_ENVS, seed=seed)
    model = RecurrentPPO(
        "MlpLstmPolicy",
        env,
        n_steps=NUM_STEPS,
        batch_size=MINIBATCH,
        n_epochs=EPOCHS,
        learning_rate=LR,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        seed=seed,
        device="cpu",
        policy_kwargs={
            "lstm_hidden_size": HIDDEN,
            "enable_critic_lstm": True,
            "shared_lstm": False,
            "net_arch": {"pi": [HIDDEN], "vf": [HIDDEN]},
            "activation_fn": torch.nn.Tanh,
        },
    )
    steps = iterations * NUM_ENVS * NUM_STEPS
    wall, cpu = time.perf_counter(), time.thread_time()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - wall), steps / (time.thread_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs: dict[str, list[tuple[float, float]]] = {"ppokit": [], "sb3-contrib": []}
    order = [("ppokit", run_ppokit), ("sb3-contrib", run_sb3)]
    for repeat in range(args.repeats):
        for name, fn in order if repeat % 2 == 0 else order[::-1]:
            runs[name].append(fn(args.iterations, seed=repeat))
            print(f"  repeat {repeat} {name}: {runs[name][-1][0]:.0f} SPS wall", flush=True)
    print(machine_line())
    print(f"{args.iterations} iterations of {NUM_ENVS} x {NUM_STEPS} steps, {args.repeats} repeats")
    print(f"{'trainer':<12} {'SPS (wall)':>12} {'SPS (cpu)':>12}")
    medians = {}
    for name, values in runs.items():
        medians[name] = (
            statistics.median(v[0] for v in values),
            statistics.median(v[1] for v in values),
        )
        print(f"{name:<12} {medians[name][0]:>12.0f} {medians[name][1]:>12.0f}")
    wall_ratio = medians["ppokit"][0] / medians["sb3-contrib"][0]
    cpu_ratio = medians["ppokit"][1] / medians["sb3-contrib"][1]
    print(f"ratio ppokit / sb3-contrib: {wall_ratio:.2f}x (wall), {cpu_ratio:.2f}x (cpu)")


if __name__ == "__main__":
    main()
