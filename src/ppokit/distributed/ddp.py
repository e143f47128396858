"""DistributedDataParallel for TensorDict modules: wrap the networks inside, unwrap them again.

DDP averages the gradients across ranks in ``backward``. It wraps the plain networks held by
the TensorDict modules, not the modules themselves, so the actor keeps ``get_dist`` and its
keys (which the PPO loss reads) and checkpoints can be written without the wrapper's prefix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

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
        ValueError: a parameter is used by two of ``modules`` outside a
            :class:`~ppokit.modules.cnn.SharedTrunk`: DDP cannot average a parameter that
            runs in two forward passes per backward. (A ``SharedTrunk`` runs once per loss
            evaluation for both heads: it is wrapped once, inside its memo.)

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
    from ppokit.modules.cnn import SharedTrunk

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
    shared = {pid for pid, users in by_param.items() if len(users) > 1}
    # the parts to wrap: (owner, attribute, network); a network holding shared parameters is
    # split into its shared SharedTrunk (wrapped inside its memo) and its own parts
    parts: dict[int, list[tuple[nn.Module, str, nn.Module]]] = {}
    for entries in found.values():
        for owner, attr, net in entries:
            for part in _parts(owner, attr, net, shared, SharedTrunk):
                parts.setdefault(id(part[2]), []).append(part)
    if not world.is_distributed:
        return modules
    if world.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [world.device.index])
    for entries in parts.values():
        net = entries[0][2]
        if isinstance(net, DistributedDataParallel) or not any(
            p.requires_grad for p in net.parameters()
        ):
            continue
        if world.device.type == "cuda":
            net.to(world.device)
        wrapped = DistributedDataParallel(net, **ddp_kwargs)
        for owner, attr, _ in entries:
            setattr(owner, attr, wrapped)
    return modules


def _parts(
    owner: nn.Module, attr: str, net: nn.Module, shared: set[int], trunk_type: type[nn.Module]
) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """Where ``net`` (at ``owner.attr``) gets DDP wrappers, given the ``shared`` parameter ids.

    A network without shared parameters is wrapped whole. A ``SharedTrunk`` (used by the actor
    and the critic, run once per loss evaluation by its memo) is wrapped inside the memo, so
    its wrapper runs one forward per backward. Any other network holding shared parameters is
    split into its children; a shared parameter anywhere else cannot be averaged by DDP.
    """
    ids = {id(p) for p in net.parameters()}
    if not ids & shared:
        yield owner, attr, net
    elif isinstance(net, trunk_type):
        yield net, "trunk", cast(nn.Module, net.trunk)
    elif isinstance(net, DistributedDataParallel) and isinstance(owner, trunk_type):
        return  # this trunk was wrapped through the other module that uses it
    elif any(id(p) in shared for p in net.parameters(recurse=False)) or not list(
        net.named_children()
    ):
        raise ValueError(
            "wrap_ddp: the given modules share parameters outside a SharedTrunk (e.g. a "
            f"{type(net).__name__} used by both). DDP cannot average a parameter used in two "
            "forward passes before one backward. Put the shared part in a "
            "ppokit.modules.cnn.SharedTrunk (run once for both heads), use separate actor "
            "and critic networks, or wrap the whole model in one DistributedDataParallel."
        )
    else:
        for name, child in net.named_children():
            yield from _parts(net, name, child, shared, trunk_type)


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
        for module in modules:  # wherever a wrapper sits (inside a shared trunk too)
            for owner in list(module.modules()):
                for attr, net in list(owner.named_children()):
                    if isinstance(net, DistributedDataParallel):
                        setattr(owner, attr, net.module)
                        swapped.append((owner, attr, net))
        yield modules
    finally:
        for owner, attr, net in reversed(swapped):
            setattr(owner, attr, net)
