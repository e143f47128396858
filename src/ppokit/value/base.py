"""What every TensorDict value estimator shares: keys, input checks, value-network calls.

An estimator takes a rollout of batch size ``[*B, T]`` (time last unless ``time_dim`` says
otherwise), gets ``V(s_t)`` and ``V(s_{t+1})`` from its ``value_network`` (or from the data
when it has none), computes the target with the pure functions of
:mod:`ppokit.value.functional` and writes ``"advantage"`` and ``"value_target"`` into the
tensordict in place.

Order of work (so that a rejected call leaves the caller's data untouched): read and check
the reward / done / terminated / mask entries, then run the value network, then check its
output, and only then write ``state_value``, ``("next", "state_value")``, the advantage and
the target.
"""

from __future__ import annotations

import abc
import dataclasses
from contextlib import nullcontext

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.nn import skip_existing as _global_skip_existing
from torch import Tensor, nn

from ppokit.value.checks import as_flag, check_discount
from ppokit.value.inputs import (
    AcceptedKeys,
    NestedKey,
    Signals,
    check_finite,
    get_entry,
    next_key,
    resolve_time_dim,
)

__all__ = [
    "AcceptedKeys",
    "NestedKey",
    "Signals",
    "ValueEstimatorBase",
    "get_entry",
    "next_key",
]


class ValueEstimatorBase(nn.Module, abc.ABC):
    """Shared machinery: keys, input checks, value-network calls, output writing.

    Subclasses implement :meth:`_estimate`; :meth:`_match_value` (how the signals line up
    with the value) and :meth:`_precheck` (extra reads before the network) are hooks.
    """

    gamma: float | Tensor  # set by every subclass (a float, or a buffer when a tensor)

    def __init__(
        self,
        *,
        value_network: TensorDictModuleBase | None,
        differentiable: bool,
        skip_existing: bool | None,
        time_dim: int | None,
    ) -> None:
        super().__init__()
        self.value_network = value_network
        self.differentiable = differentiable
        self.skip_existing = skip_existing
        self.time_dim = time_dim
        self._tensor_keys = AcceptedKeys()

    def _set_discount(self, name: str, value: float | Tensor) -> None:
        check_discount(name, value, None)
        if isinstance(value, Tensor):
            self.register_buffer(name, value.detach().clone())
        else:
            setattr(self, name, float(value))

    @property
    def tensor_keys(self) -> AcceptedKeys:
        """The keys in use (a copy; change them with :meth:`set_keys`)."""
        return dataclasses.replace(self._tensor_keys)

    @property
    def in_keys(self) -> list[NestedKey]:
        """Entries read, in TorchRL's order.

        The value network's inputs (or the stored value when there is none), the signals
        under ``"next"``, the same inputs under ``"next"``, then the mask if set.
        """
        keys = self._tensor_keys
        net = self.value_network
        inputs = list(net.in_keys) if net is not None else [keys.value]
        out: list[NestedKey] = [
            *inputs,
            next_key(keys.reward),
            next_key(keys.done),
            next_key(keys.terminated),
            *(next_key(key) for key in inputs),
        ]
        if keys.mask is not None:
            out.append(keys.mask)
        return out

    @property
    def out_keys(self) -> list[NestedKey]:
        """Entries written for the caller: advantage and value target (the values too)."""
        return [self._tensor_keys.advantage, self._tensor_keys.value_target]

    def set_keys(self, **keys: NestedKey | None) -> ValueEstimatorBase:
        """Rename the keys read and written; returns ``self``.

        Accepted names: the fields of :class:`AcceptedKeys` (advantage, value_target, value,
        reward, done, terminated, mask, sample_log_prob, action).
        """
        accepted = [f.name for f in dataclasses.fields(AcceptedKeys)]
        unknown = sorted(set(keys) - set(accepted))
        if unknown:
            raise ValueError(f"Unknown key name(s) {unknown}; accepted names are {accepted}.")
        for name, key in keys.items():
            if key is None and name != "mask":
                raise ValueError(f"Key {name!r} cannot be None (only mask can be switched off).")
            setattr(self._tensor_keys, name, key)
        return self

    # -- reading and checking ---------------------------------------------------

    def _read_signals(self, tensordict: TensorDictBase) -> Signals:
        """Reward, done, terminated and mask, checked against the batch size only."""
        keys = self._tensor_keys
        batch = tuple(tensordict.batch_size)
        reward = get_entry(tensordict, next_key(keys.reward), "reward")
        done = get_entry(tensordict, next_key(keys.done), "done")
        terminated = tensordict.get(next_key(keys.terminated), None)
        if terminated is None:  # as TorchRL: no terminated entry means done is terminal
            terminated = done
        if reward.ndim <= len(batch) or tuple(reward.shape[: len(batch)]) != batch:
            fix = " Store it as reward.unsqueeze(-1)." if tuple(reward.shape) == batch else ""
            raise ValueError(
                f"reward {next_key(keys.reward)!r} has shape {tuple(reward.shape)}; expected "
                f"[*B, T, F] with [*B, T] = {batch} (usually F = 1).{fix}"
            )
        if not reward.is_floating_point():
            raise TypeError(f"reward must be a floating-point tensor, got dtype {reward.dtype}.")
        expected = tuple(reward.shape)
        for name, key, tensor in (
            ("done", keys.done, done),
            ("terminated", keys.terminated, terminated),
        ):
            if tuple(tensor.shape) != expected:
                fix = f" Store it as {name}.unsqueeze(-1)." if tuple(tensor.shape) == batch else ""
                raise ValueError(
                    f"{name} {next_key(key)!r} has shape {tuple(tensor.shape)}; expected "
                    f"{expected} (like the reward).{fix}"
                )
            as_flag(name, tensor)  # raises for flags other than bool / 0-1
        mask = self._read_mask(tensordict, batch, expected)
        check_finite(next_key(keys.reward), reward, mask)
        return Signals(reward, done, terminated, mask)

    def _read_mask(
        self, tensordict: TensorDictBase, batch: tuple[int, ...], expected: tuple[int, ...]
    ) -> Tensor | None:
        key = self._tensor_keys.mask
        if key is None:
            return None
        mask = get_entry(tensordict, key, "mask")
        if mask.dtype != torch.bool:
            raise TypeError(
                f"mask {key!r} must be bool (True = valid step), got {mask.dtype}; pass "
                "mask.bool() of the intended flags."
            )
        if tuple(mask.shape) == batch:
            mask = mask.reshape(*batch, *([1] * (len(expected) - len(batch))))
        elif tuple(mask.shape) != expected:
            raise ValueError(
                f"mask {key!r} has shape {tuple(mask.shape)}; expected {batch} or {expected}."
            )
        return mask.expand(expected)

    def _precheck(self, tensordict: TensorDictBase, signals: Signals) -> None:
        """Hook: more reads and checks that must pass before the value network runs."""

    def _match_value(self, value: Tensor, signals: Signals) -> Signals:
        """Check the value against the signals; return the signals shaped like the value."""
        keys = self._tensor_keys
        if value.shape != signals.reward.shape:
            raise ValueError(
                f"value {keys.value!r} has shape {tuple(value.shape)}; expected "
                f"{tuple(signals.reward.shape)} (the reward's shape [*B, T, F]). The value "
                "network must output a trailing dim of 1."
            )
        return signals

    # -- the value network -----------------------------------------------------

    def _values(
        self,
        tensordict: TensorDictBase,
        params: TensorDictBase | None,
        target_params: TensorDictBase | None,
    ) -> tuple[Tensor, Tensor]:
        """``(V(s_t), V(s_{t+1}))``, read or computed; nothing is written here."""
        value_key = self._tensor_keys.value
        next_value_key = next_key(value_key)
        net = self.value_network
        if net is None:
            return (
                get_entry(tensordict, value_key, "no value_network was given, so the value"),
                get_entry(
                    tensordict, next_value_key, "no value_network was given, so the next value"
                ),
            )
        skip = self.skip_existing if self.skip_existing is not None else _global_skip_existing()
        present = tensordict.keys(include_nested=True)
        if skip and value_key in present and next_value_key in present:
            return tensordict.get(value_key), tensordict.get(next_value_key)

        next_td = get_entry(tensordict, "next", "the next-step data")
        in_keys = list(net.in_keys)
        for key in in_keys:
            get_entry(tensordict, key, "value_network input")
            get_entry(tensordict, next_key(key), "value_network input at the next step")
        root, nxt = tensordict.select(*in_keys), next_td.select(*in_keys)
        if target_params is None:
            # One call on [root; next] stacked along a new leading dim: half the module-call
            # overhead of two calls, same numbers for feed-forward critics.
            with params.to_module(net) if params is not None else nullcontext():
                both = net(torch.stack([root, nxt], 0)).get(value_key)
            value, next_value = both[0], both[1]
        else:
            with params.to_module(net) if params is not None else nullcontext():
                value = net(root).get(value_key)
            with target_params.to_module(net):
                next_value = net(nxt).get(value_key)
        # Semi-gradient target (as in TD learning and TorchRL): never backprop through V(s').
        return value, next_value.detach()

    # -- the call ---------------------------------------------------------------

    def forward(
        self,
        tensordict: TensorDictBase,
        *,
        params: TensorDictBase | None = None,
        target_params: TensorDictBase | None = None,
        time_dim: int | None = None,
    ) -> TensorDictBase:
        """Write advantage and value target into ``tensordict`` (in place) and return it.

        Args:
            tensordict: rollout with batch size ``[*B, T]``.
            params: critic parameters to run ``value_network`` with (through
                ``params.to_module``), e.g. detached ones from a loss. Used as given.
            target_params: if given, ``V(s_{t+1})`` is computed with these parameters
                (a target critic); by default the same parameters as ``V(s_t)``.
            time_dim: the tensordict's time dim; default ``self.time_dim``, else a dim named
                ``"time"``, else the last batch dim.

        Returns:
            ``tensordict`` with advantage, value_target, value and ``("next", value)`` set.
            If any check fails, nothing has been written.
        """
        with torch.set_grad_enabled(self.differentiable):
            dim = resolve_time_dim(tensordict, time_dim, self.time_dim)
            signals = self._read_signals(tensordict)
            self._precheck(tensordict, signals)
            value, next_value = self._values(tensordict, params, target_params)
            signals = self._match_value(value, signals)
            keys = self._tensor_keys
            check_finite(keys.value, value, signals.mask)
            # V(s') at a terminal step is never used (often computed from a NaN reset obs).
            used = ~signals.terminated.bool()
            check_finite(
                next_key(keys.value),
                next_value,
                used if signals.mask is None else used & signals.mask,
            )
            advantage, value_target = self._estimate(tensordict, value, next_value, signals, dim)
            tensordict.set(keys.value, value)
            tensordict.set(next_key(keys.value), next_value)
            tensordict.set(keys.advantage, advantage)
            tensordict.set(keys.value_target, value_target)
        return tensordict

    @abc.abstractmethod
    def _estimate(
        self,
        tensordict: TensorDictBase,
        value: Tensor,
        next_value: Tensor,
        signals: Signals,
        time_dim: int,
    ) -> tuple[Tensor, Tensor]:
        """Return ``(advantage, value_target)``; each estimator defines its target."""
