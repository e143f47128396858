"""Parameter checks shared by ppokit's distributions, and the switch that defers them.

Parameters are checked on construction (shapes and dtypes always, values unless deferred) so a
bad value raises ``ValueError`` naming the parameter instead of producing NaNs downstream. The
value checks are skipped under ``torch.compile`` and inside :func:`deferred_param_checks`
(whose caller checks the results instead).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch

__all__ = [
    "ScaleLike",
    "as_loc",
    "as_scale",
    "check_event_dims",
    "check_normal_params",
    "check_value_shape",
    "compiling",
    "deferred_param_checks",
    "skip_value_checks",
]

ScaleLike = torch.Tensor | float | Callable[[torch.Tensor], torch.Tensor]
NO_SAMPLE = torch.Size()

_DEFERRED = contextvars.ContextVar("ppokit_deferred_param_checks", default=False)


def compiling() -> bool:
    """True while ``torch.compile`` traces (data-dependent checks cannot run there)."""
    return torch.compiler.is_compiling()


@contextlib.contextmanager
def deferred_param_checks() -> Iterator[None]:
    """Build ppokit distributions without their per-call parameter-value checks.

    Each check (NaN/Inf ``loc`` or ``logits``, ``scale <= 0``) costs a host sync and several
    small ops. A caller that detects non-finite results itself, and rebuilds the distribution
    outside this context to name the culprit, may skip them: ``ClipPPOLoss`` does (its one
    finiteness probe on the outputs covers every parameter). Shape and type checks still run.

    Example:
        >>> from ppokit.modules.distributions import IndependentNormal
        >>> with deferred_param_checks():
        ...     d = IndependentNormal(torch.zeros(2), torch.tensor([1.0, -1.0]))  # no error
        >>> IndependentNormal(torch.zeros(2), torch.tensor([1.0, -1.0]))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: IndependentNormal: scale must be finite and > 0, got 1 bad entries, ...
    """
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def skip_value_checks() -> bool:
    """True under ``torch.compile`` or inside :func:`deferred_param_checks`."""
    # compiling() first: dynamo cannot trace a ContextVar read
    return compiling() or _DEFERRED.get()


def as_loc(cls: str, loc: object) -> torch.Tensor:
    """``loc`` as a floating-point tensor (numbers get the default dtype)."""
    if not isinstance(loc, torch.Tensor):
        loc = torch.as_tensor(loc, dtype=torch.get_default_dtype())
    if not loc.is_floating_point():
        raise ValueError(f"{cls}: loc must be a floating-point tensor, got dtype {loc.dtype}.")
    return loc


def as_scale(cls: str, scale: ScaleLike, loc: torch.Tensor) -> torch.Tensor:
    """``scale`` as a floating-point tensor of ``loc``'s shape (a callable is applied to loc)."""
    # A callable scale (e.g. torch.ones_like) is accepted as in TorchRL.
    if callable(scale) and not isinstance(scale, torch.Tensor):
        scale = scale(loc)
    if not isinstance(scale, torch.Tensor):
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
    elif scale.device != loc.device:
        scale = scale.to(loc.device)
    if not scale.is_floating_point():
        raise ValueError(f"{cls}: scale must be a floating-point tensor, got dtype {scale.dtype}.")
    if scale.shape == loc.shape:  # the usual case; broadcast_shapes costs ~10 us per call
        return scale
    try:
        broadcast = torch.broadcast_shapes(loc.shape, scale.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != loc.shape:
        raise ValueError(
            f"{cls}: scale of shape {list(scale.shape)} does not broadcast to loc's shape "
            f"{list(loc.shape)}. Give scale the shape of loc (or a shape that broadcasts to it)."
        )
    return scale.expand_as(loc)


def check_normal_params(cls: str, loc: torch.Tensor, scale: torch.Tensor) -> None:
    """Raise ``ValueError`` for a NaN/Inf ``loc`` or a ``scale`` that is not finite and > 0."""
    if skip_value_checks():
        return
    # One host sync on the happy path (this runs at every acting step); the detailed
    # search below only runs when something is wrong.
    if bool(torch.isfinite(loc).all() & (scale > 0).all() & torch.isfinite(scale).all()):
        return
    if not torch.isfinite(loc).all():
        bad = int((~torch.isfinite(loc)).sum())
        raise ValueError(
            f"{cls}: loc has {bad} NaN/Inf entries (of {loc.numel()}). The network producing it "
            "diverged or read a NaN observation; check the inputs and lower the learning rate."
        )
    if not (torch.isfinite(scale) & (scale > 0)).all():
        bad_vals = scale[~(torch.isfinite(scale) & (scale > 0))]
        raise ValueError(
            f"{cls}: scale must be finite and > 0, got {bad_vals.numel()} bad entries, e.g. "
            f"{bad_vals.flatten()[:3].tolist()}. Map the raw network output through a positive "
            "function (NormalParamExtractor does this) or clamp it from below."
        )


def check_event_dims(cls: str, event_dims: int, loc: torch.Tensor) -> int:
    """``event_dims`` if it is an int in ``[0, loc.ndim]``; else a clear error."""
    if isinstance(event_dims, bool) or not isinstance(event_dims, int):
        raise TypeError(f"{cls}: event_dims must be an int, got {event_dims!r}.")
    if not 0 <= event_dims <= loc.ndim:
        raise ValueError(
            f"{cls}: event_dims must be in [0, loc.ndim={loc.ndim}], got {event_dims}. "
            f"loc has shape {list(loc.shape)}; event_dims=1 sums the log-prob over the last dim."
        )
    return event_dims


def check_value_shape(cls: str, value: torch.Tensor, expected: torch.Size, what: str) -> None:
    """Raise unless ``value`` is ``[*sample, *expected]``."""
    # Leading sample dims are allowed; the trailing dims must match exactly. torch would
    # otherwise broadcast, e.g. an action [B, 1] against a batch [B] into a [B, B] log-prob.
    n = len(expected)
    if value.ndim < n or value.shape[value.ndim - n :] != expected:
        raise ValueError(
            f"{cls}.log_prob: expected {what} of shape [*sample, {', '.join(map(str, expected))}]"
            f" (batch {list(expected)}), got {list(value.shape)}. "
            "Reshape the stored action to match the distribution's parameters."
        )
