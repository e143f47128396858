"""Checks of a PPO loss's constructor options, with messages that say how to fix them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from tensordict.utils import NestedKey
from torch import nn

from ppokit.objectives import functional as PF
from ppokit.objectives.composite import policy_keys
from ppokit.objectives.entropy import resolve_entropy_coeff

__all__ = [
    "check_clip_epsilon",
    "check_clip_value",
    "check_exclude_dims",
    "check_options",
    "check_unsupported",
    "default_device",
    "per_head_entropy_coeff",
    "resolve_alias",
]


def resolve_alias(name: str, value: Any, alias: str, alias_value: Any, default: Any) -> Any:
    """The value of an option that has two spellings (``entropy_coef`` / ``entropy_coeff``).

    Example:
        >>> resolve_alias("entropy_coef", None, "entropy_coeff", 0.1, 0.01)
        0.1
    """
    if (
        value is not None
        and alias_value is not None
        and (value is not alias_value if isinstance(value, nn.Module) else value != alias_value)
    ):
        raise TypeError(
            f"Got both {name}={_shown(value)} and {alias}={_shown(alias_value)}; they are two "
            "spellings of the same option, pass only one."
        )
    chosen = value if value is not None else alias_value
    return default if chosen is None else chosen


def resolve_coefficients(
    entropy: tuple[Any, Any], critic: tuple[Any, Any], actor: Any, critic_network: Any
) -> tuple[Any, dict[NestedKey, float] | None, Any]:
    """``(entropy_coef, per-head entropy mapping or None, critic_coef)`` from the two
    spellings of each (``(entropy_coef, entropy_coeff)``, ``(critic_coef, critic_coeff)``),
    with TorchRL's defaults: entropy 0.01; critic 1 when there is a critic, else 0.

    Example:
        >>> resolve_coefficients((None, 0.1), (None, None), None, None)
        (0.1, None, 0.0)
    """
    entropy_coef = resolve_alias("entropy_coef", entropy[0], "entropy_coeff", entropy[1], 0.01)
    per_head = per_head_entropy_coeff(entropy_coef, actor)
    if per_head is not None:
        entropy_coef = 0.0  # unused: the mapping weighs each head
    default = 1.0 if critic_network is not None else 0.0
    critic_coef = resolve_alias("critic_coef", critic[0], "critic_coeff", critic[1], default)
    return entropy_coef, per_head, critic_coef


def _shown(value: Any) -> str:
    return f"<{type(value).__name__}>" if isinstance(value, nn.Module) else repr(value)


def check_options(
    *,
    actor_network: Any,
    critic_network: Any,
    samples_mc_entropy: Any,
    entropy_coef: Any,
    critic_coef: Any,
    loss_critic_type: Any,
    reduction: Any,
) -> None:
    """Raise a clear error for the first option that is not what a PPO loss accepts.

    Example:
        >>> check_options(actor_network=None, critic_network=None, samples_mc_entropy=1,
        ...               entropy_coef=0.0, critic_coef=0.0, loss_critic_type="l2",
        ...               reduction="mean")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        TypeError: actor_network must be a probabilistic TensorDict module ...
    """
    if not isinstance(actor_network, nn.Module) or not hasattr(actor_network, "get_dist"):
        raise TypeError(
            "actor_network must be a probabilistic TensorDict module with get_dist() "
            "(ppokit.ProbabilisticActor, tensordict's ProbabilisticTensorDictSequential or a "
            f"TorchRL ProbabilisticActor); got {type(actor_network).__name__}."
        )
    if critic_network is not None and not isinstance(critic_network, nn.Module):
        raise TypeError(
            "critic_network must be a TensorDict module such as ppokit.ValueOperator; got "
            f"{type(critic_network).__name__}."
        )
    if critic_network is None and critic_coef not in (0, 0.0):
        raise TypeError(
            f"critic_network is missing but critic_coef={critic_coef!r} asks for a critic loss: "
            "pass a ValueOperator, or leave critic_coef unset (or 0) to train the actor alone "
            "(the advantage must then be in the data)."
        )
    if (
        isinstance(samples_mc_entropy, bool)
        or not isinstance(samples_mc_entropy, int)
        or (samples_mc_entropy < 1)
    ):
        raise ValueError(f"samples_mc_entropy must be an integer >= 1, got {samples_mc_entropy!r}.")
    for name, value in (("entropy_coef", entropy_coef), ("critic_coef", critic_coef)):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if loss_critic_type not in PF.LOSS_CRITIC_TYPES:
        raise ValueError(
            f"loss_critic_type must be one of {PF.LOSS_CRITIC_TYPES}, got {loss_critic_type!r}."
        )
    if reduction not in PF.REDUCTIONS:
        raise ValueError(f"reduction must be one of {PF.REDUCTIONS}, got {reduction!r}.")


def check_clip_epsilon(clip_epsilon: Any) -> tuple[float, float]:
    """The ratio clip range as ``(eps_low, eps_high)`` (equal for a single number).

    A number (or 0-d tensor) must lie in (0, 1); a pair ``(eps_low, eps_high)`` must have
    both in (0, 1) and ``eps_low <= eps_high`` (the asymmetric "clip-higher" range).

    Example:
        >>> check_clip_epsilon(torch.tensor(0.25)), check_clip_epsilon((0.2, 0.28))
        ((0.25, 0.25), (0.2, 0.28))
        >>> check_clip_epsilon((0.3, 0.2))
        Traceback (most recent call last):
        ...
        ValueError: clip_epsilon=(eps_low, eps_high) must have eps_low <= eps_high (the ratio is clipped to [1 - eps_low, 1 + eps_high]), got (0.3, 0.2); swap them.
    """  # noqa: E501
    if isinstance(clip_epsilon, (tuple, list)):
        if len(clip_epsilon) != 2:
            raise ValueError(
                f"clip_epsilon as a tuple must be (eps_low, eps_high), got {clip_epsilon!r}: "
                f"a pair of length 2, not {len(clip_epsilon)}."
            )
        low, high = (_check_eps(f"clip_epsilon[{i}]", v) for i, v in enumerate(clip_epsilon))
        if low > high:
            raise ValueError(
                "clip_epsilon=(eps_low, eps_high) must have eps_low <= eps_high (the ratio is "
                f"clipped to [1 - eps_low, 1 + eps_high]), got {tuple(clip_epsilon)!r}; swap "
                "them."
            )
        return low, high
    eps = _check_eps("clip_epsilon", clip_epsilon)
    return eps, eps


def _check_eps(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        why = ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # TorchRL's wording for each bound, after ppokit's
            why = (
                " (it must be non-negative)"
                if value < 0
                else " (it must be < 1)"
                if value >= 1
                else " (it must be > 0)"
                if value == 0
                else ""
            )
        raise ValueError(
            f"{name} must be a number in (0, 1), got {value!r}{why}; the ratio is "
            "clipped to [1 - eps, 1 + eps] (0.1 to 0.3 is usual)."
        )
    return float(value)


def check_clip_value(
    clip_value: Any, clip_epsilon: float | None, *, asymmetric: bool = False
) -> float | None:
    """The value-clipping threshold: None (off), or a float > 0 (``True``: ``clip_epsilon``).

    ``clip_epsilon`` is None for a loss without a ratio clip (PPOLoss), which then takes no
    bool, as TorchRL 0.14.1; ``True`` cannot be used with an asymmetric clip range.

    Example:
        >>> check_clip_value(True, 0.2), check_clip_value(False, 0.2), check_clip_value(0.5, None)
        (0.2, None, 0.5)
    """
    if clip_value is None:
        return None
    if isinstance(clip_value, bool) and clip_epsilon is None:
        fix = (
            "clip_value=True takes its threshold from clip_epsilon, which PPOLoss does "
            "not have: pass a float (e.g. clip_value=0.2) or use ClipPPOLoss."
            if clip_value
            else "Leave it unset (None) to train the critic unclipped."
        )
        raise ValueError(f"clip_value must be a float or a scalar tensor, got {clip_value}. " + fix)
    if clip_value is False:
        return None
    if clip_value is True:
        if asymmetric:
            raise ValueError(
                "clip_value=True cannot infer the value-clip threshold from an asymmetric "
                "clip_epsilon=(eps_low, eps_high); pass the threshold itself, e.g. "
                "clip_value=0.2."
            )
        return clip_epsilon
    if isinstance(clip_value, torch.Tensor) and clip_value.numel() == 1:
        clip_value = float(clip_value)
    if (
        not isinstance(clip_value, (int, float))
        or not clip_value > 0
        or not math.isfinite(clip_value)
    ):
        raise ValueError(
            f"clip_value must be True, False, None or a finite float > 0, got {clip_value!r}."
        )
    return float(clip_value)


def check_exclude_dims(dims: Any) -> tuple[int, ...]:
    """``normalize_advantage_exclude_dims`` as a tuple of ints.

    Example:
        >>> check_exclude_dims([-2])
        (-2,)
    """
    if isinstance(dims, int) and not isinstance(dims, bool):
        dims = (dims,)
    if not isinstance(dims, (tuple, list)) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in dims
    ):
        raise TypeError(
            f"normalize_advantage_exclude_dims must be a tuple of ints (dims of the advantage "
            f"kept apart when standardising, e.g. (-2,) for the agent dim), got {dims!r}."
        )
    return tuple(dims)


def check_unsupported(*, gamma: Any) -> None:
    """Refuse TorchRL's removed ``gamma`` loss keyword, rather than ignore it.

    Example:
        >>> check_unsupported(gamma=0.9)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        TypeError: gamma is not a loss option: ...
    """
    if gamma is not None:
        # TorchRL 0.14 refuses it too: the discount belongs to the value estimator
        raise TypeError(
            f"gamma is not a loss option: the discount belongs to the value estimator. Call "
            f"loss.make_value_estimator('gae', gamma={gamma!r}) instead."
        )


def per_head_entropy_coeff(coeff: Any, actor: Any) -> dict[NestedKey, float] | None:
    """A per-head ``entropy_coeff`` mapping (composite policy), checked now where the actor
    lists its heads; None for a scalar coefficient.

    Example:
        >>> per_head_entropy_coeff(0.01, None) is None
        True
    """
    if not isinstance(coeff, Mapping):
        return None
    heads = policy_keys(actor)
    if heads is not None and isinstance(heads[0], list):
        resolve_entropy_coeff(coeff, heads[0])  # unknown or missing heads raise here
    return dict(coeff)


def default_device(*networks: nn.Module | None) -> torch.device:
    """Where the loss's coefficients live: on the first parameter's device (TorchRL's rule).

    Example:
        >>> default_device(nn.Linear(2, 1))
        device(type='cpu')
    """
    for net in networks:
        if net is not None:
            for p in net.parameters():
                return p.device
    return torch.get_default_device()
