"""Input checks shared by the value estimators' pure functions.

Every check raises with what was expected, what arrived and how to fix it; nothing is
broadcast silently.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "Scalar",
    "as_flag",
    "check_discount",
    "check_floating",
    "check_same_shapes",
    "check_threshold",
    "check_time_dim",
    "prepare_flags",
]

Scalar = float | Tensor


def check_same_shapes(**tensors: Tensor | None) -> torch.Size:
    """All given tensors must have one shape; ``None`` entries are skipped."""
    present = {k: v for k, v in tensors.items() if v is not None}
    for name, value in present.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
    shapes = {name: tuple(value.shape) for name, value in present.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{k}={v}" for k, v in shapes.items())
        raise ValueError(
            f"All inputs must have the same shape [*B, T, F]; got {listing}. Nothing is "
            "broadcast: reshape them to one shape (e.g. reward.unsqueeze(-1) for a [*B, T] "
            "reward)."
        )
    return next(iter(present.values())).shape


def check_floating(**tensors: Tensor) -> None:
    for name, value in tensors.items():
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}.")


def check_time_dim(shape: torch.Size, time_dim: int) -> int:
    """Return ``time_dim`` as a non-negative index, or raise with the fix."""
    ndim = len(shape)
    if not -ndim <= time_dim < ndim:
        raise ValueError(
            f"time_dim={time_dim} is out of range for inputs of shape {tuple(shape)}. Inputs are "
            "[*B, T, F] with time at time_dim (default -2); add a trailing feature dim "
            "(x.unsqueeze(-1)) or pass the right time_dim."
        )
    return time_dim % ndim


def as_flag(name: str, flag: Tensor) -> Tensor:
    """Return ``flag`` as a bool tensor; numeric flags must hold only 0 and 1."""
    if flag.dtype == torch.bool:
        return flag
    if flag.is_complex() or not ((flag == 0) | (flag == 1)).all():
        raise ValueError(
            f"{name} must be a bool tensor or hold only 0 and 1; got dtype {flag.dtype} with "
            f"other values. Pass {name}.bool() of the intended flags."
        )
    return flag.bool()


def check_discount(name: str, value: Scalar, shape: torch.Size | None) -> None:
    """``gamma`` / ``lmbda`` must lie in [0, 1] and broadcast to ``shape`` (if given)."""
    if isinstance(value, Tensor):
        if shape is not None:
            try:
                out: torch.Size | None = torch.broadcast_shapes(value.shape, shape)
            except RuntimeError:
                out = None
            if out != shape:
                raise ValueError(
                    f"{name} of shape {tuple(value.shape)} does not broadcast to the input "
                    f"shape {tuple(shape)}; pass a float or a tensor broadcastable to [*B, T, F]."
                )
        bad = value.numel() > 0 and not bool(((value >= 0) & (value <= 1)).all())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        bad = not 0.0 <= value <= 1.0
    else:
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}.")
    if bad:
        raise ValueError(f"{name} must lie in [0, 1], got {value}.")


def prepare_flags(
    done: Tensor,
    terminated: Tensor | None,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    done = as_flag("done", done)
    terminated = done if terminated is None else as_flag("terminated", terminated)
    if terminated is not done and bool((terminated & ~done).any()):
        raise ValueError(
            "terminated must imply done: found terminated=True where done=False. Set "
            "done = terminated | truncated."
        )
    if mask is not None:
        mask = as_flag("mask", mask)
    return done, terminated, mask


def check_threshold(name: str, value: Scalar) -> None:
    """A clipping threshold (V-trace's rho / c) must be one positive number."""
    if isinstance(value, Tensor):
        bad = value.numel() != 1 or not bool(value > 0)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        bad = not value > 0
    else:
        raise TypeError(f"{name} must be a positive float or a 1-element tensor, got {value!r}.")
    if bad:
        raise ValueError(f"{name} must be a single positive number, got {value}.")
