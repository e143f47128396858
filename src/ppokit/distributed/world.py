"""Process identity: who this rank is (:class:`World`), joining and leaving the process group.

Launch with ``torchrun``; each process (rank) reads its place from the variables torchrun sets.
A single process needs none of this: ``World()`` is the one-process default and every
collective is the identity there, so code written against a ``World`` runs unchanged.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "World",
    "init_distributed",
    "rank_seed",
    "shutdown_distributed",
    "world_from_env",
]

#: seconds a collective (or the rendezvous) may wait for the other ranks before it raises;
#: overridden by the ``PPOKIT_DIST_TIMEOUT`` environment variable. Three minutes: long enough
#: for a slow rank's evaluation or checkpoint write, short enough that a stalled rank does not
#: hold the whole job for ten minutes (torch's own default) before anyone hears of it.
DEFAULT_TIMEOUT_S = 180.0

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """Who this process is among the training processes; ``World()`` is a single process.

    Collectives go through the default ``torch.distributed`` process group; for one process
    they are the identity, so code written against a ``World`` runs unchanged without
    ``torchrun``.

    Attributes:
        rank: global index of this process, ``0 <= rank < world_size``.
        world_size: number of processes.
        local_rank: index of this process on its node (selects the GPU).
        device: where this rank's collectives (and, on GPU, its networks) live.

    Example:
        >>> World().is_main, World(rank=1, world_size=2).is_main
        (True, False)
        >>> World().all_reduce_sum(torch.tensor([1.0, 2.0]))  # one process: identity
        tensor([1., 2.])
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        for name in ("rank", "world_size", "local_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"World.{name} must be an int, got {value!r}.")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ValueError(
                f"World(rank={self.rank}, world_size={self.world_size}, local_rank="
                f"{self.local_rank}) is impossible: need world_size >= 1, "
                "0 <= rank < world_size and local_rank >= 0."
            )

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes logs, checkpoints and the summary."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when there are several processes (collectives really communicate)."""
        return self.world_size > 1

    def _check_group(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                f"World(world_size={self.world_size}) needs an initialised process group: "
                "create it with ppokit.distributed.init_distributed() (under torchrun)."
            )

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Elementwise sum of ``tensor`` over ranks (a new tensor; the input is untouched)."""
        if not self.is_distributed:
            return tensor
        self._check_group()
        out = tensor.detach().to(self.device, copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(tensor.device)

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Elementwise mean of ``tensor`` over ranks."""
        if not self.is_distributed:
            return tensor
        return self.all_reduce_sum(tensor) / self.world_size

    def any(self, flag: bool) -> bool:
        """True if ``flag`` is true on any rank: a decision every rank then takes together."""
        if not self.is_distributed:
            return bool(flag)
        return bool(self.all_reduce_sum(torch.tensor([float(bool(flag))])).item() > 0)

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """``tensor`` of every rank, in rank order (same shape on every rank)."""
        if not self.is_distributed:
            return [tensor]
        self._check_group()
        local = tensor.detach().to(self.device).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return [p.to(tensor.device) for p in parts]

    def broadcast_object(self, obj: Any, *, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` (any picklable value) on every rank."""
        if not self.is_distributed:
            return obj
        self._check_group()
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here (no-op for one process)."""
        if self.is_distributed:
            self._check_group()
            dist.barrier()


# ---------------------------------------------------------------------------- process group
def _env_int(environ: Mapping[str, str], name: str) -> int:
    raw = environ[name]
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"Environment variable {name}={raw!r} is not an integer; torchrun sets it, so launch "
            "with `torchrun --nproc-per-node N -m ppokit train ...` rather than setting it by hand."
        ) from None


def world_from_env(environ: Mapping[str, str] | None = None) -> World | None:
    """Read the torchrun variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); None if unset.

    Raises:
        ValueError: some but not all of the variables are set, or their values are impossible.

    Example:
        >>> world_from_env({}) is None
        True
        >>> w = world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
        ...                     "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
        >>> w.rank, w.world_size, w.is_main
        (1, 2, False)
    """
    environ = os.environ if environ is None else environ
    present = [name for name in _TORCHRUN_VARS if name in environ]
    if not present:
        return None
    missing = [name for name in _TORCHRUN_VARS if name not in environ]
    if missing:
        raise ValueError(
            f"Partial torch.distributed environment: {present} are set but {missing} are not. "
            "Launch with torchrun (which sets them all), or unset them for a single process."
        )
    rank, world_size = _env_int(environ, "RANK"), _env_int(environ, "WORLD_SIZE")
    local_rank = _env_int(environ, "LOCAL_RANK")
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(
            f"Impossible torch.distributed environment RANK={rank}, WORLD_SIZE={world_size}, "
            f"LOCAL_RANK={local_rank}: need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE."
        )
    return World(rank=rank, world_size=world_size, local_rank=local_rank)


def _timeout_seconds(timeout: float | None) -> float:
    if timeout is None:
        raw = os.environ.get("PPOKIT_DIST_TIMEOUT")
        if raw is None:
            return DEFAULT_TIMEOUT_S
        try:
            timeout = float(raw)
        except ValueError:
            raise ValueError(
                f"PPOKIT_DIST_TIMEOUT={raw!r} is not a number of seconds (e.g. 180)."
            ) from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(
            f"The collective timeout must be a positive number of seconds, got {timeout!r}."
        )
    return float(timeout)


def init_distributed(
    *, device: str | torch.device | None = None, timeout: float | None = None
) -> World:
    """Join the process group torchrun describes; ``World()`` when not launched by torchrun.

    The backend follows the device: ``gloo`` on CPU; with CUDA, ``cpu:gloo,cuda:nccl`` so that
    GPU tensors go through NCCL and small CPU tensors (statistics, flags) through gloo. Every
    collective that waits longer than ``timeout`` raises instead of hanging; with torchrun, a
    rank that exits non-zero makes the agent stop the others, so a failure ends the job.

    Args:
        device: ``"cpu"`` or ``"cuda"``; default CUDA when available. On CUDA each rank uses
            ``cuda:<LOCAL_RANK>``.
        timeout: seconds a collective may wait for the other ranks; default
            ``PPOKIT_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`.

    Raises:
        ValueError: inconsistent torchrun variables, a bad device or timeout.

    Example:
        >>> init_distributed().world_size  # not under torchrun: a single process
        1
    """
    seconds = _timeout_seconds(timeout)
    world = world_from_env()
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"init_distributed(device=...) must be 'cpu' or 'cuda', got {dev}.")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("init_distributed(device='cuda') but CUDA is not available; use 'cpu'.")
    if world is None:
        return World(device=torch.device("cuda", 0) if dev.type == "cuda" else dev)
    if dev.type == "cuda":
        dev = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(dev)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            rank=world.rank,
            world_size=world.world_size,
            timeout=datetime.timedelta(seconds=seconds),
        )
    return World(
        rank=world.rank, world_size=world.world_size, local_rank=world.local_rank, device=dev
    )


def shutdown_distributed(*, synchronize: bool = False) -> None:
    """Leave the process group (no-op when none was created).

    Args:
        synchronize: first wait at a barrier for every rank to finish its collectives. Pass it
            on a clean exit; leave it off on an error path, where a dead peer would make the
            barrier wait for the whole collective timeout.

    Why the barrier: gloo's worker threads drop their reference to a finished collective a
    moment after the caller has been released. If the caller already dropped the tensor, the
    worker's drop frees a Python object and must take the GIL; when that happens while the
    interpreter is finalizing, the thread is killed inside a C++ destructor and the process
    aborts with "terminate called without an active exception" (3 of 32 ``torchrun`` exits of
    a short run here). At the barrier the main thread waits with the GIL released for the
    slowest rank, which gives the workers their window before the interpreter shuts down; it
    narrows the race (1 abort in ~170 exits) but cannot close it, which is why ``ppokit
    train`` also ends its ranks without the interpreter's teardown.

    Example:
        >>> from ppokit.distributed import init_distributed, shutdown_distributed
        >>> world = init_distributed()   # outside torchrun: a single-process World
        >>> world.world_size
        1
        >>> shutdown_distributed()       # nothing to leave; safe to call anyway
    """
    if dist.is_available() and dist.is_initialized():
        try:
            if synchronize and dist.get_world_size() > 1:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """A seed for ``rank``'s random streams: ``seed`` itself on rank 0, distinct elsewhere.

    Rank 0 keeps the single-process seed, so a one-rank job reproduces ``ppokit train``; the
    other ranks get a 31-bit seed spawned from ``(seed, rank)`` by numpy's ``SeedSequence``,
    which (unlike ``seed + rank``) never collides with a neighbouring run's seed by design.

    Example:
        >>> rank_seed(7, 0)
        7
        >>> len({rank_seed(7, r) for r in range(64)})   # all distinct
        64
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"rank_seed: seed must be an int >= 0, got {seed!r}.")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank_seed: rank must be an int >= 0, got {rank!r}.")
    if rank == 0:
        return seed
    state = np.random.SeedSequence(entropy=seed, spawn_key=(rank,)).generate_state(1)
    return int(state[0]) & 0x7FFF_FFFF
