"""Value estimators that read and write TensorDict entries (TorchRL names and defaults).

Each estimator takes a rollout of batch size ``[*B, T]`` (time last unless ``time_dim`` says
otherwise), gets ``V(s_t)`` and ``V(s_{t+1})`` from its ``value_network`` (or from the data
when it has none), computes the target with :mod:`ppokit.value.functional` and writes
``"advantage"`` and ``"value_target"`` (``[*B, T, 1]``) into the tensordict in place.

Read keys: ``"state_value"`` (written), ``("next", "reward")``, ``("next", "done")``,
``("next", "terminated")`` (defaults to done when absent), and the value network's
in_keys at the root and under ``"next"``. All renamable with ``set_keys``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable
from contextlib import nullcontext
from enum import Enum
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.nn import skip_existing as _global_skip_existing
from torch import Tensor, nn

from ppokit.value.functional import (
    _check_discount,
    generalized_advantage_estimate,
    td0_return_estimate,
    td1_return_estimate,
    td_lambda_return_estimate,
)

__all__ = [
    "GAE",
    "TD0Estimate",
    "TD1Estimate",
    "TDLambdaEstimate",
    "ValueEstimators",
    "make_value_estimator",
]

NestedKey = str | tuple[str, ...]


class ValueEstimators(str, Enum):
    """Names of the value estimators, as accepted by ``make_value_estimator``.

    Example:
        >>> ValueEstimators("td_lambda") is ValueEstimators.TDLambda
        True
    """

    GAE = "gae"
    TDLambda = "td_lambda"
    TD0 = "td0"
    TD1 = "td1"


@dataclasses.dataclass
class _AcceptedKeys:
    """TensorDict keys an estimator reads and writes.

    ``reward``, ``done`` and ``terminated`` are read under ``"next"``; ``mask`` (``None`` =
    off) is read at the root, ``[*B, T]`` or ``[*B, T, 1]`` bool with ``True`` = valid step.
    """

    advantage: NestedKey = "advantage"
    value_target: NestedKey = "value_target"
    value: NestedKey = "state_value"
    reward: NestedKey = "reward"
    done: NestedKey = "done"
    terminated: NestedKey = "terminated"
    mask: NestedKey | None = None


def _next(key: NestedKey) -> tuple[str, ...]:
    return ("next", key) if isinstance(key, str) else ("next", *key)


def _present_keys(tensordict: TensorDictBase) -> list[Any]:
    return sorted(tensordict.keys(include_nested=True, leaves_only=True), key=str)


def _get(tensordict: TensorDictBase, key: NestedKey, what: str) -> Tensor:
    value = tensordict.get(key, None)
    if value is None:
        raise KeyError(
            f"{what}: key {key!r} is missing from the tensordict; present keys: "
            f"{_present_keys(tensordict)}. Add it or rename with set_keys(...)."
        )
    return value


class _ValueEstimatorBase(nn.Module, abc.ABC):
    """Shared machinery: keys, value-network calls, input checks."""

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
        self._tensor_keys = _AcceptedKeys()

    # -- configuration -------------------------------------------------------

    def _set_discount(self, name: str, value: float | Tensor) -> None:
        _check_discount(name, value, None)
        if isinstance(value, Tensor):
            self.register_buffer(name, value.detach().clone())
        else:
            setattr(self, name, float(value))

    @property
    def tensor_keys(self) -> _AcceptedKeys:
        """The keys in use (a copy; change them with :meth:`set_keys`)."""
        return dataclasses.replace(self._tensor_keys)

    def set_keys(self, **keys: NestedKey | None) -> _ValueEstimatorBase:
        """Rename the keys read and written; returns ``self``.

        Accepted names: advantage, value_target, value, reward, done, terminated, mask.
        """
        accepted = [f.name for f in dataclasses.fields(_AcceptedKeys)]
        unknown = sorted(set(keys) - set(accepted))
        if unknown:
            raise ValueError(f"Unknown key name(s) {unknown}; accepted names are {accepted}.")
        for name, key in keys.items():
            if key is None and name != "mask":
                raise ValueError(f"Key {name!r} cannot be None (only mask can be switched off).")
            setattr(self._tensor_keys, name, key)
        return self

    # -- helpers -------------------------------------------------------------

    def _resolve_time_dim(self, tensordict: TensorDictBase, time_dim: int | None) -> int:
        ndim = tensordict.batch_dims
        if ndim < 1:
            raise ValueError(
                "Expected a tensordict with batch dims [*B, T] (at least the time dim), got "
                f"batch_size={tuple(tensordict.batch_size)}. Unsqueeze a time dim first."
            )
        if time_dim is None:
            time_dim = self.time_dim
        if time_dim is None:
            try:
                names = list(tensordict.names)
            except (RuntimeError, ValueError):  # some lazy tensordicts have no names
                names = []
            time_dim = names.index("time") if "time" in names else ndim - 1
        if not -ndim <= time_dim < ndim:
            raise ValueError(
                f"time_dim={time_dim} is out of range for batch_size "
                f"{tuple(tensordict.batch_size)}."
            )
        return time_dim % ndim

    def _values(
        self,
        tensordict: TensorDictBase,
        params: TensorDictBase | None,
        target_params: TensorDictBase | None,
    ) -> tuple[Tensor, Tensor]:
        """``(V(s_t), V(s_{t+1}))``; both are written into ``tensordict``."""
        value_key = self._tensor_keys.value
        next_key = _next(value_key)
        net = self.value_network
        if net is None:
            return (
                _get(tensordict, value_key, "no value_network was given, so the value"),
                _get(tensordict, next_key, "no value_network was given, so the next value"),
            )
        skip = self.skip_existing if self.skip_existing is not None else _global_skip_existing()
        present = tensordict.keys(include_nested=True)
        if skip and value_key in present and next_key in present:
            return tensordict.get(value_key), tensordict.get(next_key)

        next_td = _get(tensordict, "next", "the next-step data")
        in_keys = list(net.in_keys)
        for key in in_keys:
            _get(tensordict, key, "value_network input")
            _get(tensordict, _next(key), "value_network input at the next step")
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
        next_value = next_value.detach()
        tensordict.set(value_key, value)
        tensordict.set(next_key, next_value)
        return value, next_value

    def _signals(
        self, tensordict: TensorDictBase, value: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        keys = self._tensor_keys
        reward = _get(tensordict, _next(keys.reward), "reward")
        done = _get(tensordict, _next(keys.done), "done")
        terminated = tensordict.get(_next(keys.terminated), None)
        if terminated is None:  # as TorchRL: no terminated entry means done is terminal
            terminated = done
        batch = tuple(tensordict.batch_size)
        if value.ndim != len(batch) + 1 or tuple(value.shape[: len(batch)]) != batch:
            raise ValueError(
                f"value {keys.value!r} has shape {tuple(value.shape)}; expected "
                f"{(*batch, 1)} ([*B, T, 1]). The value network must output a trailing dim of 1."
            )
        expected = tuple(value.shape)
        for name, key, tensor in (
            ("reward", keys.reward, reward),
            ("done", keys.done, done),
            ("terminated", keys.terminated, terminated),
        ):
            if tuple(tensor.shape) != expected:
                fix = f" Store it as {name}.unsqueeze(-1)." if tuple(tensor.shape) == batch else ""
                raise ValueError(
                    f"{name} {_next(key)!r} has shape {tuple(tensor.shape)}; expected "
                    f"{expected} ([*B, T, 1], like the value).{fix}"
                )
        mask = None
        if keys.mask is not None:
            mask = _get(tensordict, keys.mask, "mask")
            if tuple(mask.shape) == batch:
                mask = mask.unsqueeze(-1)
            if tuple(mask.shape) != expected:
                raise ValueError(
                    f"mask {keys.mask!r} has shape {tuple(mask.shape)}; expected {batch} or "
                    f"{expected}."
                )
            if mask.dtype != torch.bool:
                raise TypeError(f"mask {keys.mask!r} must be bool, got {mask.dtype}.")
            mask = mask.expand(expected)
        return reward, done, terminated, mask

    def _check_finite(
        self,
        reward: Tensor,
        value: Tensor,
        next_value: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
    ) -> None:
        keys = self._tensor_keys
        # V(s') at a terminal step is never used (often computed from a NaN reset obs).
        next_used = ~terminated.bool()
        for key, tensor, used in (
            (_next(keys.reward), reward, mask),
            (keys.value, value, mask),
            (_next(keys.value), next_value, next_used if mask is None else next_used & mask),
        ):
            bad = ~torch.isfinite(tensor)
            if used is not None:
                bad = bad & used
            if bool(bad.any()):
                raise ValueError(
                    f"{key!r} holds {int(bad.sum())} NaN/Inf entries; fix the data or the value "
                    "network before estimating advantages."
                )

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
        """
        with torch.set_grad_enabled(self.differentiable):
            dim = self._resolve_time_dim(tensordict, time_dim)
            value, next_value = self._values(tensordict, params, target_params)
            reward, done, terminated, mask = self._signals(tensordict, value)
            self._check_finite(reward, value, next_value, terminated, mask)
            advantage, value_target = self._estimate(
                tensordict, value, next_value, reward, done, terminated, mask, dim
            )
            keys = self._tensor_keys
            tensordict.set(keys.advantage, advantage)
            tensordict.set(keys.value_target, value_target)
        return tensordict

    @abc.abstractmethod
    def _estimate(
        self,
        tensordict: TensorDictBase,
        value: Tensor,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> tuple[Tensor, Tensor]:
        """Return ``(advantage, value_target)``; each estimator defines its target."""

    def _maybe_average_rewards(
        self, tensordict: TensorDictBase, reward: Tensor, mask: Tensor | None
    ) -> Tensor:
        """Standardise rewards (TorchRL's ``average_rewards``) and write them back."""
        if not self.average_rewards:
            return reward
        reward = _standardize(reward, mask, eps=1e-5)
        tensordict.set(_next(self._tensor_keys.reward), reward)
        return reward

    def _advantage_from_target(
        self, value_target: Tensor, value: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if mask is None:
            return value_target - value, value_target
        # padded steps: advantage 0, target = value (as for GAE: target = advantage + value)
        advantage = torch.where(mask, value_target - value, 0.0)
        return advantage, torch.where(mask, value_target, value)


def _standardize(x: Tensor, mask: Tensor | None, *, eps: float) -> Tensor:
    """``(x - mean) / max(std, eps)`` over all (valid) entries; unbiased std."""
    if mask is None:
        if x.numel() < 2:
            return x - x.mean()
        return (x - x.mean()) / x.std().clamp_min(eps)
    valid = x[mask]
    if valid.numel() < 2:
        return torch.where(mask, x - valid.mean() if valid.numel() else x, 0.0)
    out = (x - valid.mean()) / valid.std().clamp_min(eps)
    return torch.where(mask, out, 0.0)


class GAE(_ValueEstimatorBase):
    """Generalized advantage estimation (Schulman et al. 2016) on a TensorDict rollout.

    Writes ``advantage`` and ``value_target = advantage + V(s_t)``, both ``[*B, T, 1]``.

    Args:
        gamma: discount in [0, 1] (float or tensor).
        lmbda: GAE lambda in [0, 1] (float or tensor).
        value_network: module reading its in_keys and writing the value key
            (``"state_value"``); ``None`` to read ``"state_value"`` and
            ``("next", "state_value")`` from the data.
        average_gae: standardise the advantage (mean 0, unbiased std 1 over all valid
            entries; std clamped at 1e-4), as TorchRL's ``average_gae``.
        differentiable: keep the autograd graph of ``V(s_t)``; ``V(s_{t+1})`` is always
            detached. Default: computed under ``torch.no_grad()``.
        skip_existing: ``True`` reuses values already in the data; ``False`` always reruns
            the network; ``None`` follows ``tensordict.nn.skip_existing()``.
        time_dim: the tensordict's time dim (default: a dim named ``"time"``, else the last).

    Example:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> critic = TensorDictModule(nn.Linear(3, 1), ["observation"], ["state_value"])
        >>> rollout = TensorDict({
        ...     "observation": torch.randn(4, 10, 3),
        ...     "next": {"observation": torch.randn(4, 10, 3), "reward": torch.ones(4, 10, 1),
        ...              "done": torch.zeros(4, 10, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(4, 10, 1, dtype=torch.bool)},
        ... }, batch_size=[4, 10])
        >>> GAE(gamma=0.99, lmbda=0.95, value_network=critic)(rollout)["advantage"].shape
        torch.Size([4, 10, 1])
    """

    def __init__(
        self,
        *,
        gamma: float | Tensor,
        lmbda: float | Tensor,
        value_network: TensorDictModuleBase | None,
        average_gae: bool = False,
        differentiable: bool = False,
        skip_existing: bool | None = None,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(
            value_network=value_network,
            differentiable=differentiable,
            skip_existing=skip_existing,
            time_dim=time_dim,
        )
        self._set_discount("gamma", gamma)
        self._set_discount("lmbda", lmbda)
        self.average_gae = average_gae

    def _estimate(
        self,
        tensordict: TensorDictBase,
        value: Tensor,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> tuple[Tensor, Tensor]:
        advantage, value_target = generalized_advantage_estimate(
            self.gamma,
            self.lmbda,
            value,
            next_value,
            reward,
            done,
            terminated,
            time_dim=time_dim,
            mask=mask,
        )
        if self.average_gae:
            # the target is computed from the raw advantage (as TorchRL), only A is rescaled
            advantage = _standardize(advantage, mask, eps=1e-4)
        return advantage, value_target


class _TDTargetEstimate(_ValueEstimatorBase):
    """Shared body of the TD estimators: a value target, and advantage = target - V(s_t)."""

    def __init__(
        self,
        *,
        gamma: float | Tensor,
        value_network: TensorDictModuleBase | None,
        average_rewards: bool = False,
        differentiable: bool = False,
        skip_existing: bool | None = None,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(
            value_network=value_network,
            differentiable=differentiable,
            skip_existing=skip_existing,
            time_dim=time_dim,
        )
        self._set_discount("gamma", gamma)
        self.average_rewards = average_rewards

    @abc.abstractmethod
    def _target(
        self,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> Tensor:
        """The value target ``[*B, T, F]``."""

    def _estimate(
        self,
        tensordict: TensorDictBase,
        value: Tensor,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> tuple[Tensor, Tensor]:
        reward = self._maybe_average_rewards(tensordict, reward, mask)
        target = self._target(next_value, reward, done, terminated, mask, time_dim)
        return self._advantage_from_target(target, value, mask)


class TDLambdaEstimate(_TDTargetEstimate):
    """TD(lambda) value target; advantage = target - V(s_t).

    Args:
        gamma: discount in [0, 1] (float or tensor).
        lmbda: lambda in [0, 1] (float or tensor).
        value_network: as in :class:`GAE`.
        average_rewards: standardise ``("next", "reward")`` first (written back), as TorchRL.
        differentiable: as in :class:`GAE`.
        skip_existing: as in :class:`GAE`.
        time_dim: as in :class:`GAE`.

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"state_value": torch.zeros(1, 2, 1), "next": {
        ...     "state_value": torch.tensor([[[2.0], [4.0]]]), "reward": torch.ones(1, 2, 1),
        ...     "done": torch.zeros(1, 2, 1, dtype=torch.bool)}}, batch_size=[1, 2])
        >>> TDLambdaEstimate(gamma=0.5, lmbda=0.5, value_network=None)(td)["value_target"]
        tensor([[[2.2500],
                 [3.0000]]])
    """

    def __init__(
        self,
        *,
        gamma: float | Tensor,
        lmbda: float | Tensor,
        value_network: TensorDictModuleBase | None,
        average_rewards: bool = False,
        differentiable: bool = False,
        skip_existing: bool | None = None,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(
            gamma=gamma,
            value_network=value_network,
            average_rewards=average_rewards,
            differentiable=differentiable,
            skip_existing=skip_existing,
            time_dim=time_dim,
        )
        self._set_discount("lmbda", lmbda)

    def _target(
        self,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> Tensor:
        return td_lambda_return_estimate(
            self.gamma,
            self.lmbda,
            next_value,
            reward,
            done,
            terminated,
            time_dim=time_dim,
            mask=mask,
        )


class TD1Estimate(_TDTargetEstimate):
    """TD(1) (discounted Monte-Carlo, bootstrapped at truncation) target.

    Args:
        gamma: discount in [0, 1] (float or tensor).
        value_network: as in :class:`GAE`.
        average_rewards: standardise ``("next", "reward")`` first (written back).
        differentiable: as in :class:`GAE`.
        skip_existing: as in :class:`GAE`.
        time_dim: as in :class:`GAE`.

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"state_value": torch.zeros(1, 2, 1), "next": {
        ...     "state_value": torch.full((1, 2, 1), 4.0), "reward": torch.ones(1, 2, 1),
        ...     "done": torch.zeros(1, 2, 1, dtype=torch.bool)}}, batch_size=[1, 2])
        >>> TD1Estimate(gamma=0.5, value_network=None)(td)["value_target"].flatten()
        tensor([2.5000, 3.0000])
    """

    def _target(
        self,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> Tensor:
        return td1_return_estimate(
            self.gamma, next_value, reward, done, terminated, time_dim=time_dim, mask=mask
        )


class TD0Estimate(_TDTargetEstimate):
    """One-step TD target ``r + gamma * (1 - terminated) * V(s')``.

    Args:
        gamma: discount in [0, 1] (float or tensor).
        value_network: as in :class:`GAE`.
        average_rewards: standardise ``("next", "reward")`` first (written back).
        differentiable: as in :class:`GAE`.
        skip_existing: as in :class:`GAE`.
        time_dim: as in :class:`GAE` (only used for the batch-dim check).

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"state_value": torch.zeros(2, 1), "next": {
        ...     "state_value": torch.full((2, 1), 4.0), "reward": torch.ones(2, 1),
        ...     "done": torch.tensor([[False], [True]])}}, batch_size=[2])
        >>> TD0Estimate(gamma=0.5, value_network=None)(td)["advantage"].flatten()
        tensor([3., 1.])
    """

    def _target(
        self,
        next_value: Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        mask: Tensor | None,
        time_dim: int,
    ) -> Tensor:
        return td0_return_estimate(self.gamma, next_value, reward, terminated, mask=mask)


_CLASSES: dict[ValueEstimators, type[_ValueEstimatorBase]] = {
    ValueEstimators.GAE: GAE,
    ValueEstimators.TDLambda: TDLambdaEstimate,
    ValueEstimators.TD0: TD0Estimate,
    ValueEstimators.TD1: TD1Estimate,
}
# TorchRL's loss defaults (torchrl.objectives.utils.default_value_kwargs).
_DEFAULTS: dict[ValueEstimators, dict[str, float]] = {
    ValueEstimators.GAE: {"gamma": 0.99, "lmbda": 0.95},
    ValueEstimators.TDLambda: {"gamma": 0.99, "lmbda": 0.95},
    ValueEstimators.TD0: {"gamma": 0.99},
    ValueEstimators.TD1: {"gamma": 0.99},
}


def _valid_kinds() -> Iterable[str]:
    return [member.value for member in ValueEstimators]


def make_value_estimator(
    kind: str | Enum,
    *,
    value_network: TensorDictModuleBase | None,
    **hyperparams: Any,
) -> _ValueEstimatorBase:
    """Build an estimator from its name, filling TorchRL's default gamma/lmbda.

    Args:
        kind: ``"gae" | "td_lambda" | "td0" | "td1"``, a :class:`ValueEstimators` member, or
            an enum member with a matching name (e.g. TorchRL's ``ValueEstimators.TDLambda``).
        value_network: the critic (or ``None``).
        **hyperparams: constructor options of the chosen class (gamma, lmbda, ...).

    Returns:
        The estimator module.

    Example:
        >>> make_value_estimator("td0", value_network=None, gamma=0.9).gamma
        0.9
    """
    member: ValueEstimators | None = None
    if isinstance(kind, ValueEstimators):
        member = kind
    elif isinstance(kind, Enum):
        member = ValueEstimators.__members__.get(kind.name)
    elif isinstance(kind, str):
        try:
            member = ValueEstimators(kind.lower())
        except ValueError:
            member = None
    if member is None:
        raise ValueError(
            f"Unknown value estimator {kind!r}; valid kinds are {_valid_kinds()} "
            "(or a ValueEstimators member)."
        )
    options = {**_DEFAULTS[member], **hyperparams}
    return _CLASSES[member](value_network=value_network, **options)
