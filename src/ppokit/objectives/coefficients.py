"""Schedulable loss coefficients: 0-d buffers that plain-number assignment updates in place.

``loss.entropy_coeff = 0.005`` (an annealing schedule) writes into the registered buffer, so
the next forward uses it, ``state_dict()`` carries it and a compiled graph sees it without
recompiling, as in TorchRL. ppokit's older spellings ``entropy_coef`` / ``critic_coef`` are
views of the same buffers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["SCHEDULABLE", "ScheduledCoefficients"]

#: buffer name -> (lowest allowed, highest allowed, whether the bounds are open)
SCHEDULABLE: dict[str, tuple[float, float, bool]] = {
    "entropy_coeff": (0.0, math.inf, False),
    "critic_coeff": (0.0, math.inf, False),
    "clip_epsilon": (0.0, 1.0, True),
    "clip_epsilon_low": (0.0, 1.0, True),
    "clip_epsilon_high": (0.0, 1.0, True),
    "clip_value": (0.0, math.inf, True),
    "max_importance_ratio": (0.0, math.inf, True),
}


def check_coefficient(name: str, value: Any) -> float:
    """``value`` as a float if it is a number in the range of ``name``; else a clear error.

    Example:
        >>> check_coefficient("clip_epsilon", 1.5)
        Traceback (most recent call last):
        ...
        ValueError: clip_epsilon must be a number in (0.0, 1.0), got 1.5.
    """
    low, high, open_ = SCHEDULABLE[name]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value < high) if open_ else (low <= value <= high)
    if not ok:
        bounds = f"({low}, {high})" if open_ else f"[{low}, {high}]"
        if high == math.inf:
            bounds = f"> {low}" if open_ else f">= {low}"
            raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}.")
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}.")
    return float(value)


class ScheduledCoefficients(nn.Module):
    """Base of the PPO losses holding their coefficients as 0-d buffers.

    Example:
        >>> m = ScheduledCoefficients()
        >>> m.register_coefficient("entropy_coeff", 0.01)
        >>> buffer = m.entropy_coeff
        >>> m.entropy_coeff = 0.5  # in place: the same tensor, a new value
        >>> m.entropy_coeff is buffer, float(m.entropy_coeff)
        (True, 0.5)
        >>> m.state_dict()["entropy_coeff"]
        tensor(0.5000)
    """

    entropy_coeff: torch.Tensor
    critic_coeff: torch.Tensor

    def register_coefficient(
        self, name: str, value: Any, *, device: torch.device | str | None = None
    ) -> None:
        """Check ``value`` and register it as the 0-d float buffer ``name``."""
        value = check_coefficient(name, value)
        self.register_buffer(
            name, torch.tensor(value, dtype=torch.get_default_dtype(), device=device)
        )

    def register_optional_coefficient(
        self, name: str, value: Any, *, device: torch.device | str | None = None
    ) -> None:
        """:meth:`register_coefficient`, or the plain attribute None for an option that is
        off (``value`` None)."""
        if value is None:
            setattr(self, name, None)
        else:
            self.register_coefficient(name, value, device=device)

    def __setattr__(self, name: str, value: Any) -> None:
        buffers = self.__dict__.get("_buffers")
        if (
            name in SCHEDULABLE
            and buffers is not None
            and buffers.get(name) is not None
            and (
                isinstance(value, (int, float))
                or (isinstance(value, torch.Tensor) and value.dim() == 0)
            )
        ):
            with torch.no_grad():
                buffers[name].fill_(check_coefficient(name, value))
            return
        super().__setattr__(name, value)

    def _coefficient(self, name: str, *, traced: bool) -> Any:
        """A coefficient for the objective: the buffer itself inside a compiled graph (no
        recompile when it is rescheduled) or on an accelerator (no host sync); its float
        value on the CPU (a Python number costs fewer ops than a 0-d tensor)."""
        value = getattr(self, name)
        if not isinstance(value, torch.Tensor) or traced or value.device.type != "cpu":
            return value
        return float(value)

    @property
    def entropy_coef(self) -> float:
        """ppokit's spelling of ``entropy_coeff`` (the same buffer), as a float."""
        return float(self.entropy_coeff)

    @entropy_coef.setter
    def entropy_coef(self, value: float) -> None:
        setattr(self, "entropy_coeff", value)  # noqa: B010  (in place, see __setattr__)

    @property
    def critic_coef(self) -> float:
        """ppokit's spelling of ``critic_coeff`` (the same buffer), as a float."""
        return float(self.critic_coeff)

    @critic_coef.setter
    def critic_coef(self, value: float) -> None:
        setattr(self, "critic_coeff", value)  # noqa: B010  (in place, see __setattr__)
