"""The value-estimator names and THE factory that turns a name into an estimator.

:func:`make_value_estimator` is the one place that resolves a ``value_type`` (a string or a
:class:`ValueEstimators` member: ppokit's estimator; TorchRL's ``ValueEstimators`` member:
TorchRL's estimator; an estimator class or an instance) and holds the default
hyperparameters. Loss modules call it; they do not keep their own table. The estimator
classes live in :mod:`ppokit.value.gae`, :mod:`ppokit.value.td` and :mod:`ppokit.value.vtrace`
and are re-exported here.
"""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Any

from tensordict.nn import TensorDictModuleBase
from torch import nn

from ppokit.value.base import ValueEstimatorBase
from ppokit.value.gae import GAE, MultiAgentGAE
from ppokit.value.td import TD0Estimate, TD1Estimate, TDLambdaEstimate
from ppokit.value.vtrace import VTrace

__all__ = [
    "DEFAULT_GAMMA",
    "DEFAULT_LMBDA",
    "GAE",
    "MultiAgentGAE",
    "TD0Estimate",
    "TD1Estimate",
    "TDLambdaEstimate",
    "VTrace",
    "ValueEstimatorBase",
    "ValueEstimators",
    "make_value_estimator",
]

# TorchRL's loss defaults (torchrl.objectives.utils' registry): written once, here.
DEFAULT_GAMMA = 0.99
DEFAULT_LMBDA = 0.95


class ValueEstimators(str, Enum):
    """Names of the value estimators, as accepted by :func:`make_value_estimator`.

    Member names are TorchRL's (``TD0``, ``TD1``, ``TDLambda``, ``GAE``, ``MAGAE``,
    ``VTrace``); strings match a value or, case-insensitively, a name.

    Example:
        >>> ValueEstimators("td_lambda") is ValueEstimators.TDLambda
        True
    """

    GAE = "gae"
    TDLambda = "td_lambda"
    TD0 = "td0"
    TD1 = "td1"
    MAGAE = "magae"
    VTrace = "vtrace"


_CLASSES: dict[ValueEstimators, type[ValueEstimatorBase]] = {
    ValueEstimators.GAE: GAE,
    ValueEstimators.TDLambda: TDLambdaEstimate,
    ValueEstimators.TD0: TD0Estimate,
    ValueEstimators.TD1: TD1Estimate,
    ValueEstimators.MAGAE: MultiAgentGAE,
    ValueEstimators.VTrace: VTrace,
}


def _accepted() -> str:
    values = [m.value for m in ValueEstimators]
    return (
        f"a name in {values} (or a member name such as 'TDLambda'), a ValueEstimators member "
        "(ppokit's or TorchRL's), an estimator class, or an estimator instance"
    )


# TorchRL's estimator class for each member name of TorchRL's enum (torchrl.objectives.value)
_TORCHRL_CLASSES = {
    "GAE": "GAE",
    "TDLambda": "TDLambdaEstimator",
    "TD0": "TD0Estimator",
    "TD1": "TD1Estimator",
    "MAGAE": "MultiAgentGAE",
    "VTrace": "VTrace",
}


def _is_torchrl_member(value_type: object) -> bool:
    enum_cls = type(value_type)
    return (
        isinstance(value_type, Enum)
        and enum_cls.__name__ == "ValueEstimators"
        and enum_cls.__module__.startswith("torchrl")
    )


def _torchrl_class(value_type: Enum) -> type[nn.Module] | None:
    """TorchRL's own estimator class for a member of TorchRL's ``ValueEstimators``.

    A TorchRL member names TorchRL's estimator (that is what TorchRL's losses build, and
    what its users check with ``isinstance``); TorchRL is importable, since the member came
    from it. ppokit's own estimators, equal in numbers, are chosen by a string or a member
    of ppokit's :class:`ValueEstimators`.
    """
    import importlib

    name = _TORCHRL_CLASSES.get(value_type.name)
    if name is None:
        return None
    cls: type[nn.Module] = getattr(importlib.import_module("torchrl.objectives.value"), name)
    return cls


def _member(value_type: object) -> ValueEstimators | None:
    """The member of ppokit's enum ``value_type`` names, or ``None``."""
    if isinstance(value_type, ValueEstimators):
        return value_type
    if isinstance(value_type, Enum):
        return None
    if isinstance(value_type, str):
        key = value_type.lower()
        for member in ValueEstimators:
            if key in (member.value, member.name.lower()):
                return member
    return None


def _keywords(cls: type[nn.Module]) -> set[str]:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):  # builtins / C extensions without a signature
        return set()
    return {name for name, p in params.items() if p.kind is not p.VAR_POSITIONAL}


def _defaults(cls: type[nn.Module]) -> dict[str, float]:
    """The default hyperparameters ``cls`` takes (by its constructor's keywords)."""
    accepted = _keywords(cls)
    defaults = {"gamma": DEFAULT_GAMMA, "lmbda": DEFAULT_LMBDA}
    if _takes_any_keyword(cls):  # e.g. TorchRL's MultiAgentGAE(**kwargs) -> its GAE
        return defaults
    return {name: value for name, value in defaults.items() if name in accepted}


def _takes_any_keyword(cls: type[nn.Module]) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD for p in params)


def make_value_estimator(
    value_type: str | Enum | type[nn.Module] | nn.Module,
    *,
    value_network: TensorDictModuleBase | None,
    actor_network: TensorDictModuleBase | None = None,
    **hyperparams: Any,
) -> nn.Module:
    """Build (or adopt) a value estimator, filling TorchRL's default gamma / lmbda.

    Args:
        value_type: ``"gae" | "td_lambda" | "td0" | "td1" | "magae" | "vtrace"`` (or a member
            name such as ``"TDLambda"``) or a :class:`ValueEstimators` member (ppokit's
            estimators), TorchRL's ``torchrl.objectives.ValueEstimators`` member (TorchRL's
            estimator of that name, as TorchRL's losses build), an estimator class (ppokit's or a
            compatible one such as TorchRL's, built with the defaults its constructor takes
            and ``hyperparams``), or an estimator instance (returned as it is; its
            ``value_network`` is set when it has none).
        value_network: the critic (or ``None`` to read values from the data).
        actor_network: the current policy; passed only to estimators whose constructor
            takes one (V-trace), which require it. Other estimators do not read it.
        **hyperparams: constructor options of the chosen class (gamma, lmbda, average_gae,
            ...). Defaults: gamma 0.99, and lmbda 0.95 for GAE / TD(lambda) / MAGAE.

    Returns:
        The estimator module.

    Raises:
        ValueError: unknown name, or hyperparameters given with an instance.
        TypeError: a value of another type, or V-trace without ``actor_network``.

    Example:
        >>> make_value_estimator("td0", value_network=None, gamma=0.9).gamma
        0.9
        >>> make_value_estimator(GAE, value_network=None).lmbda
        0.95
    """
    if isinstance(value_type, nn.Module):  # an instance: ppokit's or a compatible one
        if hyperparams:
            raise ValueError(
                f"An estimator instance was given together with hyperparameters "
                f"{sorted(hyperparams)}; set them on the instance (or pass its class instead)."
            )
        if getattr(value_type, "value_network", None) is None and value_network is not None:
            value_type.value_network = value_network
        return value_type
    torchrl_cls = (
        _torchrl_class(value_type)
        if isinstance(value_type, Enum) and _is_torchrl_member(value_type)
        else None
    )
    if isinstance(value_type, type) and issubclass(value_type, nn.Module):
        cls: type[nn.Module] = value_type
    elif torchrl_cls is not None:
        cls = torchrl_cls
    else:
        member = _member(value_type)
        if member is None:
            if isinstance(value_type, str | Enum):
                raise ValueError(f"Unknown value estimator {value_type!r}; expected {_accepted()}.")
            raise TypeError(
                f"Unsupported value estimator {value_type!r} ({type(value_type).__name__}); "
                f"expected {_accepted()}."
            )
        cls = _CLASSES[member]
    options: dict[str, Any] = {**_defaults(cls), **hyperparams}
    if "actor_network" in _keywords(cls):  # V-trace (ppokit's or TorchRL's) scores actions
        if actor_network is None:
            raise TypeError(
                f"{cls.__name__} scores the stored actions under the current policy: pass "
                "actor_network=<the actor> to make_value_estimator."
            )
        options["actor_network"] = actor_network
    return cls(value_network=value_network, **options)
