"""TorchRL's module protocol for a loss: in_keys, out_keys, select_out_keys, keyword calls.

TorchRL 0.14.1's losses are tensordict modules: they list the keys they read (``in_keys``)
and the entries they return (``out_keys``), can be told to return only some entries
(``select_out_keys``), can be called with one keyword argument per input key instead of a
TensorDict (tensordict's ``dispatch``: a nested key ``("next", "reward")`` is spelled
``next_reward``, the call returns the values of ``out_keys`` in order, a bare tensor when
there is one) and can re-initialise their networks (``reset_parameters_recursive``).

:class:`LossProtocol` gives an ``nn.Module`` loss all of that. The loss provides
``actor_network``, ``critic_network`` (or ``None``), ``tensor_keys`` (with ``action``,
``sample_log_prob``, ``reward``, ``done``, ``terminated``) and ``_all_out_keys()``, and
lists the mixin before ``nn.Module``::

    class PPOLoss(LossProtocol, nn.Module):
        def _all_out_keys(self) -> list[str]:
            return ["loss_objective", ...]   # what forward returns, option by option

Differences from TorchRL, on purpose: ``in_keys`` keeps a stable order (TorchRL's comes from
a ``set``, so its positional calls have no fixed order; ppokit refuses positional tensors),
and unknown or missing keyword arguments raise an error naming them (TorchRL passes unknown
names on to ``forward`` and fails later on a missing one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch
from tensordict import TensorDictBase, is_tensor_collection, make_tensordict
from tensordict.utils import NestedKey, unravel_key
from torch import nn

__all__ = ["LossProtocol", "keyword_name", "keyword_tensordict", "loss_in_keys"]


def _keys(value: NestedKey | Sequence[NestedKey] | None) -> list[NestedKey]:
    if value is None:
        return []
    if isinstance(value, (str, tuple)):
        return [unravel_key(value)]
    return [unravel_key(k) for k in value]


def loss_in_keys(
    actor: Any,
    critic: Any | None,
    *,
    action: NestedKey | Sequence[NestedKey],
    sample_log_prob: NestedKey | Sequence[NestedKey],
    reward: NestedKey,
    done: NestedKey,
    terminated: NestedKey,
    extra: Iterable[NestedKey] = (),
) -> list[NestedKey]:
    """The keys a PPO loss reads, as TorchRL 0.14.1 lists them, without repeats.

    The actor's in_keys (also under ``"next"``, for the value estimator's bootstrap), the
    critic's in_keys, the action(s) and behaviour log-prob(s), and ``"next"`` reward, done
    and terminated; then ``extra`` (e.g. the stored distribution parameters KLPEN reads).

    Example:
        >>> from tensordict.nn import TensorDictModule
        >>> actor = TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"])
        >>> loss_in_keys(actor, None, action="action", sample_log_prob="action_log_prob",
        ...              reward="reward", done="done", terminated="terminated")
        ... # doctest: +NORMALIZE_WHITESPACE
        ['observation', ('next', 'observation'), 'action', 'action_log_prob',
         ('next', 'reward'), ('next', 'done'), ('next', 'terminated')]
    """
    actor_keys = _keys(list(actor.in_keys))
    keys = [*actor_keys, *(unravel_key(("next", k)) for k in actor_keys)]
    if critic is not None:
        keys += _keys(list(critic.in_keys))
    keys += _keys(action) + _keys(sample_log_prob)
    keys += [unravel_key(("next", k)) for k in (reward, done, terminated)]
    keys += _keys(list(extra))
    return list(dict.fromkeys(keys))


def keyword_name(key: NestedKey, separator: str = "_") -> str:
    """The keyword argument that carries ``key`` in a keyword call (tensordict's dispatch).

    Example:
        >>> keyword_name(("next", "reward"))
        'next_reward'
    """
    key = unravel_key(key)
    return key if isinstance(key, str) else separator.join(key)


def keyword_tensordict(
    kwargs: dict[str, Any],
    required: Sequence[NestedKey],
    optional: Sequence[NestedKey] = (),
    *,
    separator: str = "_",
) -> TensorDictBase:
    """Build the input TensorDict of a keyword call, checking every name.

    Args:
        kwargs: ``{keyword_name(key): tensor}``.
        required: keys that must all be given (the loss's ``in_keys``).
        optional: keys that may be given too.
        separator: joins the parts of a nested key.

    Returns:
        A TensorDict with the batch size the tensors share (tensordict's automatic one).

    Example:
        >>> td = keyword_tensordict({"observation": torch.zeros(4, 3),
        ...                          "next_reward": torch.zeros(4, 1)},
        ...                         ["observation", ("next", "reward")])
        >>> td["next", "reward"].shape, td.batch_size
        (torch.Size([4, 1]), torch.Size([4]))
    """
    names: dict[str, NestedKey] = {}
    for key in [*required, *optional]:
        name = keyword_name(key, separator)
        if names.setdefault(name, unravel_key(key)) != unravel_key(key):
            raise ValueError(
                f"The keys {names[name]!r} and {key!r} are both spelled {name!r} "
                f"as keyword arguments; call the loss with a TensorDict instead."
            )
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise TypeError(
            f"Unknown keyword argument(s) {unknown}; this loss accepts "
            f"{sorted(names)} (nested keys joined with {separator!r})."
        )
    missing = sorted({keyword_name(k, separator) for k in required} - set(kwargs))
    if missing:
        raise TypeError(
            f"Missing keyword argument(s) {missing}; a keyword call must give "
            f"every in_key: {[keyword_name(k, separator) for k in required]}."
        )
    return make_tensordict({names[n]: v for n, v in kwargs.items()}, auto_batch_size=True)


class LossProtocol:
    """Mixin giving an ``nn.Module`` loss TorchRL's module protocol (see the module doc).

    Example:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> class Keys:
        ...     action, sample_log_prob = "action", "action_log_prob"
        ...     reward, done, terminated = "reward", "done", "terminated"
        >>> class Tiny(LossProtocol, nn.Module):
        ...     tensor_keys = Keys()
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.actor_network = TensorDictModule(nn.Linear(3, 1), ["obs"], ["out"])
        ...         self.critic_network = None
        ...     def _all_out_keys(self):
        ...         return ["loss_a", "loss_b"]
        ...     def forward(self, td):
        ...         return TensorDict({"loss_a": td["obs"].sum(), "loss_b": td["action"].sum()})
        >>> loss = Tiny()
        >>> loss.in_keys[:2]
        ['obs', ('next', 'obs')]
        >>> data = {keyword_name(k): torch.ones(2, 3) for k in loss.in_keys}
        >>> loss(**data)
        (tensor(6.), tensor(6.))
        >>> loss.select_out_keys("loss_b")(**data)
        tensor(6.)
    """

    _selected_out_keys: list[str] | None = None
    _in_keys_set: list[NestedKey] | None = None
    keyword_separator = "_"

    def _all_out_keys(self) -> list[str]:
        """Every entry :meth:`forward` returns with the current options (the loss defines it)."""
        raise NotImplementedError(f"{type(self).__name__} must define _all_out_keys().")

    def _extra_in_keys(self) -> list[NestedKey]:
        """Keys read beyond the standard ones (KLPEN: the stored distribution parameters)."""
        return []

    def _optional_keyword_keys(self) -> list[NestedKey]:
        """Keys a keyword call may also pass (ppokit accepts e.g. a precomputed advantage)."""
        return []

    @property
    def in_keys(self) -> list[NestedKey]:
        """The keys the loss reads (:func:`loss_in_keys`), unless set explicitly."""
        if self._in_keys_set is not None:
            return list(self._in_keys_set)
        keys = self.tensor_keys  # type: ignore[attr-defined]
        return loss_in_keys(
            self.actor_network,  # type: ignore[attr-defined]
            self.critic_network,  # type: ignore[attr-defined]
            action=keys.action,
            sample_log_prob=keys.sample_log_prob,
            reward=keys.reward,
            done=keys.done,
            terminated=keys.terminated,
            extra=self._extra_in_keys(),
        )

    @in_keys.setter
    def in_keys(self, keys: Sequence[NestedKey] | None) -> None:
        self._in_keys_set = None if keys is None else _keys(keys)

    @property
    def out_keys(self) -> list[str]:
        """The entries the loss returns: all of them, or those picked by select_out_keys."""
        if self._selected_out_keys is not None:
            return list(self._selected_out_keys)
        return self._all_out_keys()

    @out_keys.setter
    def out_keys(self, keys: Sequence[str] | None) -> None:
        # TorchRL's losses accept this assignment; it means select_out_keys (None: all)
        if keys is None:
            self.reset_out_keys()
        else:
            self.select_out_keys(*keys)

    @property
    def out_keys_source(self) -> list[str]:
        """Every entry the loss can return with its current options."""
        return self._all_out_keys()

    def select_out_keys(self, *keys: str) -> LossProtocol:
        """Return only ``keys`` from now on (in this order for keyword calls); returns self."""
        available = self._all_out_keys()
        unknown = [k for k in keys if k not in available]
        if unknown or not keys:
            raise ValueError(
                f"select_out_keys got {list(keys) or 'no keys'}; pick one or more "
                f"of this loss's out_keys {available}."
            )
        self._selected_out_keys = list(dict.fromkeys(keys))
        return self

    def reset_out_keys(self) -> LossProtocol:
        """Undo :meth:`select_out_keys`; returns self."""
        self._selected_out_keys = None
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``loss(tensordict)`` -> TensorDict; ``loss(**tensors)`` -> out_keys' values."""
        call = super().__call__  # type: ignore[misc]
        if args and is_tensor_collection(args[0]):
            return self._selected(call(*args, **kwargs))
        if args:
            raise TypeError(
                f"{type(self).__name__} expects a TensorDict, got "
                f"{type(args[0]).__name__}; or call it with keyword arguments "
                f"named after its in_keys (e.g. observation=..., next_reward=...)."
            )
        if not kwargs:
            raise TypeError(
                f"{type(self).__name__} needs a TensorDict or keyword arguments "
                f"for its in_keys {self.in_keys}."
            )
        data = keyword_tensordict(
            kwargs, self.in_keys, self._optional_keyword_keys(), separator=self.keyword_separator
        )
        out = self._selected(call(data))
        values = tuple(out.get(k) for k in self.out_keys)
        return values[0] if len(values) == 1 else values

    def _selected(self, out: TensorDictBase) -> TensorDictBase:
        if self._selected_out_keys is None:
            return out
        return out.select(*self._selected_out_keys)

    def reset_parameters_recursive(self) -> None:
        """Re-initialise the actor's and critic's parameters in place, as TorchRL does.

        Every layer with a ``reset_parameters`` method is reset once, also when actor and
        critic share it (a common trunk); the loss's own parameter views share the storage
        and follow.
        """
        seen: set[int] = set()
        with torch.no_grad():
            for name in ("actor_network", "critic_network"):
                network = getattr(self, name, None)
                if not isinstance(network, nn.Module):
                    continue
                for module in network.modules():
                    # the class must define it: tensordict wrappers forward unknown attributes
                    # to the module they wrap, which would reset that module twice
                    if callable(getattr(type(module), "reset_parameters", None)) and (
                        id(module) not in seen
                    ):
                        seen.add(id(module))
                        cast(Any, module).reset_parameters()
