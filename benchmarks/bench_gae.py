"""GAE speed: ppokit's doubling scan vs a plain Python loop and TorchRL's functionals.

Run: ``python benchmarks/bench_gae.py [--repeats 15] [--done-prob 0.01]``

One thread, interleaved repeats (each round times every implementation once, so load from
other processes hits all of them alike); prints the median time per call and the ratios.
Checks that every implementation agrees with the plain loop before timing. A second table
times the TensorDict modules (``ppokit.GAE`` vs ``torchrl.objectives.value.GAE``) end to end
with a 64-64 tanh MLP critic run under detached params, as a PPO loss calls them. A third
times the V-trace functionals (ppokit's scan vs TorchRL's loop over time).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch

from ppokit.value.functional import generalized_advantage_estimate

GAMMA, LMBDA = 0.99, 0.95
SHAPES = [(1, 2048), (8, 128), (64, 256)]  # (batch, time)


def plain_loop_gae(value, next_value, reward, done, terminated):
    """The textbook loop over time (CleanRL style), [B, T, 1] inputs."""
    advantage = torch.empty_like(value)
    last = torch.zeros_like(value[:, 0])
    for t in reversed(range(value.shape[1])):
        delta = reward[:, t] + GAMMA * next_value[:, t] * (~terminated[:, t]) - value[:, t]
        last = delta + GAMMA * LMBDA * (~done[:, t]) * last
        advantage[:, t] = last
    return advantage


def make_data(batch: int, time_steps: int, done_prob: float):
    gen = torch.Generator().manual_seed(0)
    shape = (batch, time_steps, 1)
    terminated = torch.rand(shape, generator=gen) < done_prob / 2
    done = terminated | (torch.rand(shape, generator=gen) < done_prob / 2)
    value, next_value, reward = (torch.randn(shape, generator=gen) for _ in range(3))
    return value, next_value, reward, done, terminated


def candidates() -> dict[str, Callable]:
    def ours(v, nv, r, d, te):
        return generalized_advantage_estimate(GAMMA, LMBDA, v, nv, r, d, te)[0]

    found: dict[str, Callable] = {"plain loop": plain_loop_gae, "ppokit": ours}
    try:
        from torchrl.objectives.value import functional as trl
    except ImportError:
        print("torchrl not installed: TorchRL columns skipped")
        return found

    def torchrl_loop(v, nv, r, d, te):
        return trl.generalized_advantage_estimate(GAMMA, LMBDA, v, nv, r, d, te)[0]

    def torchrl_vec(v, nv, r, d, te):
        return trl.vec_generalized_advantage_estimate(GAMMA, LMBDA, v, nv, r, d, te)[0]

    found["torchrl loop"] = torchrl_loop
    found["torchrl vec"] = torchrl_vec
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--done-prob", type=float, default=0.01)
    args = parser.parse_args()
    torch.set_num_threads(1)
    funcs = candidates()
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats} interleaved rounds")
    header = f"{'shape [B, T]':>14} | " + " | ".join(f"{n:>13}" for n in funcs)
    print(header + " | loop/ppokit | torchrl loop/ppokit | torchrl vec/ppokit")
    for batch, steps in SHAPES:
        data = make_data(batch, steps, args.done_prob)
        reference = plain_loop_gae(*data)
        for name, fn in funcs.items():
            err = (fn(*data) - reference).abs().max().item()
            if err > 1e-4:
                raise RuntimeError(f"{name} disagrees with the plain loop by {err:.2e}")
        # inner repetitions so that one sample lasts >= ~2 ms even for fast versions
        inner = {n: 1 if "loop" in n else 20 for n in funcs}
        times: dict[str, list[float]] = {n: [] for n in funcs}
        for _ in range(args.repeats):
            for name, fn in funcs.items():
                start = time.perf_counter()
                for _ in range(inner[name]):
                    fn(*data)
                times[name].append((time.perf_counter() - start) / inner[name])
        med = {n: statistics.median(t) for n, t in times.items()}
        cells = " | ".join(f"{med[n] * 1e3:10.3f} ms" for n in funcs)
        ratios = [med["plain loop"] / med["ppokit"]]
        for other in ("torchrl loop", "torchrl vec"):
            if other in med:
                ratios.append(med[other] / med["ppokit"])
        ratio_cells = " | ".join(f"{r:8.1f}x" for r in ratios)
        print(f"{f'[{batch}, {steps}]':>14} | {cells} | {ratio_cells}")
    bench_modules(args.repeats, args.done_prob)
    bench_vtrace(args.repeats, args.done_prob)


def bench_vtrace(repeats: int, done_prob: float) -> None:
    """V-trace on tensors: ppokit's scan vs TorchRL's loop over time (same numbers checked)."""
    try:
        from torchrl.objectives.value.functional import vtrace_advantage_estimate as theirs
    except ImportError:
        return
    from ppokit.value.functional_vtrace import vtrace_advantage_estimate as ours

    print("\nV-trace functionals (rho_thresh=c_thresh=1), median per call")
    for batch, steps in SHAPES:
        value, next_value, reward, done, terminated = make_data(batch, steps, done_prob)
        gen = torch.Generator().manual_seed(1)
        log_pi, log_mu = (0.3 * torch.randn(value.shape, generator=gen) for _ in range(2))
        args = (GAMMA, log_pi, log_mu, value, next_value, reward, done, terminated)
        funcs = {
            "ppokit": functools.partial(ours, *args),
            "torchrl": functools.partial(theirs, *args),
        }
        err = (funcs["ppokit"]()[0] - funcs["torchrl"]()[0]).abs().max().item()
        if err > 1e-4:
            raise RuntimeError(f"V-trace: ppokit and TorchRL disagree by {err:.2e}")
        times: dict[str, list[float]] = {n: [] for n in funcs}
        for _ in range(repeats):
            for name, fn in funcs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        med = {n: statistics.median(t) for n, t in times.items()}
        cells = " | ".join(f"{n} {m * 1e3:8.3f} ms" for n, m in med.items())
        ratio = med["torchrl"] / med["ppokit"]
        print(f"{f'[{batch}, {steps}]':>14} | {cells} | torchrl/ppokit {ratio:6.1f}x")


def bench_modules(repeats: int, done_prob: float) -> None:
    try:
        from torchrl.objectives.value import GAE as TorchRLGAE
    except ImportError:
        return
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torch import nn

    from ppokit.value.estimators import GAE

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
    critic = TensorDictModule(mlp, ["observation"], ["state_value"])
    params = TensorDict.from_module(critic).detach()
    modules = {
        "ppokit.GAE": GAE(gamma=GAMMA, lmbda=LMBDA, value_network=critic),
        "torchrl GAE": TorchRLGAE(gamma=GAMMA, lmbda=LMBDA, value_network=critic),
    }
    print("\nTensorDict modules (critic forward included), median per call")
    for batch, steps in SHAPES:
        _, _, reward, done, terminated = make_data(batch, steps, done_prob)
        rollout = TensorDict(
            {
                "observation": torch.randn(batch, steps, 8),
                "next": {
                    "observation": torch.randn(batch, steps, 8),
                    "reward": reward,
                    "done": done,
                    "terminated": terminated,
                },
            },
            batch_size=[batch, steps],
        )
        times: dict[str, list[float]] = {n: [] for n in modules}
        for _ in range(repeats):
            for name, module in modules.items():
                data = rollout.clone()
                start = time.perf_counter()
                module(data, params=params)
                times[name].append(time.perf_counter() - start)
        med = {n: statistics.median(t) for n, t in times.items()}
        cells = " | ".join(f"{n} {m * 1e3:8.3f} ms" for n, m in med.items())
        ratio = med["torchrl GAE"] / med["ppokit.GAE"]
        print(f"{f'[{batch}, {steps}]':>14} | {cells} | torchrl/ppokit {ratio:5.2f}x")


if __name__ == "__main__":
    main()
