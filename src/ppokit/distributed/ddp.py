"""DistributedDataParallel for TensorDict modules: wrap the networks inside, unwrap them again.

DDP averages the gradients across ranks in ``backward``. It wraps the plain networks held by
the TensorDict modules, not the modules themselves, so the actor keeps ``get_dist`` and its
keys (which the PPO loss reads) and checkpoints can be written without the wrapper's prefix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ppokit.distributed.world import World

__all__ = ["unwrap_ddp", "wrap_ddp"]


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
            net, (TensorDictModuleBase, nn.ModuleList)
        ):
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
        raise TypeError(
            f"wrap_ddp(world=...) expects a ppokit.distributed.World, got {type(world).__name__}."
        )
    found: dict[int, list[tuple[nn.Module, str, nn.Module]]] = {}
    for index, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"wrap_ddp: argument {index} is a {type(module).__name__}, expected "
                "a TensorDict module (e.g. the actor or the critic)."
            )
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
            p.requires_grad for p in net.parameters()
        ):
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
