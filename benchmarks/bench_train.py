"""Training throughput: ``ppokit train`` vs Stable-Baselines3 PPO, and the env-only ceiling.

Run: ``python benchmarks/bench_train.py [--tasks cartpole halfcheetah] [--iterations 8 4]
[--repeats 1] [--compile]``

Both trainers run in this process, one after the other (alternating order over repeats),
with the same hyperparameters and networks:

* CartPole-v1: 4 envs x 128 steps, 4 epochs, minibatch 128, lr 2.5e-4, entropy 0.01;
* HalfCheetah-v5: 1 env x 2048 steps, 10 epochs, minibatch 64, lr 3e-4, entropy 0;

and for both: gamma 0.99, GAE lambda 0.95, clip 0.2, value coefficient 0.5 with a squared
error, gradient norm 0.5, per-minibatch advantage normalisation, constant learning rate, no
observation/reward normalisation, separate 64x64 tanh actor and critic with orthogonal
init (policy gain 0.01, value gain 1) and a state-independent log-std starting at 0,
synchronous vector env, one torch thread, CPU. SPS counts environment steps per second of
the training loop (collection + updates; construction and evaluation excluded). The
environment-only row steps the same vector env with random actions: no trainer can beat it.
A second table splits ppokit's time per environment step into collection (acting + env) and
updates (GAE + epochs of minibatches). Each trainer first runs one untimed iteration, so that
first-use costs (the import of ``torch._dynamo`` by the optimizers' first step, TensorBoard,
MuJoCo) hit neither run.

``--compile`` adds a third trainer, ``ppokit train --compile`` (compiled loss and, for the
Gaussian policy, compiled acting). Its first two iterations (one eager, one compiling) are not
timed: its SPS is the steady state, and the time those two iterations took is printed apart.

The returns are the mean of the last 20 finished training episodes of each run, at the
same number of steps. The default runs are short (a few minutes in all) and say little
about learning; pass ``--iterations 200 250`` (about 100k / 500k steps) for that.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line


@dataclass(frozen=True)
class Task:
    env_id: str
    num_envs: int
    num_steps: int
    num_epochs: int
    minibatch_size: int
    lr: float
    ent_coef: float
    default_iterations: int


TASKS = {
    "cartpole": Task("CartPole-v1", 4, 128, 4, 128, 2.5e-4, 0.01, 16),
    "halfcheetah": Task("HalfCheetah-v5", 1, 2048, 10, 64, 3e-4, 0.0, 6),
}
#: iterations a compiled run spends before its timing starts: one eager, one compiling
COMPILE_WARMUP_ITERATIONS = 2
COMMON = dict(gamma=0.99, gae_lambda=0.95, clip=0.2, vf_coef=0.5, max_grad_norm=0.5)


@dataclass
class RunResult:
    steps: int
    seconds: float
    returns: list[float]
    collect_seconds: float = float("nan")  # ppokit only: time in collect() / update()
    update_seconds: float = float("nan")
    warmup_seconds: float = 0.0  # ppokit compiled: the untimed eager + compiling iterations

    @property
    def sps(self) -> float:
        return self.steps / self.seconds


def ppokit_config(task: Task, iterations: int, seed: int, *, compile: bool = False) -> Any:
    """The ``TrainConfig`` matched to SB3's settings for ``task`` (every field the presets
    set is given here, so a preset change cannot leak into the comparison)."""
    from ppokit.train.settings.presets import preset_config

    batch = task.num_envs * task.num_steps
    return preset_config(
        task.env_id,
        seed=seed,
        total_steps=batch * iterations,
        num_envs=task.num_envs,
        compile=compile,
        num_steps=task.num_steps,
        num_epochs=task.num_epochs,
        num_minibatches=batch // task.minibatch_size,
        lr=task.lr,
        anneal_lr=False,
        gamma=COMMON["gamma"],
        gae_lambda=COMMON["gae_lambda"],
        clip_epsilon=COMMON["clip"],
        clip_value=False,
        entropy_coef=task.ent_coef,
        critic_coef=COMMON["vf_coef"],
        loss_critic_type="l2",
        max_grad_norm=COMMON["max_grad_norm"],
        normalize_advantage=True,
        target_kl=None,
        obs_norm=False,
        reward_scale=False,
        hidden_sizes=(64, 64),
        activation="tanh",
        init_log_std=0.0,
        ortho_init=True,
        torch_threads=1,
        eval_episodes=0,
        checkpoint_every=10**9,
        keep_checkpoint_every=0,
        progress=False,
        vector_mode="sync",
    )


def run_ppokit(task: Task, iterations: int, seed: int, *, compile: bool = False) -> RunResult:
    """ppokit's trainer; with ``compile``, the first two iterations (eager, then compiling)
    are not timed, so the SPS is the compiled steady state (the compile time is reported
    apart); the returns are still those after ``iterations`` iterations, as for the others."""
    from ppokit.train.trainer import PPOTrainer

    batch = task.num_envs * task.num_steps
    warmup = COMPILE_WARMUP_ITERATIONS if compile else 0
    if iterations <= warmup:
        raise SystemExit(f"--compile needs more than {warmup} iterations per task")
    cfg = ppokit_config(task, iterations, seed, compile=compile)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = PPOTrainer(cfg, run_dir=Path(tmp) / "run")
        spent = {"collect": 0.0, "update": 0.0}
        warm = {"seconds": 0.0, "updates": 0}
        for name in spent:  # time the two phases of each iteration (instance-level wrappers)
            inner = getattr(trainer, name)

            def timed(*args, _inner=inner, _name=name):
                t0 = time.perf_counter()
                out = _inner(*args)
                seconds = time.perf_counter() - t0
                if warm["updates"] < warmup:  # an untimed warm-up iteration
                    warm["seconds"] += seconds
                    warm["updates"] += _name == "update"
                else:
                    spent[_name] += seconds
                return out

            setattr(trainer, name, timed)
        result = trainer.train()
        returns = list(trainer.recent_returns)
    return RunResult(
        result.env_steps - warmup * batch,
        result.wall_seconds - warm["seconds"],
        returns[-20:],
        spent["collect"],
        spent["update"],
        warm["seconds"],
    )


def run_sb3(task: Task, iterations: int, seed: int) -> RunResult:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    env = make_vec_env(task.env_id, n_envs=task.num_envs, seed=seed)
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=task.lr,
        n_steps=task.num_steps,
        batch_size=task.minibatch_size,
        n_epochs=task.num_epochs,
        gamma=COMMON["gamma"],
        gae_lambda=COMMON["gae_lambda"],
        clip_range=COMMON["clip"],
        ent_coef=task.ent_coef,
        vf_coef=COMMON["vf_coef"],
        max_grad_norm=COMMON["max_grad_norm"],
        normalize_advantage=True,
        target_kl=None,
        seed=seed,
        device="cpu",
        verbose=0,
        policy_kwargs=dict(
            net_arch=dict(pi=[64, 64], vf=[64, 64]),
            activation_fn=nn.Tanh,
            ortho_init=True,
            log_std_init=0.0,
        ),
    )
    steps = task.num_envs * task.num_steps * iterations
    start = time.perf_counter()
    model.learn(total_timesteps=steps, progress_bar=False)
    seconds = time.perf_counter() - start
    returns = [float(info["r"]) for info in model.ep_info_buffer][-20:]
    env.close()
    return RunResult(model.num_timesteps, seconds, returns)


def run_env_only(task: Task, steps: int, seed: int) -> RunResult:
    import gymnasium as gym

    envs = gym.make_vec(task.env_id, num_envs=task.num_envs, vectorization_mode="sync")
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    actions = [envs.action_space.sample() for _ in range(64)]
    n = 0
    start = time.perf_counter()
    while n < steps:
        envs.step(actions[(n // task.num_envs) % len(actions)])
        n += task.num_envs
    seconds = time.perf_counter() - start
    envs.close()
    return RunResult(n, seconds, [])


def _fmt_returns(returns: list[float]) -> str:
    if not returns:
        return "n/a"
    return f"{statistics.mean(returns):.1f} ({len(returns)} ep)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--iterations",
        nargs="+",
        type=int,
        default=None,
        help="iterations per task (default: 16 for CartPole, 6 for HalfCheetah)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each trainer (alternating order); SPS is the median",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also run ppokit with --compile (steady-state SPS; the compile "
        "time is printed separately)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    np.random.seed(args.seed)
    iterations = args.iterations or [TASKS[t].default_iterations for t in args.tasks]
    if len(iterations) != len(args.tasks):
        parser.error("--iterations needs one number per task")
    print(machine_line())
    import stable_baselines3

    print(f"stable-baselines3 {stable_baselines3.__version__}, median of {args.repeats} run(s)")
    rows = []
    for key, iters in zip(args.tasks, iterations):
        task = TASKS[key]
        order: list[tuple[str, Callable[..., RunResult]]] = [
            ("ppokit", run_ppokit),
            ("sb3", run_sb3),
        ]
        if args.compile:
            order.append(("ppokit compiled", functools.partial(run_ppokit, compile=True)))
        runs: dict[str, list[RunResult]] = {name: [] for name, _ in order}
        for _, fn in order[:2]:  # untimed warm-up: first-use imports (torch._dynamo via the
            fn(task, 1, args.seed)  # optimizers, tensorboard, MuJoCo) must not count
        for r in range(args.repeats):
            for name, fn in order[r % len(order) :] + order[: r % len(order)]:  # rotate
                runs[name].append(fn(task, iters, args.seed + r))
        ceiling = run_env_only(task, runs["ppokit"][0].steps, args.seed)
        sps = {name: statistics.median(x.sps for x in res) for name, res in runs.items()}
        rows.append((task, runs, sps, ceiling))

    print(
        "\n| task | trainer | timed steps | SPS | / SB3 | / env-only (SPS) "
        "| return at equal steps |"
    )
    print("|---|---|---|---|---|---|---|")
    for task, runs, sps, ceiling in rows:
        for name, res in runs.items():
            print(
                f"| {task.env_id} | {name} | {res[0].steps} | {sps[name]:,.0f} | "
                f"{sps[name] / sps['sb3']:.2f} | {sps[name] / ceiling.sps:.2f} "
                f"({ceiling.sps:,.0f}) | {_fmt_returns(res[0].returns)} |"
            )
    print("\nppokit time per environment step (median over runs):\n")
    print("| task | trainer | collect (us) | update (us) | collect share | warm-up + compile (s) |")
    print("|---|---|---|---|---|---|")
    for task, runs, _, _ in rows:
        for name, res in runs.items():
            if name == "sb3":
                continue
            col = statistics.median(r.collect_seconds / r.steps for r in res) * 1e6
            upd = statistics.median(r.update_seconds / r.steps for r in res) * 1e6
            warm = statistics.median(r.warmup_seconds for r in res)
            print(
                f"| {task.env_id} | {name} | {col:.0f} | {upd:.0f} | {col / (col + upd):.0%} "
                f"| {warm:.1f} |"
            )


if __name__ == "__main__":
    main()
