"""Reading and checking what a PPO loss takes from the data (no network runs here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from ppokit.objectives.composite import stored_log_prob
from ppokit.objectives.degenerate import check_not_empty
from ppokit.objectives.keys import AUTO_MASK_KEYS, ActionKeys, PPOKeys, key_str

__all__ = [
    "CriticInputs",
    "LossInputs",
    "check_finite",
    "check_no_grad",
    "check_target_shape",
    "get_entry",
    "get_mask",
    "read_action",
    "read_critic_inputs",
    "read_inputs",
    "read_log_prob",
    "read_old_value",
]


class LossInputs(NamedTuple):
    """What :func:`read_inputs` read and checked, for the networks and the objective."""

    work: Any  # the TensorDict the networks read (a dict of tensors in a compiled call)
    batch: torch.Size
    action: Any  # a tensor, or a TensorDict of the heads' actions (composite policy)
    old_log_prob: torch.Tensor
    advantage: torch.Tensor
    value_target: torch.Tensor | None
    old_value: torch.Tensor | None
    mask: torch.Tensor | None
    fast: bool  # the networks run on the direct path (ppokit.internals.direct)


def read_inputs(
    tensordict: TensorDictBase,
    keys: PPOKeys,
    *,
    loss_name: str,
    direct: bool,
    needs_value_target: bool,
    clip_value: Any = None,
    estimate_advantage: Callable[[TensorDictBase], torch.Tensor],
) -> LossInputs:
    """Read and check everything the loss needs from ``tensordict`` ``[*B]``.

    Args:
        tensordict: the batch.
        keys: where each entry lives.
        loss_name: the loss's class name, for messages.
        direct: whether the networks will run on the direct path (then, with the advantage
            present, the input is read as it is and never written).
        needs_value_target: read ``value_target`` ``[*B, 1]`` (a critic is trained).
        clip_value: the value-clip threshold; when set, read the stored value ``[*B, 1]``.
        estimate_advantage: writes the advantage (and value target) into the shallow copy
            it is given and returns the advantage, when the data has none.

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"action": torch.zeros(2), "action_log_prob": torch.zeros(2),
        ...                  "advantage": torch.ones(2, 1)}, batch_size=[2])
        >>> inp = read_inputs(td, PPOKeys(), loss_name="ClipPPOLoss", direct=False,
        ...                   needs_value_target=False,
        ...                   estimate_advantage=lambda td: None)
        >>> inp.batch, inp.mask
        (torch.Size([2]), None)
    """
    if not isinstance(tensordict, TensorDictBase):
        raise TypeError(f"{loss_name} expects a TensorDict, got {type(tensordict).__name__}.")
    batch = tensordict.batch_size
    if len(batch) == 0:
        raise ValueError(
            "The input TensorDict has no batch dimension (batch_size=[]); the loss needs "
            "a batch of samples, e.g. TensorDict(..., batch_size=[B])."
        )
    check_not_empty(batch, what=f"{loss_name}'s input TensorDict")
    mask = get_mask(tensordict, batch, keys.mask)
    # Read everything the user stored BEFORE running any network: a module that samples
    # on its way (a full actor-critic operator as the actor) would overwrite the stored
    # action, log-prob and value in the data it runs on.
    action = read_action(tensordict, keys.action)
    advantage = tensordict.get(keys.advantage, None)
    old_log_prob = read_log_prob(
        tensordict, keys.sample_log_prob, sample_shape=_head_shape(tensordict, keys, advantage)
    )
    if old_log_prob.shape != batch and not _per_token(old_log_prob, advantage, batch, mask):
        raise ValueError(
            f"The log-prob at {key_str(keys.sample_log_prob)} has shape "
            f"{tuple(old_log_prob.shape)}, expected the batch shape {tuple(batch)}: one "
            "log-prob per sample, summed over the action dims (e.g. use IndependentNormal "
            "rather than Normal, or .sum(-1) the stored log-prob). Per-token log-probs "
            f"{tuple(old_log_prob.shape)} need an advantage of shape "
            f"{(*old_log_prob.shape, 1)} and no mask."
        )
    # shallow copy: the estimator and tensordict's modules write here, not in the input
    # (the direct path writes into plain dicts and reads the input as it is)
    work = tensordict if direct and advantage is not None else tensordict.copy()
    if advantage is None:
        advantage = estimate_advantage(work)
    # V_old is the value in the data, or the one the loss's own estimator just wrote (then
    # clipping has no effect, as the spec notes). Read before the actor runs.
    old_value = read_old_value(work, keys.value, clip_value)
    value_target = (
        get_entry(
            work,
            keys.value_target,
            "value_target",
            hint="a value estimator writes it next to the advantage",
        )
        if needs_value_target
        else None
    )
    check_target_shape(advantage, keys.advantage, old_log_prob.shape)
    # per-token / per-agent samples may have one value each, or one per batch entry
    samples = old_log_prob.shape
    per_sample = value_target is not None and tuple(value_target.shape) == (*samples, 1)
    values_shape = samples if per_sample else batch
    if value_target is not None:
        check_target_shape(value_target, keys.value_target, values_shape)
    if old_value is not None:
        check_target_shape(old_value, keys.value, values_shape)
    return LossInputs(
        work, batch, action, old_log_prob, advantage, value_target, old_value, mask, direct
    )


class CriticInputs(NamedTuple):
    """What :func:`read_critic_inputs` read, for the critic term alone."""

    work: TensorDictBase  # a shallow copy the critic writes into
    batch: torch.Size
    value_target: torch.Tensor
    old_value: torch.Tensor | None
    fast: bool = False  # the critic runs through tensordict


def read_critic_inputs(
    tensordict: TensorDictBase, keys: PPOKeys, *, clip_value: Any
) -> CriticInputs:
    """What the critic term alone reads (``loss.loss_critic``): the value target and, with
    ``clip_value``, the stored value; the critic then runs on a shallow copy."""
    batch = tensordict.batch_size
    value_target = get_entry(
        tensordict,
        keys.value_target,
        "value_target",
        hint="a value estimator writes it next to the advantage",
    )
    check_target_shape(value_target, keys.value_target, batch)
    old_value = read_old_value(tensordict, keys.value, clip_value)
    if old_value is not None:
        check_target_shape(old_value, keys.value, batch)
    return CriticInputs(tensordict.copy(), batch, value_target, old_value)


def read_old_value(
    tensordict: TensorDictBase, key: NestedKey, clip_value: Any
) -> torch.Tensor | None:
    """The value stored at collection time (V_old), read only for value clipping."""
    if clip_value is None:
        return None
    old_value = tensordict.get(key, None)
    if old_value is None:
        # the start of the message is TorchRL's (its tests match it)
        raise KeyError(
            f"clip_value is set to {clip_value}, but the key {key} was not found "
            "in the input tensordict. Make sure that the value key passed to PPO exists in "
            "the input tensordict: clipping needs the value stored at collection time "
            f"(or call loss.set_keys(value=<its key>)). Present keys: "
            f"{sorted(str(k) for k in tensordict.keys(include_nested=True, leaves_only=True))}."
        )
    return old_value


def read_action(tensordict: TensorDictBase, key: ActionKeys) -> Any:
    """The stored action: a tensor, or for several heads a TensorDict of their actions.

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"a": torch.zeros(2), "b": torch.ones(2, 3)}, batch_size=[2])
        >>> read_action(td, ["a", "b"])["b"].shape
        torch.Size([2, 3])
    """
    if not isinstance(key, list):
        action = get_entry(tensordict, key, "action")
        check_no_grad(action, key)
        return action
    heads = {}
    for head in key:
        heads[head] = get_entry(tensordict, head, "action")
        check_no_grad(heads[head], head)
    return TensorDict(heads, batch_size=tensordict.batch_size)


def read_log_prob(
    tensordict: TensorDictBase, key: ActionKeys, *, sample_shape: torch.Size | None = None
) -> torch.Tensor:
    """The behaviour log-prob; for one key per head, the heads' log-probs summed ``[*S]``.

    ``S`` is ``sample_shape`` (default: the batch shape): each head's log-prob is summed
    over its dims after ``S``.

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"a_log_prob": torch.ones(2), "b_log_prob": torch.ones(2, 3)},
        ...                 batch_size=[2])
        >>> read_log_prob(td, ["a_log_prob", "b_log_prob"])  # 1 + (1 + 1 + 1)
        tensor([4., 4.])
    """
    if not isinstance(key, list):
        value = get_entry(tensordict, key, "sample_log_prob")
        check_no_grad(value, key)
        return value
    for k in key:
        check_no_grad(get_entry(tensordict, k, "sample_log_prob"), k)
    shape = tensordict.batch_size if sample_shape is None else sample_shape
    return stored_log_prob(tensordict, key, batch_shape=shape)


def _head_shape(
    tensordict: TensorDictBase, keys: PPOKeys, advantage: torch.Tensor | None
) -> torch.Size | None:
    """The sample shape of a composite policy's log-probs: the advantage's ``[*B, *T]``
    when every head's stored log-prob starts with it (per-agent heads next to a per-agent
    advantage, as TorchRL sums each head down to the advantage's shape), else None (the
    batch shape)."""
    batch = tensordict.batch_size
    if not isinstance(keys.sample_log_prob, list) or advantage is None:
        return None
    shape = advantage.shape[:-1]
    if len(shape) <= len(batch) or shape[: len(batch)] != batch:
        return None
    for key in keys.sample_log_prob:
        value = tensordict.get(key, None)
        if not isinstance(value, torch.Tensor) or value.shape[: len(shape)] != shape:
            return None
    return shape


def _per_token(
    old_log_prob: torch.Tensor,
    advantage: torch.Tensor | None,
    batch: torch.Size,
    mask: torch.Tensor | None,
) -> bool:
    """Log-probs with extra dims after the batch (one per token, ``[*B, T]``), as TorchRL
    takes them: only with an advantage of the same shape ``[*B, T, 1]`` (never broadcast)
    and no mask."""
    return (
        old_log_prob.dim() > len(batch)
        and old_log_prob.shape[: len(batch)] == batch
        and mask is None
        and advantage is not None
        and tuple(advantage.shape) == (*old_log_prob.shape, 1)
    )


def get_entry(
    td: TensorDictBase, key: NestedKey, name: str, *, hint: str | None = None
) -> torch.Tensor:
    """``td[key]``, or an error naming the key, what is present and how to rename it.

    Example:
        >>> from tensordict import TensorDict
        >>> get_entry(TensorDict(a=torch.zeros(1)), "b", "advantage")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        KeyError: "The input TensorDict has no 'b' entry (the advantage key). ...
    """
    value = td.get(key, None)
    if value is None:
        present = sorted(str(k) for k in td.keys(include_nested=True, leaves_only=True))
        extra = f" ({hint})" if hint else ""
        raise KeyError(
            f"The input TensorDict has no {key_str(key)} entry (the {name} key){extra}. "
            f"Present keys: {present}. If the data stores it under another name, call "
            f"loss.set_keys({name}=<that key>)."
        )
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"The {key_str(key)} entry must be a tensor, got {type(value).__name__}.")
    return value


def check_no_grad(value: torch.Tensor, key: NestedKey) -> None:
    """Stored data must be constant (written under ``no_grad`` while acting)."""
    if value.requires_grad:
        raise ValueError(
            f"The stored {key_str(key)} requires grad: data written while acting must be "
            "constant. Collect under torch.no_grad() or store .detach()ed tensors."
        )


def check_target_shape(value: torch.Tensor, key: NestedKey, batch: torch.Size) -> None:
    """A per-sample scalar must be ``[*B, 1]``: anything else would broadcast silently.

    Example:
        >>> check_target_shape(torch.zeros(3), "advantage", torch.Size([3]))
        Traceback (most recent call last):
        ...
        ValueError: The 'advantage' entry has shape (3,), expected (3, 1) (the batch shape (3,) plus a trailing dim of 1); a different shape would broadcast silently against the other terms. A (3,) entry against the (3, 1) terms would make an outer product; add the trailing dim with .unsqueeze(-1).
    """  # noqa: E501
    expected = (*batch, 1)
    if tuple(value.shape) == expected:
        return
    fix = ""
    if tuple(value.shape) == tuple(batch):
        fix = (
            f" A {tuple(batch)} entry against the {expected} terms would make an outer "
            "product; add the trailing dim with .unsqueeze(-1)."
        )
    raise ValueError(
        f"The {key_str(key)} entry has shape {tuple(value.shape)}, expected {expected} "
        f"(the batch shape {tuple(batch)} plus a trailing dim of 1); a different shape "
        f"would broadcast silently against the other terms.{fix}"
    )


def check_finite(
    *entries: tuple[torch.Tensor | None, NestedKey], mask: torch.Tensor | None
) -> None:
    """Raise naming the first entry that holds NaN/Inf at a valid (unmasked) sample.

    Example:
        >>> check_finite((torch.tensor([1.0, float("nan")]), "advantage"), mask=None)
        Traceback (most recent call last):
        ...
        ValueError: The 'advantage' entry holds 1 non-finite value(s) (NaN or Inf). Check the rewards and the networks that produced it; the loss would otherwise return NaN and corrupt the parameters.
    """  # noqa: E501
    present = []
    for value, key in entries:
        if value is None:
            continue
        value = value.detach()
        if mask is not None:  # padded samples may hold anything
            m = mask if value.dim() == mask.dim() else mask.squeeze(-1)
            value = torch.where(m, value, torch.zeros_like(value))
        present.append((value, key))
    # One fused check on the happy path; the per-key search only runs on failure.
    if bool(torch.isfinite(torch.cat([v.reshape(-1) for v, _ in present])).all()):
        return
    for value, key in present:
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            raise ValueError(
                f"The {key_str(key)} entry holds {int(bad.sum())} non-finite value(s) "
                "(NaN or Inf). Check the rewards and the networks that produced it; the loss "
                "would otherwise return NaN and corrupt the parameters."
            )


def get_mask(
    td: TensorDictBase, batch: torch.Size, mask_key: NestedKey | None
) -> torch.Tensor | None:
    """The validity mask ``[*B, 1]`` (bool), or None when the data has none.

    ``mask_key=None`` looks up :data:`~ppokit.objectives.keys.AUTO_MASK_KEYS`; a set key
    must be present.

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict(shifted_valid=torch.tensor([True, False]), batch_size=[2])
        >>> get_mask(td, td.batch_size, None).shape
        torch.Size([2, 1])
    """
    for key in (mask_key,) if mask_key is not None else AUTO_MASK_KEYS:
        mask = td.get(key, None)
        if mask is None:
            continue
        if mask.dtype != torch.bool:
            raise ValueError(f"The mask at {key_str(key)} must be a bool tensor, got {mask.dtype}.")
        if tuple(mask.shape) == tuple(batch):
            mask = mask.unsqueeze(-1)
        if tuple(mask.shape) != (*batch, 1):
            raise ValueError(
                f"The mask at {key_str(key)} has shape {tuple(mask.shape)}, expected "
                f"{tuple(batch)} or {(*batch, 1)}."
            )
        return mask
    if mask_key is not None:
        raise KeyError(
            f"The mask key was set to {key_str(mask_key)} but the input has no such entry; "
            "call loss.set_keys(mask=None) to disable masking."
        )
    return None
