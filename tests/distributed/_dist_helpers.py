"""Run a function on N gloo ranks in fresh processes, with a deadline; shared test builders."""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import queue
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

OBS = 3
N_ACTIONS = 4
ACT_DIM = 2
BATCH = 16


def flat_params(params: Any) -> torch.Tensor:
    """The values of ``params`` (an iterable of tensors) as one detached flat vector."""
    return torch.cat([p.detach().flatten() for p in params])


def torchrun_worker(worker: Path, out: Path, *, timeout: float, dist_timeout: int) -> Any:
    """Run ``worker`` (a script that writes JSON to its argv[1]) on two gloo ranks through the
    real launcher (``python -m torch.distributed.run``); its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PPOKIT_DIST_TIMEOUT": str(dist_timeout)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*cmd, str(worker), str(out)], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    port: int,
    args: tuple,
    results: Any,
    collective_timeout: float,
) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from ppokit.distributed import init_distributed, shutdown_distributed

    status_ok = False
    try:
        world = init_distributed(device="cpu", timeout=collective_timeout)
        out = fn(world, *args)
        status_ok = True
        # plain bytes: a tensor sent through a Queue is shared memory that dies with this process
        buffer = io.BytesIO()
        torch.save(out, buffer)
        results.put((rank, "ok", buffer.getvalue()))
    except BaseException:  # report to the parent rather than dying silently
        results.put((rank, "error", traceback.format_exc()))
    finally:
        shutdown_distributed(synchronize=status_ok)


def run_ranks(
    fn: Callable[..., Any],
    world_size: int = 2,
    *args: Any,
    timeout: float = 90.0,
    collective_timeout: float = 30.0,
) -> list[Any]:
    """``fn(world, *args)`` on every rank; returns the results in rank order.

    ``fn`` must be importable (module level); results must be picklable (use lists/numpy or
    CPU tensors). Raises if a rank fails or the deadline passes (the processes are killed).
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_entry, args=(fn, r, world_size, port, args, results, collective_timeout)
        )
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    got: dict[int, Any] = {}
    try:
        for _ in range(world_size):
            rank, status, payload = results.get(timeout=timeout)
            if status != "ok":
                raise AssertionError(f"rank {rank} failed:\n{payload}")
            got[rank] = torch.load(io.BytesIO(payload), weights_only=False)
    except queue.Empty:
        raise AssertionError(f"ranks did not finish within {timeout} s") from None
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    return [got[r] for r in range(world_size)]


# ---------------------------------------------------------------------------- builders
class GaussianNet(nn.Module):
    """loc from an MLP, scale from a free log-std parameter (as the trainer's head)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(OBS, 8), nn.Tanh(), nn.Linear(8, ACT_DIM))
        self.log_std = nn.Parameter(torch.full((ACT_DIM,), -0.3))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.net(obs)
        return loc, self.log_std.exp().expand_as(loc)


def build(kind: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Actor and critic with deterministic weights (same on every rank)."""
    from ppokit import Categorical, IndependentNormal, ProbabilisticActor, ValueOperator

    torch.manual_seed(seed)
    if kind == "shared":  # the CNN builder's layout: one SharedTrunk under both heads
        from ppokit.modules.cnn import SharedTrunk

        trunk = SharedTrunk(nn.Sequential(nn.Linear(OBS, 8), nn.Tanh()))
        actor = ProbabilisticActor(
            TensorDictModule(
                nn.Sequential(trunk, nn.Linear(8, N_ACTIONS)), ["observation"], ["logits"]
            ),
            in_keys=["logits"],
            distribution_class=Categorical,
            return_log_prob=True,
        )
        critic = ValueOperator(nn.Sequential(trunk, nn.Linear(8, 1)), in_keys=["observation"])
        return actor, critic
    if kind == "discrete":
        net = nn.Sequential(nn.Linear(OBS, 8), nn.Tanh(), nn.Linear(8, N_ACTIONS))
        actor = ProbabilisticActor(
            TensorDictModule(net, ["observation"], ["logits"]),
            in_keys=["logits"],
            distribution_class=Categorical,
            return_log_prob=True,
        )
    else:
        actor = ProbabilisticActor(
            TensorDictModule(GaussianNet(), ["observation"], ["loc", "scale"]),
            in_keys=["loc", "scale"],
            distribution_class=IndependentNormal,
            return_log_prob=True,
        )
    critic = ValueOperator(
        nn.Sequential(nn.Linear(OBS, 8), nn.Tanh(), nn.Linear(8, 1)), in_keys=["observation"]
    )
    return actor, critic


def batch(kind: str, seed: int = 1) -> TensorDict:
    """A fixed batch of BATCH transitions; the stored log-probs come from a perturbed policy so
    the ratios are not all 1 (some clip)."""
    gen = torch.Generator().manual_seed(seed)
    actor, _ = build(kind, seed=seed + 100)  # the "behaviour" policy: other weights
    data = TensorDict({"observation": torch.randn(BATCH, OBS, generator=gen)}, [BATCH])
    torch.manual_seed(seed)
    with torch.no_grad():
        data = actor(data)
    # advantages with a non-zero mean and std != 1, so normalisation changes them
    data["advantage"] = 2.0 + 3.0 * torch.randn(BATCH, 1, generator=gen)
    data["value_target"] = torch.randn(BATCH, 1, generator=gen)
    return data.select("observation", "action", "action_log_prob", "advantage", "value_target")


def grads(
    loss: nn.Module, data: TensorDict, scale: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Gradient of the summed loss_* terms (times ``scale``) w.r.t. every parameter, in
    parameters() order."""
    loss.zero_grad(set_to_none=True)
    out = loss(data)
    total = sum(v for k, v in out.items() if k.startswith("loss_"))
    (total if scale is None else scale * total).backward()
    return [p.grad.detach().clone() for p in loss.parameters()]
