"""Data-parallel training of networks that share parameters: all-reduce the gradients by hand.

``DistributedDataParallel`` averages a parameter's gradient when its autograd hook fires, once
per forward call of the wrapped module; a parameter used by two forward passes before one
backward (an actor and a critic on one shared encoder and recurrent core, both called by the
PPO loss) breaks that bookkeeping, so :func:`~ppokit.distributed.ddp.wrap_ddp` refuses it.
Averaging the gradients after ``backward`` needs no hooks and works for any sharing:
:func:`broadcast_parameters` gives every rank rank 0's weights at the start (what DDP does at
construction), :class:`GradientAverager` then averages the summed gradients over ranks before
the clip and the optimizer step, so every rank takes the same step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from ppokit.distributed.world import World

__all__ = [
    "GradientAverager",
    "broadcast_parameters",
    "shared_outside_trunks",
    "shares_parameters",
]


def shares_parameters(*modules: nn.Module) -> bool:
    """Whether two of ``modules`` hold the same parameter (a shared trunk or core).

    Example:
        >>> trunk = nn.Linear(3, 3)
        >>> shares_parameters(nn.Sequential(trunk, nn.Linear(3, 2)), nn.Sequential(trunk))
        True
        >>> shares_parameters(nn.Linear(3, 2), nn.Linear(3, 1))
        False
    """
    owners: dict[int, int] = {}
    for index, module in enumerate(modules):
        for param in module.parameters():
            if owners.setdefault(id(param), index) != index:
                return True
    return False


def shared_outside_trunks(*modules: nn.Module) -> bool:
    """Whether two of ``modules`` share a parameter that no ``SharedTrunk`` holds.

    A :class:`~ppokit.modules.cnn.SharedTrunk` runs once per loss evaluation (its memo), so
    DDP can wrap it; any other shared parameter runs in two forward passes per backward,
    which DDP cannot average (:class:`GradientAverager` can).

    Example:
        >>> from ppokit.modules.cnn import SharedTrunk
        >>> body = nn.Linear(3, 3)
        >>> shared_outside_trunks(nn.Sequential(body), nn.Sequential(body))
        True
        >>> trunk = SharedTrunk(nn.Linear(3, 3))
        >>> shared_outside_trunks(nn.Sequential(trunk), nn.Sequential(trunk, nn.Linear(3, 1)))
        False
    """
    from ppokit.modules.cnn import SharedTrunk

    owners: dict[int, set[int]] = {}
    for index, module in enumerate(modules):
        for param in module.parameters():
            owners.setdefault(id(param), set()).add(index)
    shared = {pid for pid, users in owners.items() if len(users) > 1}
    in_trunks = {
        id(p)
        for module in modules
        for sub in module.modules()
        if isinstance(sub, SharedTrunk)
        for p in sub.parameters()
    }
    return bool(shared - in_trunks)


def _flat(tensors: list[torch.Tensor], world: World) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors]).to(world.device)


def _unflat(flat: torch.Tensor, like: list[torch.Tensor]) -> Iterable[torch.Tensor]:
    offset = 0
    for t in like:
        yield flat[offset : offset + t.numel()].view_as(t).to(t.device)
        offset += t.numel()


@torch.no_grad()
def broadcast_parameters(params: list[nn.Parameter], world: World) -> None:
    """Copy rank 0's values of ``params`` to every rank (in place; one collective).

    Example:
        >>> p = nn.Parameter(torch.ones(2))
        >>> broadcast_parameters([p], World())  # one process: nothing to do
        >>> p.tolist()
        [1.0, 1.0]
    """
    if not world.is_distributed or not params:
        return
    flat = _flat(list(params), world)
    dist.broadcast(flat, src=0)
    for param, value in zip(params, _unflat(flat, list(params))):
        param.copy_(value)


class GradientAverager:
    """Replace each parameter's ``.grad`` by its mean over ranks (one all-reduce per call).

    Called between ``backward`` and the gradient clip (``eager_update(grad_sync=...)``). A
    parameter without a gradient on this rank counts as zeros, so every rank sends the same
    number of values and the collective never deadlocks.

    Args:
        world: this process; with one process the call does nothing.

    Example:
        >>> p = nn.Parameter(torch.ones(2))
        >>> p.grad = torch.tensor([1.0, 3.0])
        >>> GradientAverager(World())([p])
        >>> p.grad.tolist()
        [1.0, 3.0]
    """

    def __init__(self, world: World) -> None:
        self.world = world

    @torch.no_grad()
    def __call__(self, params: list[nn.Parameter]) -> None:
        if not self.world.is_distributed or not params:
            return
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        self.average_([p.grad for p in params if p.grad is not None])

    @torch.no_grad()
    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Replace each of ``tensors`` by its mean over ranks, in place (one all-reduce).

        What the fused compiled update calls on the gradients its first graph returns.
        """
        if not self.world.is_distributed or not tensors:
            return
        flat = _flat(tensors, self.world)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world.world_size
        for tensor, value in zip(tensors, _unflat(flat, tensors)):
            tensor.copy_(value)
