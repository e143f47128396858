"""Is a ``TensorDictParams`` already what its module holds? (private tensordict layout)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from tensordict import TensorDict, TensorDictBase
from torch import nn

from ppokit.internals.versions import direct_path_supported

__all__ = ["ParamSlots"]


class ParamSlots:
    """Is a ``TensorDictParams`` already what its module holds? Then ``to_module`` is a no-op.

    Records, for every node of the parameter TensorDict and every parameter/buffer slot of
    the module, the object found there at construction. :meth:`in_place` is True while all
    of them are still in place: the loss's parameters are the module's, and swapping them in
    would change nothing. Any swap (``with other.to_module(loss)``, a new parameter assigned
    to the module, an entry set in the TensorDictParams) breaks an identity and the caller
    swaps as usual.

    Example:
        >>> from tensordict.nn import TensorDictParams
        >>> net = nn.Linear(2, 1)
        >>> params = TensorDictParams(TensorDict.from_module(net), no_convert=True)
        >>> slots = ParamSlots.build(params, net)
        >>> slots.in_place(params)
        True
        >>> with params.apply(lambda p: p * 2).to_module(net):
        ...     slots.in_place(params)
        False
    """

    def __init__(self, root: Any, checks: list[tuple[MutableMapping, str, Any]]) -> None:
        self.root = root
        self.checks = checks

    @classmethod
    def build(cls, params: Any, module: nn.Module) -> ParamSlots | None:
        """Slots of ``params`` in ``module``, or ``None`` when they cannot be tracked."""
        if not direct_path_supported():
            return None
        root = getattr(params, "_param_td", None)
        if type(root) is not TensorDict:
            return None
        checks: list[tuple[MutableMapping, str, Any]] = []
        if not cls._collect(root, module, checks):
            return None
        return cls(root, checks)

    @classmethod
    def _collect(
        cls, node: TensorDict, module: nn.Module, checks: list[tuple[MutableMapping, str, Any]]
    ) -> bool:
        store = getattr(node, "_tensordict", None)
        if not isinstance(store, dict):
            return False
        for name, value in store.items():
            checks.append((store, name, value))
            if isinstance(value, TensorDictBase):
                child = module._modules.get(name)
                if type(value) is not TensorDict or child is None:
                    return False
                if not cls._collect(value, child, checks):
                    return False
            elif name in module._parameters:
                checks.append((module._parameters, name, value))
            elif name in module._buffers:
                checks.append((module._buffers, name, value))
            else:
                return False
        return True

    def in_place(self, params: Any) -> bool:
        if getattr(params, "_param_td", None) is not self.root:
            return False
        return all(store.get(name) is value for store, name, value in self.checks)
