"""The TensorDict keys a PPO loss reads, and how ``set_keys`` renames them."""

from __future__ import annotations

import dataclasses
import warnings
from typing import TypeAlias

from tensordict.utils import NestedKey
from torch import nn

from ppokit.objectives.composite import policy_keys

__all__ = [
    "AUTO_MASK_KEYS",
    "ESTIMATOR_KEYS",
    "HEAD_KEY_FIELDS",
    "OPTIONAL_ESTIMATOR_KEYS",
    "ActionKeys",
    "LossKeys",
    "PPOKeys",
    "key_str",
    "resolve_keys",
]

#: one key, or one per head of a composite (multi-head) policy
ActionKeys: TypeAlias = NestedKey | list[NestedKey]

#: the fields that take one key per head for a composite policy (TorchRL's list convention)
HEAD_KEY_FIELDS = ("action", "sample_log_prob")

# Looked up in this order when no mask key is set: TorchRL's collector mask and the
# validity mask of its multi-step transforms, so TorchRL data is masked out of the box.
AUTO_MASK_KEYS: tuple[NestedKey, ...] = (("collector", "mask"), "shifted_valid")

#: the keys a loss forwards to its value estimator (V-trace also scores the stored action)
ESTIMATOR_KEYS = (
    "advantage",
    "value_target",
    "value",
    "reward",
    "done",
    "terminated",
    "sample_log_prob",
    "action",
)
#: of those, the ones only some estimators read (V-trace)
OPTIONAL_ESTIMATOR_KEYS = ("sample_log_prob", "action")


@dataclasses.dataclass
class PPOKeys:
    """The TensorDict keys a PPO loss reads; change them with ``loss.set_keys(...)``.

    Attributes:
        advantage: advantage ``[*B, 1]``; computed by the value estimator when absent.
        value_target: critic regression target ``[*B, 1]``.
        value: state value ``[*B, 1]`` written by the critic (the stored one is V_old
            for ``clip_value``).
        sample_log_prob: log-prob of the stored action under the behaviour policy ``[*B]``
            (TorchRL's older pipelines store it as ``"sample_log_prob"``); for a composite
            policy, a list with one key per head (summed) or one key holding the sum.
        action: the action as sampled, ``[*B, *act]``; a list of the heads' keys for a
            composite policy.
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
    sample_log_prob: ActionKeys = "action_log_prob"
    action: ActionKeys = "action"
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


def resolve_keys(current: PPOKeys, defaults: PPOKeys, **keys: ActionKeys | None) -> None:
    """Apply ``set_keys(**keys)`` to ``current`` in place (``None`` restores the default).

    A name may be given with or without the ``_key`` suffix; an unknown name or a key that
    is not a str or tuple raises before anything changes. ``action`` and ``sample_log_prob``
    also take a list of keys, one per head of a composite policy; a one-element list is
    that key.

    Example:
        >>> keys = PPOKeys()
        >>> resolve_keys(keys, PPOKeys(), advantage_key="adv")
        >>> keys.advantage
        'adv'
        >>> resolve_keys(keys, PPOKeys(), sample_log_prob=[("action", "a_log_prob")])
        >>> keys.sample_log_prob
        ('action', 'a_log_prob')
    """
    fields = {f.name for f in dataclasses.fields(current)}
    resolved: dict[str, ActionKeys | None] = {}
    for name, key in keys.items():
        field = name[: -len("_key")] if name.endswith("_key") else name
        if field not in fields:
            raise ValueError(
                f"set_keys() got an unknown key name {name!r}; accepted names are {sorted(fields)}."
            )
        if field in HEAD_KEY_FIELDS and isinstance(key, list):
            if not key or not all(isinstance(k, (str, tuple)) for k in key):
                raise TypeError(
                    f"set_keys({name}=[...]) expects a non-empty list of keys (str or tuple "
                    f"of str), one per action head, got {key!r}."
                )
            key = key[0] if len(key) == 1 else list(key)
        elif key is not None and not isinstance(key, (str, tuple)):
            lists = (
                " or, for a composite policy, a list of keys" if (field in HEAD_KEY_FIELDS) else ""
            )
            raise TypeError(
                f"set_keys({name}=...) expects a key (a str or a tuple of str){lists}, got "
                f"{type(key).__name__}."
            )
        resolved[field] = key
    for field, key in resolved.items():
        setattr(current, field, getattr(defaults, field) if key is None else key)


class LossKeys(nn.Module):
    """The keys part of :class:`ppokit.PPOLoss` (a base class; not used alone)."""

    default_keys = PPOKeys
    tensor_keys: PPOKeys

    def _keys_changed(self) -> None:
        """Called after :meth:`set_keys` (the value estimator follows the keys)."""

    def _adopt_actor_keys(self, actor: nn.Module) -> None:
        # The loss scores the action and reads the log-prob under the keys the actor writes
        # (one per head for a composite policy).
        keys = policy_keys(actor)
        if keys is not None:
            self.tensor_keys.action, self.tensor_keys.sample_log_prob = keys

    def _set_deprecated_keys(self, **keys: NestedKey | None) -> None:
        given = {name: key for name, key in keys.items() if key is not None}
        if not given:
            return
        args = ", ".join(f"{name}_key" for name in given)
        fix = ", ".join(f"{name}={key!r}" for name, key in given.items())
        warnings.warn(
            f"The {args} argument(s) are deprecated; call loss.set_keys({fix}) instead.",
            DeprecationWarning,
            stacklevel=3,
        )
        self.set_keys(**given)

    def set_keys(self, **keys: ActionKeys | None) -> LossKeys:
        """Rename the TensorDict keys the loss reads (see :class:`PPOKeys`).

        A name may be given with or without the ``_key`` suffix (``advantage=`` or
        ``advantage_key=``); ``None`` restores the default. Unknown names raise.

        Example:
            >>> from torch import nn
            >>> from tensordict.nn import TensorDictModule
            >>> from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor, ValueOperator
            >>> actor = ProbabilisticActor(
            ...     TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"]),
            ...     in_keys=["logits"], distribution_class=Categorical)
            >>> loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(3, 1)))
            >>> loss.set_keys(sample_log_prob="sample_log_prob").tensor_keys.sample_log_prob
            'sample_log_prob'
        """
        resolve_keys(self.tensor_keys, self.default_keys(), **keys)
        self._keys_changed()
        return self
