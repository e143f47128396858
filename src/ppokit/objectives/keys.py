"""The TensorDict keys a PPO loss reads, and how ``set_keys`` renames them."""

from __future__ import annotations

import dataclasses

from tensordict.utils import NestedKey

__all__ = ["AUTO_MASK_KEYS", "ESTIMATOR_KEYS", "PPOKeys", "key_str", "resolve_keys"]

# Looked up in this order when no mask key is set: TorchRL's collector mask and the
# validity mask of its multi-step transforms, so TorchRL data is masked out of the box.
AUTO_MASK_KEYS: tuple[NestedKey, ...] = (("collector", "mask"), "shifted_valid")

#: the keys a loss forwards to its value estimator
ESTIMATOR_KEYS = ("advantage", "value_target", "value", "reward", "done", "terminated")


@dataclasses.dataclass
class PPOKeys:
    """The TensorDict keys a PPO loss reads; change them with ``loss.set_keys(...)``.

    Attributes:
        advantage: advantage ``[*B, 1]``; computed by the value estimator when absent.
        value_target: critic regression target ``[*B, 1]``.
        value: state value ``[*B, 1]`` written by the critic (the stored one is V_old
            for ``clip_value``).
        sample_log_prob: log-prob of the stored action under the behaviour policy ``[*B]``
            (TorchRL's older pipelines store it as ``"sample_log_prob"``).
        action: the action as sampled, ``[*B, *act]``.
        reward: reward, read under ``"next"`` by the value estimator.
        done: end of a trajectory (terminated or truncated), under ``"next"``.
        terminated: terminal state (no bootstrap), under ``"next"``.
        mask: boolean ``[*B]`` or ``[*B, 1]`` validity mask; ``None`` looks for
            ``("collector", "mask")`` then ``"shifted_valid"``.

    Example:
        >>> PPOKeys().sample_log_prob
        'action_log_prob'
    """

    advantage: NestedKey = "advantage"
    value_target: NestedKey = "value_target"
    value: NestedKey = "state_value"
    sample_log_prob: NestedKey = "action_log_prob"
    action: NestedKey = "action"
    reward: NestedKey = "reward"
    done: NestedKey = "done"
    terminated: NestedKey = "terminated"
    mask: NestedKey | None = None


def key_str(key: NestedKey | None) -> str:
    """How a key is shown in error messages.

    Example:
        >>> key_str(("next", "reward"))
        "('next', 'reward')"
    """
    return repr(key)


def resolve_keys(current: PPOKeys, defaults: PPOKeys, **keys: NestedKey | None) -> None:
    """Apply ``set_keys(**keys)`` to ``current`` in place (``None`` restores the default).

    A name may be given with or without the ``_key`` suffix; an unknown name or a key that
    is not a str or tuple raises before anything changes.

    Example:
        >>> keys = PPOKeys()
        >>> resolve_keys(keys, PPOKeys(), advantage_key="adv")
        >>> keys.advantage
        'adv'
    """
    fields = {f.name for f in dataclasses.fields(current)}
    resolved: dict[str, NestedKey | None] = {}
    for name, key in keys.items():
        field = name[: -len("_key")] if name.endswith("_key") else name
        if field not in fields:
            raise ValueError(
                f"set_keys() got an unknown key name {name!r}; accepted names are "
                f"{sorted(fields)}."
            )
        if key is not None and not isinstance(key, (str, tuple)):
            raise TypeError(
                f"set_keys({name}=...) expects a key (a str or a tuple of str), got "
                f"{type(key).__name__}."
            )
        resolved[field] = key
    for field, key in resolved.items():
        setattr(current, field, getattr(defaults, field) if key is None else key)
