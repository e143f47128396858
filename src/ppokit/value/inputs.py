"""Reading a rollout for the value estimators: keys, entries, time dim, finiteness.

Small helpers shared by every estimator module; each error says what was expected, what
arrived and how to fix it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch
from tensordict import TensorDictBase
from torch import Tensor

__all__ = [
    "AcceptedKeys",
    "NestedKey",
    "Signals",
    "check_finite",
    "get_entry",
    "next_key",
    "resolve_time_dim",
]

NestedKey = str | tuple[str, ...]


@dataclasses.dataclass
class AcceptedKeys:
    """TensorDict keys an estimator reads and writes.

    ``reward``, ``done`` and ``terminated`` are read under ``"next"``; ``mask`` (``None`` =
    off) is read at the root, ``[*B, T]`` or ``[*B, T, F]`` bool with ``True`` = valid step.
    ``sample_log_prob`` (behaviour log-prob) and ``action`` are read only by estimators that
    score actions (:class:`~ppokit.value.vtrace.VTrace`).
    """

    advantage: NestedKey = "advantage"
    value_target: NestedKey = "value_target"
    value: NestedKey = "state_value"
    reward: NestedKey = "reward"
    done: NestedKey = "done"
    terminated: NestedKey = "terminated"
    mask: NestedKey | None = None
    sample_log_prob: NestedKey = "action_log_prob"
    action: NestedKey = "action"


class Signals(NamedTuple):
    """The per-step inputs read from ``"next"``, all ``[*B, T, F]`` (mask may be ``None``)."""

    reward: Tensor
    done: Tensor
    terminated: Tensor
    mask: Tensor | None


def next_key(key: NestedKey) -> tuple[str, ...]:
    """``key`` under ``"next"``.

    Example:
        >>> next_key(("agents", "reward"))
        ('next', 'agents', 'reward')
    """
    return ("next", key) if isinstance(key, str) else ("next", *key)


def _present_keys(tensordict: TensorDictBase) -> list[Any]:
    return sorted(tensordict.keys(include_nested=True, leaves_only=True), key=str)


def get_entry(tensordict: TensorDictBase, key: NestedKey, what: str) -> Any:
    """``tensordict[key]``, or a ``KeyError`` that lists the keys present and the fix."""
    value = tensordict.get(key, None)
    if value is None:
        raise KeyError(
            f"{what}: key {key!r} is missing from the tensordict; present keys: "
            f"{_present_keys(tensordict)}. Add it or rename with set_keys(...)."
        )
    return value


def check_finite(key: NestedKey, tensor: Tensor, used: Tensor | None) -> None:
    """Raise if ``tensor`` holds NaN/Inf where ``used`` (default: everywhere) is True.

    Example:
        >>> check_finite("reward", torch.tensor([1.0, float("nan")]), torch.tensor([True, False]))
    """
    bad = ~torch.isfinite(tensor)
    if used is not None:
        bad = bad & used
    if bool(bad.any()):
        raise ValueError(
            f"{key!r} holds {int(bad.sum())} NaN/Inf entries; fix the data or the value "
            "network before estimating advantages."
        )


def resolve_time_dim(tensordict: TensorDictBase, time_dim: int | None, default: int | None) -> int:
    """The non-negative time dim of ``tensordict``.

    Args:
        tensordict: data with batch size ``[*B, T]`` (at least one dim).
        time_dim: the caller's choice (may be negative), or ``None``.
        default: the estimator's ``time_dim``, used when ``time_dim`` is ``None``.

    Returns:
        ``time_dim``, else ``default``, else a dim named ``"time"``, else the last batch dim.

    Example:
        >>> from tensordict import TensorDict
        >>> resolve_time_dim(TensorDict({}, batch_size=[4, 10]), None, None)
        1
    """
    ndim = tensordict.batch_dims
    if ndim < 1:
        raise ValueError(
            "Expected a tensordict with batch dims [*B, T] (at least the time dim), got "
            f"batch_size={tuple(tensordict.batch_size)}. Unsqueeze a time dim first."
        )
    if time_dim is None:
        time_dim = default
    if time_dim is None:
        try:
            names = list(tensordict.names)
        except (RuntimeError, ValueError):  # some lazy tensordicts have no names
            names = []
        time_dim = names.index("time") if "time" in names else ndim - 1
    if not -ndim <= time_dim < ndim:
        raise ValueError(
            f"time_dim={time_dim} is out of range for batch_size {tuple(tensordict.batch_size)}."
        )
    return time_dim % ndim
