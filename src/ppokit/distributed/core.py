"""Multi-process PPO on ``torch.distributed``: process identity, DDP wrapping, global statistics.

Launch with ``torchrun``; each process (rank) steps its own environments, the networks are
wrapped in ``DistributedDataParallel`` (gradients averaged across ranks in ``backward``), and
every statistic the single-process algorithm computes over the whole batch is all-reduced so
that ``N`` ranks with batch ``b`` behave like one process with batch ``N * b``:

- :func:`global_standardize`: advantage normalisation with the global mean and unbiased std;
- :class:`RunningStatsMerger`: running observation (or return) statistics, merged across ranks
  with Chan et al.'s parallel algorithm.

A single process needs none of this: ``World()`` is the one-process default and every helper
is the identity there.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RunningStatsMerger",
    "World",
    "global_moments",
    "global_standardize",
    "init_distributed",
    "rank_seed",
    "shutdown_distributed",
    "unwrap_ddp",
    "world_from_env",
    "wrap_ddp",
]

#: seconds a collective (or the rendezvous) may wait for the other ranks before it raises;
#: overridden by the ``PPOKIT_DIST_TIMEOUT`` environment variable.
DEFAULT_TIMEOUT_S = 600.0

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
                "create it with ppokit.distributed.core.init_distributed() (under torchrun)."
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
                f"PPOKIT_DIST_TIMEOUT={raw!r} is not a number of seconds (e.g. 600)."
            ) from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"The collective timeout must be a positive number of seconds, got "
                         f"{timeout!r}.")
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
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
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
            backend, rank=world.rank, world_size=world.world_size,
            timeout=datetime.timedelta(seconds=seconds),
        )
    return World(rank=world.rank, world_size=world.world_size, local_rank=world.local_rank,
                 device=dev)


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
        >>> from ppokit.distributed.core import init_distributed, shutdown_distributed
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


# ---------------------------------------------------------------------------- DDP
def _inner_networks(module: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(owner, attribute, network) for every TensorDict module's wrapped ``.module``."""
    from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential

    for owner in module.modules():
        # a TensorDictSequential (ProbabilisticActor, ...) is a TensorDictModule too, but its
        # .module is the list of its steps: the networks are found further down
        if not isinstance(owner, TensorDictModule) or isinstance(owner, TensorDictSequential):
            continue
        net = owner.module
        if isinstance(net, nn.Module) and not isinstance(
                net, (TensorDictModuleBase, nn.ModuleList)):
            yield owner, "module", net


def wrap_ddp(*modules: nn.Module, world: World, **ddp_kwargs: Any) -> tuple[nn.Module, ...]:
    """Wrap the networks inside TensorDict modules in ``DistributedDataParallel``, in place.

    The TensorDict modules themselves stay as they are (a ``ProbabilisticActor`` keeps its
    ``get_dist`` and keys, which the PPO loss needs and a DDP wrapper would hide): each
    ``TensorDictModule``'s plain network ``.module`` becomes ``DDP(network)``. Parameters are
    the same tensors, so an optimizer built before wrapping keeps working. DDP copies rank 0's
    parameters to every rank at construction. Use the loss with ``functional=False``.

    Args:
        *modules: the actor and critic (TensorDict modules holding the networks).
        world: this process; for one process nothing is wrapped.
        **ddp_kwargs: passed to ``DistributedDataParallel``.

    Returns:
        ``modules``, now holding DDP-wrapped networks.

    Raises:
        ValueError: a network with parameters is used by two of ``modules`` (a shared trunk):
            DDP cannot average a parameter that runs in two forward passes per backward.

    Example:
        >>> from ppokit import ValueOperator
        >>> critic, = wrap_ddp(ValueOperator(nn.Linear(3, 1)), world=World())  # 1 process
        >>> type(critic.module).__name__
        'Linear'
    """
    if not isinstance(world, World):
        raise TypeError(f"wrap_ddp(world=...) expects a ppokit.distributed.core.World, got "
                        f"{type(world).__name__}.")
    found: dict[int, list[tuple[nn.Module, str, nn.Module]]] = {}
    for index, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            raise TypeError(f"wrap_ddp: argument {index} is a {type(module).__name__}, expected "
                            "a TensorDict module (e.g. the actor or the critic).")
        for owner, attr, net in _inner_networks(module):
            found.setdefault(id(net), []).append((owner, attr, net))
    # a network reached through several TensorDict modules of ONE actor is wrapped once, but a
    # network (or parameter) reached from two of the given modules is shared between them
    by_param: dict[int, set[int]] = {}
    for index, module in enumerate(modules):
        for p in module.parameters():
            by_param.setdefault(id(p), set()).add(index)
    if any(len(users) > 1 for users in by_param.values()):
        raise ValueError(
            "wrap_ddp: the given modules share parameters (a shared trunk). DDP cannot average "
            "a parameter used in two forward passes before one backward. Use separate actor "
            "and critic networks, or wrap the whole model in one DistributedDataParallel and "
            "call it once per loss evaluation."
        )
    if not world.is_distributed:
        return modules
    for entries in found.values():
        owner, attr, net = entries[0]
        if isinstance(net, DistributedDataParallel) or not any(
                p.requires_grad for p in net.parameters()):
            continue
        if world.device.type == "cuda":
            net.to(world.device)
            ddp_kwargs.setdefault("device_ids", [world.device.index])
        wrapped = DistributedDataParallel(net, **ddp_kwargs)
        for owner, attr, _ in entries:
            setattr(owner, attr, wrapped)
    return modules


@contextlib.contextmanager
def unwrap_ddp(*modules: nn.Module) -> Iterator[tuple[nn.Module, ...]]:
    """Temporarily put the plain networks back in place of their DDP wrappers.

    Inside the block ``state_dict()`` keys are those of an unwrapped model (a multi-rank
    checkpoint loads in a single process and vice versa) and calls run without DDP's hooks
    (rank 0 can evaluate alone).

    Example:
        >>> from ppokit import ValueOperator
        >>> critic = ValueOperator(nn.Linear(3, 1))
        >>> with unwrap_ddp(critic):
        ...     sorted(critic.state_dict())
        ['module.bias', 'module.weight']
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for module in modules:
            for owner, attr, net in list(_inner_networks(module)):
                if isinstance(net, DistributedDataParallel):
                    setattr(owner, attr, net.module)
                    swapped.append((owner, attr, net))
        yield modules
    finally:
        for owner, attr, net in reversed(swapped):
            setattr(owner, attr, net)


# ---------------------------------------------------------------------------- statistics
def global_moments(
    x: torch.Tensor, world: World, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, unbiased variance and count of ``x``'s valid entries over all ranks (float64).

    One all-reduce of ``(count, sum, sum of squares)``; float64 keeps the one-pass formula
    ``(S2 - S^2 / N) / (N - 1)`` accurate for advantages (the cancellation it suffers in
    float32 is why this is not done in the input dtype).

    Args:
        x: values ``[*B, ...]``.
        world: this process.
        mask: bool, broadcastable to ``x`` (e.g. ``[*B, 1]``); masked entries are ignored.

    Example:
        >>> m, v, n = global_moments(torch.tensor([1.0, 2.0, 3.0, 4.0]), World())
        >>> float(m), round(float(v), 4), int(n)   # var: (2.25+0.25+0.25+2.25) / 3
        (2.5, 1.6667, 4)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"global_moments expects a tensor, got {type(x).__name__}.")
    values = x.detach().to(torch.float64)
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"The mask must be a bool tensor, got {mask.dtype}.")
        try:
            mask = mask.expand_as(values)
        except RuntimeError:
            raise ValueError(
                f"The mask of shape {tuple(mask.shape)} does not broadcast to the values of "
                f"shape {tuple(x.shape)}; pass a mask [*B] or [*B, 1] matching the batch."
            ) from None
        values = torch.where(mask, values, torch.zeros_like(values))
        count = mask.sum().to(torch.float64)
    else:
        count = torch.tensor(float(values.numel()), dtype=torch.float64)
    local = torch.stack([count, values.sum(), values.square().sum()])
    total = world.all_reduce_sum(local)
    n, s, s2 = total[0], total[1], total[2]
    mean = s / n.clamp_min(1.0)
    var = ((s2 - s * mean) / (n - 1.0).clamp_min(1.0)).clamp_min(0.0)
    return mean, var, n


def global_standardize(
    x: torch.Tensor, world: World, mask: torch.Tensor | None = None, *, eps: float = 1e-6
) -> torch.Tensor:
    """``(x - mean) / max(std, eps)`` with the mean and unbiased std of ALL ranks' entries.

    This is the loss's ``normalize_advantage`` over the global batch: N ranks standardising
    their share of the batch this way get the values one process gets on the whole batch.
    Pass the result as the advantage to a loss built with ``normalize_advantage=False``.
    Masked entries come back as 0, as in the loss.

    Args:
        x: advantage ``[*B, 1]`` (any shape works).
        world: this process.
        mask: bool ``[*B, 1]`` (or broadcastable) of valid entries.
        eps: lower bound of the std (the loss uses 1e-6).

    Example:
        >>> global_standardize(torch.tensor([1.0, 2.0, 3.0]), World())
        tensor([-1.,  0.,  1.])
    """
    mean, var, _ = global_moments(x, world, mask)
    out = ((x.to(torch.float64) - mean) / var.sqrt().clamp_min(eps)).to(x.dtype)
    if mask is not None:
        out = torch.where(mask.expand_as(out), out, torch.zeros_like(out))
    return out


def _unmerge(
    mean: np.ndarray, var: np.ndarray, count: float,
    base_mean: np.ndarray, base_var: np.ndarray, base_count: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Moments of the data folded in since ``base``: Chan's merge solved for the batch."""
    n_b = count - base_count
    if n_b <= 0:
        return np.zeros_like(mean), np.zeros_like(var), 0.0
    batch_mean = (count * mean - base_count * base_mean) / n_b
    delta = batch_mean - base_mean
    m2 = count * var - base_count * base_var - np.square(delta) * (base_count * n_b / count)
    return batch_mean, np.maximum(m2 / n_b, 0.0), n_b


class RunningStatsMerger:
    """Merge a running mean/variance across ranks after each rank folded in its own data.

    Every rank starts from the same statistics (the snapshot). Each iteration, a rank folds
    its own observations into its copy; :meth:`merge` then recovers each rank's new moments
    (count, mean, variance since the snapshot), all-gathers them and folds them into the
    snapshot in rank order with Chan et al.'s (1979) parallel update, so every rank ends with
    the same statistics, equal to one process having seen all ranks' data.

    Args:
        stats: a :class:`ppokit.train.normalization.RunningMeanStd` (numpy ``mean``, ``var``,
            ``count``), updated in place by :meth:`merge`.
        world: this process.

    Example:
        >>> from ppokit.train.normalization import RunningMeanStd
        >>> rms = RunningMeanStd(())
        >>> merger = RunningStatsMerger(rms, World())
        >>> rms.update(np.array([1.0, 3.0]))
        >>> merger.merge()   # one process: nothing to combine
        >>> round(float(rms.mean), 3), round(float(rms.var), 3)
        (2.0, 1.0)
    """

    def __init__(self, stats: Any, world: World) -> None:
        for attr in ("mean", "var", "count"):
            if not hasattr(stats, attr):
                raise TypeError(
                    f"RunningStatsMerger needs an object with mean, var and count (a "
                    f"ppokit.train.normalization.RunningMeanStd); {type(stats).__name__} has no "
                    f"{attr!r}."
                )
        self.stats = stats
        self.world = world
        self.reset()

    def reset(self) -> None:
        """Take the current statistics as the common starting point (after loading state)."""
        self._base = (np.array(self.stats.mean, dtype=np.float64, copy=True),
                      np.array(self.stats.var, dtype=np.float64, copy=True),
                      float(self.stats.count))

    def merge(self) -> None:
        """All-gather every rank's new moments and fold them in; identical result on all."""
        if not self.world.is_distributed:
            self.reset()
            return
        from ppokit.train.normalization import merge_moments

        base_mean, base_var, base_count = self._base
        mean, var, n = _unmerge(np.asarray(self.stats.mean, np.float64),
                                np.asarray(self.stats.var, np.float64), float(self.stats.count),
                                base_mean, base_var, base_count)
        packed = torch.from_numpy(np.concatenate([[n], mean.reshape(-1), var.reshape(-1)]))
        size = mean.size
        merged_mean, merged_var, merged_count = base_mean, base_var, base_count
        for part in self.world.all_gather(packed):
            arr = part.numpy()
            count = float(arr[0])
            if count <= 0:
                continue
            merged_mean, merged_var, merged_count = merge_moments(
                merged_mean, merged_var, merged_count,
                arr[1:1 + size].reshape(base_mean.shape),
                arr[1 + size:].reshape(base_mean.shape), count,
            )
        self.stats.mean = np.asarray(merged_mean, dtype=np.float64).reshape(base_mean.shape)
        self.stats.var = np.asarray(merged_var, dtype=np.float64).reshape(base_mean.shape)
        self.stats.count = float(merged_count)
        self.reset()
