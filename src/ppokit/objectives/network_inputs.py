"""Explain why a network could not take its inputs (dtype, feature size, device).

A float64 or integer observation fed to float32 layers, an observation with the wrong number
of features, or a critic left on another device or dtype all fail deep inside
``torch.nn.functional.linear`` with a message that names no key. Checking every input before
every call would cost time on each minibatch, so the check runs only after a network call has
failed: :func:`explain_input_error` compares each entry a network reads with the first
parameterised layer behind it and, if one does not fit, raises a :class:`NetworkInputError`
naming the key, what the layer expects, what arrived and how to fix it (chained to the
original error). If nothing explains the failure, the caller re-raises the original error.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin

from ppokit.objectives.keys import key_str

__all__ = ["NetworkInputError", "explain_input_error", "input_mismatch"]


class NetworkInputError(ValueError):
    """A network was given an entry its layers cannot take (dtype, feature size, device)."""


#: layers that read integer indices, not values of their weight's dtype
_INDEX_LAYERS = (nn.Embedding, nn.EmbeddingBag)


def _first_layer(module: nn.Module) -> tuple[str, nn.Module] | None:
    """The first submodule (in registration order) holding a parameter of its own."""
    for name, sub in module.named_modules():
        if any(True for _ in sub.parameters(recurse=False)):
            return name, sub
    return None


def _in_features(layer: nn.Module) -> int | None:
    """How many features the layer reads on its input's last dim, when it says so."""
    if isinstance(layer, nn.Linear):
        return int(layer.in_features)
    if isinstance(layer, nn.LayerNorm):
        shape = layer.normalized_shape
        return int(shape[-1]) if shape else None
    return None


def _reading_modules(network: nn.Module) -> Iterator[tuple[str, list[NestedKey], nn.Module]]:
    """``(path, in_keys, inner module)`` of each TensorDict module wrapping a plain network."""
    for path, sub in network.named_modules():
        inner = getattr(sub, "module", None)
        in_keys = getattr(sub, "in_keys", None)
        if (
            isinstance(inner, nn.Module)
            and in_keys is not None
            and not any(hasattr(m, "in_keys") for m in inner.modules())
        ):
            # a wrapper of plain layers (a sequence's list of TensorDict modules is skipped:
            # each member is visited on its own with its own in_keys)
            yield path, list(in_keys), inner


def input_mismatch(network: nn.Module, data: TensorDictBase, *, role: str) -> str | None:
    """Describe the first entry of ``data`` that ``network``'s layers cannot take, or None.

    Each TensorDict module of ``network`` whose ``in_keys`` are all present in ``data`` is
    compared with its first parameterised layer: floating dtype, device and, for a single
    key read by a ``Linear``/``LayerNorm``, the size of the last dim (``in_features``).

    Args:
        network: the actor or critic (a TensorDict module or a chain of them).
        data: the batch ``[*B]`` the network was called on.
        role: how to name the network in the message (``"actor"``, ``"critic"``).

    Example:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> critic = TensorDictModule(nn.Linear(3, 1), in_keys=["obs"], out_keys=["v"])
        >>> data = TensorDict(obs=torch.zeros(2, 4, dtype=torch.float64), batch_size=[2])
        >>> print(input_mismatch(critic, data, role="critic"))  # doctest: +ELLIPSIS
        The critic cannot read 'obs': it holds float64 values of shape (2, 4) on cpu, ...
    """
    present = set(data.keys(include_nested=True, leaves_only=True))
    for path, in_keys, inner in _reading_modules(network):
        if not all(k in present for k in in_keys):
            continue
        first = _first_layer(inner)
        if first is None or isinstance(first[1], LazyModuleMixin):  # nothing to compare yet
            continue
        layer_name, layer = first
        param = next(layer.parameters(recurse=False))
        features = _in_features(layer) if len(in_keys) == 1 else None
        where = ".".join(p for p in (role, path, "module", layer_name) if p)
        for key in in_keys:
            value = data.get(key)
            if not isinstance(value, torch.Tensor):
                continue
            problems = []
            if (
                value.dtype != param.dtype
                and param.dtype.is_floating_point
                and not isinstance(layer, _INDEX_LAYERS)
            ):
                problems.append(f"dtype {param.dtype}")
            if features is not None and (value.dim() == 0 or value.shape[-1] != features):
                problems.append(f"{features} features on the last dim")
            if value.device != param.device:
                problems.append(f"device {param.device}")
            if problems:
                return _message(role, key, value, where, layer, problems, param)
    return None


def _message(
    role: str,
    key: NestedKey,
    value: torch.Tensor,
    where: str,
    layer: nn.Module,
    problems: list[str],
    param: torch.Tensor,
) -> str:
    fixes = []
    if f"dtype {param.dtype}" in problems:
        fix = f"convert the entry (e.g. td[{key_str(key)}] = td[{key_str(key)}].to({param.dtype}))"
        if value.dtype.is_floating_point:
            fix += f" or the {role} ({role}.to({value.dtype}))"
        fixes.append(fix)
    if any(p.endswith("last dim") for p in problems):
        fixes.append(
            f"check that {key_str(key)} is the observation this {role} was built "
            "for, or rebuild its first layer for this feature size"
        )
    if f"device {param.device}" in problems:
        fixes.append(
            f"move the data or the {role} to one device (td.to(device) or network.to(device))"
        )
    expected = ", ".join(p.replace("torch.", "") for p in problems)
    return (
        f"The {role} cannot read {key_str(key)}: it holds {_dtype(value.dtype)} values "
        f"of shape {tuple(value.shape)} on {value.device}, but its first layer {where} "
        f"({layer!r}) expects {expected}. Fix: {'; '.join(fixes)}."
    )


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def explain_input_error(
    network: nn.Module | None, data: TensorDictBase, *, role: str, error: Exception
) -> None:
    """Raise :class:`NetworkInputError` (from ``error``) if an input explains ``error``.

    Call it in the ``except`` of a failed network call, then re-raise ``error`` if it
    returns. Nothing is checked on calls that succeed, so the check costs nothing there.
    """
    if network is None:
        return
    try:
        found = input_mismatch(network, data, role=role)
    except Exception:  # the diagnosis must never hide the original error
        return
    if found is not None:
        raise NetworkInputError(found) from error
