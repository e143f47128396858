"""What each rank computes in the shared 2-rank gloo session (see conftest.py).

One spawned session runs every check: starting processes that import torch costs more than the
checks themselves on a small machine.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from _dist_helpers import BATCH, batch, build, grads
from tensordict import TensorDict
from torch.nn.parallel import DistributedDataParallel

from ppokit import ClipPPOLoss
from ppokit.distributed import (
    RunningStatsMerger,
    World,
    global_mean_weight,
    global_moments,
    global_standardize,
    init_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from ppokit.train.normalization import RunningMeanStd

KINDS = ("discrete", "continuous", "shared")  # shared: one SharedTrunk under both heads
LOSS_KW = {
    "clip_epsilon": 0.2,
    "entropy_coef": 0.01,
    "critic_coef": 0.5,
    "functional": False,
    "reduction": "mean",
}

# uneven shares: rank 0 holds 3 advantages, rank 1 holds 5 (one of them masked out)
ADV = [torch.tensor([[1.0], [4.0], [-2.0]]), torch.tensor([[0.5], [7.0], [3.0], [100.0], [-1.0]])]
MASK = [
    torch.tensor([[True], [True], [True]]),
    torch.tensor([[True], [True], [True], [False], [True]]),
]


def obs_batches(rank: int, iteration: int) -> list[np.ndarray]:
    """Each rank's observations [B, 2] in one iteration: several steps of 2..4 rows."""
    rng = np.random.default_rng(100 * rank + iteration)
    return [
        rng.normal(loc=[3.0, -1.0], scale=[2.0, 0.5], size=(int(rng.integers(2, 5)), 2))
        for _ in range(3 + rank)
    ]


def grad_worker(world: World) -> dict:
    """DDP-averaged gradients of ClipPPOLoss on this rank's half of the fixed batch."""
    torch.manual_seed(1234 + world.rank)  # rank-specific global RNG: must not matter
    half = BATCH // world.world_size
    out: dict = {}
    for kind in KINDS:
        data = batch(kind)[world.rank * half : (world.rank + 1) * half]
        for variant in ("plain", "global_norm", "local_norm"):
            actor, critic = build(kind)
            wrap_ddp(actor, critic, world=world)
            out[f"{kind}/wrapped"] = any(
                isinstance(m, DistributedDataParallel) for m in critic.modules()
            )
            mb = data.clone()
            if variant == "global_norm":
                mb["advantage"] = global_standardize(mb["advantage"], world)
            loss = ClipPPOLoss(
                actor, critic, normalize_advantage=variant == "local_norm", **LOSS_KW
            )
            out[f"{kind}/{variant}"] = grads(loss, mb)
    return out


# uneven masked shares of the fixed batch: rank 0 holds rows 0-4 (2 valid), rank 1 rows 5-15
# (9 valid), so the mean of the two ranks' masked means is not the global masked mean
MASKED_SPLIT = 5


def batch_mask() -> torch.Tensor:
    """Validity mask ``[BATCH]`` of the fixed batch (5 padded rows)."""
    mask = torch.ones(BATCH, dtype=torch.bool)
    mask[[0, 2, 4, 7, 11]] = False
    return mask


def masked_batch(kind: str) -> TensorDict:
    data = batch(kind)
    data["collector", "mask"] = batch_mask()
    return data


def masked_worker(world: World) -> dict:
    """DDP gradients on uneven masked shares, with and without global_mean_weight."""
    rows = slice(0, MASKED_SPLIT) if world.rank == 0 else slice(MASKED_SPLIT, BATCH)
    out: dict = {}
    for kind in KINDS:
        data = masked_batch(kind)[rows]
        for variant in ("weighted", "unweighted"):
            actor, critic = build(kind)
            wrap_ddp(actor, critic, world=world)
            loss = ClipPPOLoss(actor, critic, normalize_advantage=False, **LOSS_KW)
            weight = global_mean_weight(data["collector", "mask"], world)
            scale = weight if variant == "weighted" else None
            out[f"{kind}/{variant}"] = grads(loss, data, scale=scale)
            out[f"{kind}/weight"] = float(weight)
    return out


def stats_worker(world: World) -> dict:
    """Global moments, standardisation, World collectives and the running-stats merge."""
    r = world.rank
    out: dict = {}
    out["moments"] = global_moments(ADV[r], world)
    out["moments_masked"] = global_moments(ADV[r], world, MASK[r])
    out["standardized"] = global_standardize(ADV[r], world)
    out["standardized_masked"] = global_standardize(ADV[r], world, MASK[r])
    out["any"] = (world.any(r == 1), world.any(False))
    out["gather"] = world.all_gather(torch.tensor([float(r), 10.0 * r]))
    out["broadcast"] = world.broadcast_object({"run_dir": f"runs/{r}"})
    out["mean"] = world.all_reduce_mean(torch.tensor([float(r), 2.0]))
    rms = RunningMeanStd((2,))
    merger = RunningStatsMerger(rms, world)
    history = []
    for iteration in range(2):
        for x in obs_batches(r, iteration):
            rms.update(x)
        merger.merge()
        history.append((rms.mean.copy(), rms.var.copy(), rms.count))
    out["rms"] = history
    world.barrier()
    return out


def silent_peer_worker(world: World, port: int) -> dict:
    """Re-join a fresh group with a 2 s timeout; rank 1 never joins rank 0's all-reduce."""
    shutdown_distributed()
    os.environ["MASTER_PORT"] = str(port)
    world = init_distributed(device="cpu", timeout=2.0)
    if world.rank == 1:
        time.sleep(5.0)  # long past rank 0's timeout, then leave without the collective
        return {"raised": None}
    try:
        world.all_reduce_sum(torch.ones(1))
    except RuntimeError as err:
        return {"raised": str(err)}
    return {"raised": ""}


def all_workers(world: World, port: int) -> dict:
    return {
        "grads": grad_worker(world),
        "masked": masked_worker(world),
        "stats": stats_worker(world),
        "silent": silent_peer_worker(world, port),
    }
