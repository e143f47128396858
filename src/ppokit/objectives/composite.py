"""Scoring stored actions, for plain and composite (multi-head) policies.

Entropies, their Monte-Carlo estimate and per-head coefficients are in
:mod:`ppokit.objectives.entropy`.

A composite policy (tensordict's :class:`~tensordict.nn.CompositeDistribution`) has one
head per action entry, e.g. ``("agents", "action")``. As in TorchRL 0.14.1's PPO losses, a
head's log-prob or entropy ``[*B, *event]`` is summed over its dims after the batch ``[*B]``,
then over heads; behaviour log-probs are stored as ``"<head>_log_prob"`` (or summed under one
key). A plain distribution's log-prob and entropy keep any trailing (per-token) dims.

Deliberate difference from TorchRL: with a per-head ``entropy_coeff`` TorchRL adds the heads'
weighted entropies without summing their event dims, so a ``[*B, 2]`` head broadcasts against
a ``[*B]`` one and the mean averages the 2 dims instead of summing them. ppokit sums each
head's event dims first, as the scalar-coefficient path of both libraries does; both agree
whenever each head's entropy is one value per sample.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any, TypeAlias

import torch
from tensordict import TensorDictBase
from tensordict.nn import CompositeDistribution
from tensordict.utils import NestedKey, unravel_key
from torch import distributions as D

__all__ = [
    "action_log_prob",
    "entropy_key",
    "log_prob_key",
    "policy_keys",
    "stored_log_prob",
]

Keys: TypeAlias = NestedKey | Sequence[NestedKey]  # one key, or one per head


norm_key = unravel_key  # one spelling per key: ("a",) -> "a", ("a", ("b",)) -> ("a", "b")


def _suffix(key: NestedKey, suffix: str) -> NestedKey:
    key = norm_key(key)
    return key + suffix if isinstance(key, str) else (*key[:-1], key[-1] + suffix)


def log_prob_key(head: NestedKey) -> NestedKey:
    """Where tensordict stores a head's log-prob: ``("a", "x")`` -> ``("a", "x_log_prob")``."""
    return _suffix(head, "_log_prob")


def entropy_key(head: NestedKey) -> NestedKey:
    """Where a head's entropy is logged (TorchRL's names): ``entropy_key("x") == "x_entropy"``."""
    return _suffix(head, "_entropy")


def head_keys(dist: CompositeDistribution) -> list[NestedKey]:  # in the composite's order
    return [norm_key(k) for k in dist.dists]


def policy_keys(actor: Any) -> tuple[Keys, Keys] | None:
    """The (action key(s), log-prob key(s)) an actor writes, as TorchRL's losses adopt them.

    From the public ``dist_sample_keys`` / ``log_prob_keys`` of a tensordict probabilistic
    module: single keys for one head, lists for several (TorchRL's ``set_keys`` convention);
    ``None`` when the actor does not expose them.

    Example:
        >>> from tensordict.nn import ProbabilisticTensorDictModule as Prob
        >>> policy_keys(Prob(["logits"], ["action"], distribution_class=D.Categorical))
        ('action', 'action_log_prob')
    """
    try:
        actions = list(actor.dist_sample_keys)
        log_probs = list(actor.log_prob_keys)
    except (AttributeError, TypeError):
        return None
    if not actions or len(actions) != len(log_probs):
        return None
    if len(actions) == 1:
        return norm_key(actions[0]), norm_key(log_probs[0])
    return [norm_key(k) for k in actions], [norm_key(k) for k in log_probs]


def _get(tensordict: TensorDictBase, key: NestedKey, what: str) -> torch.Tensor:
    value = tensordict.get(key, None)
    if value is None:
        present = sorted(map(repr, tensordict.keys(include_nested=True, leaves_only=True)))
        raise KeyError(
            f"The {what} {key!r} is missing from the data; it holds "
            f"{', '.join(present)}. Store it or point the loss at it with set_keys()."
        )
    if value.requires_grad:
        raise RuntimeError(
            f"The stored {what} {key!r} requires grad; rollout data must be "
            f"detached (collect under torch.no_grad())."
        )
    return value


def batched_entry(value: torch.Tensor, batch_shape: torch.Size, what: str) -> torch.Tensor:
    """``value`` itself, after checking it is ``[*B, *extra]`` (never a silent broadcast)."""
    if value.shape[: len(batch_shape)] != batch_shape:
        raise ValueError(
            f"The {what} has shape {tuple(value.shape)}, expected the batch shape "
            f"{tuple(batch_shape)} optionally followed by event or per-token dims."
        )
    return value


def per_sample(value: torch.Tensor, batch_shape: torch.Size, what: str) -> torch.Tensor:
    """Sum ``[*B, *extra]`` over ``extra``: one value per sample ``[*B]``."""
    value, n = batched_entry(value, batch_shape, what), len(batch_shape)
    return value.flatten(n).sum(-1) if value.ndim > n else value


def sum_heads(parts: list[torch.Tensor]) -> torch.Tensor:  # per-head terms, in head order
    return functools.reduce(operator.add, parts)


def _as_key_list(keys: Keys) -> list[NestedKey]:
    return [norm_key(keys)] if isinstance(keys, (str, tuple)) else [norm_key(k) for k in keys]


def action_log_prob(
    dist: D.Distribution, tensordict: TensorDictBase, action_key: Keys, *, batch_shape: torch.Size
) -> torch.Tensor:
    """Log-prob of the stored action(s) under ``dist`` (the current policy).

    Args:
        dist: the policy's distribution on this batch, plain or composite.
        tensordict: the data, holding the stored action(s).
        action_key: the action key, or the heads' action keys (composite).
        batch_shape: ``[*B]``, the batch the loss works on (the advantage's leading dims).

    Returns:
        Plain: ``dist.log_prob(action)`` ``[*B, *extra]`` (``extra`` kept: per-token).
        Composite: ``[*B]``, the heads' log-probs summed over their dims after ``[*B]``.

    Example:
        >>> from tensordict import TensorDict
        >>> params = TensorDict({"move": {"loc": torch.zeros(2, 3), "scale": torch.ones(2, 3)},
        ...                      "grip": {"logits": torch.zeros(2, 4)}}, [2])
        >>> dist = CompositeDistribution(params, distribution_map={
        ...     "move": D.Normal, "grip": D.Categorical})
        >>> data = TensorDict({"move": torch.zeros(2, 3), "grip": torch.zeros(2)}, [2])
        >>> lp = action_log_prob(dist, data, ["move", "grip"], batch_shape=torch.Size([2]))
        >>> # 3 standard-normal dims at 0 (-0.9189 each) + uniform over 4 (-1.3863)
        >>> lp
        tensor([-4.1431, -4.1431])
    """
    if not isinstance(dist, CompositeDistribution):
        if not isinstance(action_key, (str, tuple)):
            keys = list(action_key)
            if len(keys) != 1:
                raise ValueError(
                    f"Got the action keys {keys} but {type(dist).__name__} is not a "
                    f"CompositeDistribution; pass one key."
                )
            action_key = keys[0]
        return batched_entry(
            dist.log_prob(_get(tensordict, action_key, "action")),
            batch_shape,
            f"{type(dist).__name__}.log_prob of the action {action_key!r}",
        )
    heads = head_keys(dist)
    asked = _as_key_list(action_key)
    if set(asked) != set(heads):
        raise KeyError(
            f"The composite distribution has heads {heads} but the loss's action "
            f"keys are {asked}; set them with loss.set_keys(action={heads})."
        )
    return sum_heads(
        [
            per_sample(
                sub.log_prob(_get(tensordict, head, "action of head")),
                batch_shape,
                f"log-prob of head {head!r}",
            )
            for head, sub in zip(heads, dist.dists.values())
        ]
    )


def stored_log_prob(
    tensordict: TensorDictBase, log_prob_key: Keys, *, batch_shape: torch.Size
) -> torch.Tensor:
    """The behaviour log-prob stored in the data, to compare with :func:`action_log_prob`.

    Args:
        tensordict: the data.
        log_prob_key: one key (plain policy, or a composite's log-prob stored summed) or the
            heads' keys (``[log_prob_key(h) for h in heads]``).
        batch_shape: ``[*B]``.

    Returns:
        One key: the stored ``[*B, *extra]`` as is. Several: ``[*B]``, summed as above.

    Example:
        >>> from tensordict import TensorDict
        >>> data = TensorDict({"move_log_prob": torch.tensor([[-1.0, -2.0]]),
        ...                    "grip_log_prob": torch.tensor([-0.5])}, [1])
        >>> stored_log_prob(data, ["move_log_prob", "grip_log_prob"],
        ...                 batch_shape=torch.Size([1]))
        tensor([-3.5000])
    """
    values = [(k, _get(tensordict, k, "behaviour log-prob")) for k in _as_key_list(log_prob_key)]
    if len(values) == 1:
        return batched_entry(values[0][1], batch_shape, f"log-prob at {values[0][0]!r}")
    return sum_heads([per_sample(v, batch_shape, f"log-prob at {k!r}") for k, v in values])
