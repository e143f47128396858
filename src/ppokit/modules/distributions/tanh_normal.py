"""Gaussian squashed by ``tanh`` into ``[low, high]``: its log-density function and class.

The Gaussian part of the density is :func:`~ppokit.modules.distributions.normal.normal_log_prob`
and the draw :func:`~ppokit.modules.distributions.normal.normal_rsample` (the one Gaussian
density and draw in ppokit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import distributions as D
from torch.distributions import constraints

from ppokit.modules.distributions.checks import (
    NO_SAMPLE,
    ScaleLike,
    as_loc,
    as_scale,
    check_event_dims,
    check_normal_params,
    check_value_shape,
    compiling,
)
from ppokit.modules.distributions.normal import normal_log_prob, normal_rsample

__all__ = ["TanhNormal", "tanh_normal_log_prob"]


def tanh_normal_log_prob(
    pre_tanh: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    log_half_range: torch.Tensor,
    event_dims: int,
) -> torch.Tensor:
    """Log-density of ``y = mid + half * tanh(x)``, ``x ~ N(loc, scale)``, at pre-image ``x``.

    Change of variables: ``log p(y) = log N(x) - log(1 - tanh(x)^2) - log(half)``, summed over the
    ``event_dims`` trailing dims. ``log(1 - tanh(x)^2)`` is evaluated as
    ``2 * (log 2 - x - softplus(-2x))``, which stays finite for large ``|x|`` where
    ``1 - tanh(x)^2`` underflows to 0.

    Args:
        pre_tanh: ``x``, ``[*S, *B, *E]``.
        loc: ``[*B, *E]``.
        scale: ``[*B, *E]``.
        log_half_range: ``log((high - low) / 2)``, broadcastable to ``[*E]``.
        event_dims: ``len(E)``.

    Returns:
        ``[*S, *B]``.

    Example:
        >>> x = torch.zeros(1)
        >>> tanh_normal_log_prob(x, x, torch.ones(1), torch.zeros(()), 1)  # log N(0; 0, 1)
        tensor(-0.9189)
    """
    log_normal = normal_log_prob(pre_tanh, loc, scale, 0)
    log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
    lp = log_normal - log_det - log_half_range
    if event_dims:
        lp = lp.sum(dim=tuple(range(-event_dims, 0)))
    return lp


class TanhNormal(D.Distribution):
    """Gaussian squashed by ``tanh`` and rescaled to ``[low, high]`` (the SAC/PPO bounded action).

    ``a = mid + half * tanh(x)``, ``x ~ Normal(loc, scale)``, ``mid = (high + low) / 2``,
    ``half = (high - low) / 2``. ``loc``/``scale`` are ``[*B, *E]`` (``len(E) == event_dims``);
    ``log_prob`` is ``[*B]``. Same numbers as TorchRL 0.14.1's ``TanhNormal`` with the same
    arguments (also the same ``rsample`` under the same seed); defaults match too.

    Numerics: samples are kept strictly inside ``(low, high)`` (with ``safe_tanh``), and
    ``log_prob`` clamps the rescaled action into ``[-1 + r, 1 - r]`` (``r`` the dtype's
    resolution, 1e-6 for float32) before ``atanh``, so an action exactly at a bound has a finite
    log-prob. An action outside ``[low, high]`` (beyond a 1e-3 relative tolerance) raises: it
    usually means the stored action was clipped differently or ``low``/``high`` differ from the
    environment's bounds.

    There is no closed-form entropy: ``entropy()`` is deliberately *not* overridden, so it raises
    ``NotImplementedError`` (``torch.distributions.Distribution.entropy``) and a PPO loss (ppokit's
    or TorchRL's, which detects this by the class attribute) uses a Monte-Carlo estimate from
    ``rsample_and_log_prob``. ``mean`` likewise raises ``NotImplementedError``.

    ``deterministic_sample`` and ``mode`` are the squashed location ``mid + half * tanh(loc)``.
    This is the usual deterministic action, but not the true mode of the density when ``scale`` is
    large (the density then piles up at the bounds). TorchRL raises on ``mode``.

    Args:
        loc: location of the Gaussian before the squash.
        scale: its standard deviation (> 0): tensor broadcastable to ``loc``, float or callable.
        low: lower bound of the action (float or tensor broadcastable to ``loc``).
        high: upper bound (> ``low`` everywhere).
        event_dims: how many trailing dims form one action.
        tanh_loc: if True, ``loc`` is first soft-limited to ``upscale * tanh(loc / upscale)``.
            (TorchRL additionally shifts this loc by ``mid + half`` when the bounds are not
            ``[-1, 1]``; ppokit does not, so parity with ``tanh_loc=True`` holds for ``[-1, 1]``.)
        upscale: the limit used by ``tanh_loc``.
        safe_tanh: clamp samples to the open interval (so they round-trip through ``atanh``).

    Example:
        >>> d = TanhNormal(torch.zeros(3), torch.ones(3), low=-2.0, high=2.0)
        >>> d.deterministic_sample
        tensor([0., 0., 0.])
        >>> d.log_prob(torch.zeros(3))  # 3 * (log N(0; 0, 1) - log 2)
        tensor(-4.8363)
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    has_rsample = True
    param_keys = ("loc", "scale")
    _OUT_OF_BOUNDS_TOL = 1e-3

    def __init__(
        self,
        loc: torch.Tensor,
        scale: ScaleLike,
        *,
        low: torch.Tensor | float = -1.0,
        high: torch.Tensor | float = 1.0,
        event_dims: int = 1,
        tanh_loc: bool = False,
        upscale: torch.Tensor | float = 5.0,
        safe_tanh: bool = True,
    ) -> None:
        name = type(self).__name__
        loc = as_loc(name, loc)
        scale = as_scale(name, scale, loc)
        check_normal_params(name, loc, scale)
        self.event_dims = check_event_dims(name, event_dims, loc)
        low_t = self._as_bound("low", low, loc)
        high_t = self._as_bound("high", high, loc)
        floats = not isinstance(low, torch.Tensor) and not isinstance(high, torch.Tensor)
        if not compiling():
            # Python-number bounds are checked without touching the device (no sync).
            if floats:
                finite = math.isfinite(low) and math.isfinite(high)
                ordered = finite and high > low
            else:
                finite = bool(torch.isfinite(low_t).all() and torch.isfinite(high_t).all())
                ordered = finite and bool((high_t > low_t).all())
            if not finite:
                raise ValueError(
                    f"{name}: low and high must be finite, got low={low!r}, high={high!r}. "
                    "For an unbounded action use IndependentNormal."
                )
            if not ordered:
                raise ValueError(
                    f"{name}: high must be > low everywhere, got low={low_t.tolist()}, "
                    f"high={high_t.tolist()}. Pass the action space's bounds, e.g. "
                    "low=-1.0, high=1.0."
                )
            if isinstance(upscale, torch.Tensor):
                upscale_ok = bool((upscale > 0).all())
            else:
                upscale_ok = upscale > 0
            if tanh_loc and not upscale_ok:
                raise ValueError(f"{name}: upscale must be > 0, got {upscale!r}.")
        self.low, self.high = low_t, high_t
        self._mid = (high_t + low_t) / 2
        self._half = (high_t - low_t) / 2
        self._log_half = self._half.log()
        # Skipping the affine map for [-1, 1] saves two ops; the values are identical anyway.
        if compiling():
            self._rescale = True
        elif floats:
            self._rescale = not (low == -1 and high == 1)
        else:
            self._rescale = bool(((low_t != -1) | (high_t != 1)).any())
        self.tanh_loc = tanh_loc
        self.upscale = upscale
        self.safe_tanh = safe_tanh
        if tanh_loc:
            loc = upscale * torch.tanh(loc / upscale)
        self.loc, self.scale = loc, scale
        self._lim = 1.0 - torch.finfo(loc.dtype).resolution
        cut = loc.ndim - self.event_dims
        super().__init__(loc.shape[:cut], loc.shape[cut:], validate_args=False)

    @staticmethod
    def _as_bound(which: str, bound: torch.Tensor | float, loc: torch.Tensor) -> torch.Tensor:
        bound_t = torch.as_tensor(bound, dtype=loc.dtype, device=loc.device)
        try:
            ok = torch.broadcast_shapes(bound_t.shape, loc.shape) == loc.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"TanhNormal: {which} of shape {list(bound_t.shape)} does not broadcast to loc's "
                f"shape {list(loc.shape)}. Use a float or a tensor of shape [action_dim]."
            )
        return bound_t

    @property
    def base_dist(self) -> D.Normal:
        """The Gaussian before the squash (elementwise, ``[*B, *E]``)."""
        return D.Normal(self.loc, self.scale, validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.interval(self.low, self.high), self.event_dims)

    def _squash(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(x)
        if self.safe_tanh:
            # Straight-through clamp: keeps d tanh/dx as the gradient at saturation.
            y = y + (y.clamp(-self._lim, self._lim) - y).detach()
        if self._rescale:
            y = self._mid + self._half * y
        return y

    def rsample(self, sample_shape: torch.Size | Sequence[int] = NO_SAMPLE) -> torch.Tensor:
        """Reparameterised action ``[*sample_shape, *B, *E]``."""
        return self._squash(normal_rsample(self.loc, self.scale, sample_shape))

    def sample(self, sample_shape: torch.Size | Sequence[int] = NO_SAMPLE) -> torch.Tensor:
        """Action ``[*sample_shape, *B, *E]`` without gradient."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_and_log_prob(
        self, sample_shape: torch.Size | Sequence[int] = NO_SAMPLE
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action and its log-prob, scored at the exact pre-tanh draw.

        Preferable to ``log_prob(rsample())`` for Monte-Carlo entropy: it does not invert a
        saturated ``tanh``. Returns ``([*S, *B, *E], [*S, *B])``.
        """
        x = normal_rsample(self.loc, self.scale, sample_shape)
        return self._squash(x), self._log_prob_at(x)

    def sample_and_log_prob(
        self, sample_shape: torch.Size | Sequence[int] = NO_SAMPLE
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``rsample_and_log_prob`` but the action carries no gradient."""
        with torch.no_grad():
            x = normal_rsample(self.loc, self.scale, sample_shape)
            action = self._squash(x)
        return action, self._log_prob_at(x)

    def _log_prob_at(self, x: torch.Tensor) -> torch.Tensor:
        log_half = self._log_half if self._rescale else self._log_half.new_zeros(())
        return tanh_normal_log_prob(x, self.loc, self.scale, log_half, self.event_dims)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-density of actions ``[*S, *B, *E]`` -> ``[*S, *B]``."""
        name = type(self).__name__
        if not compiling():
            if not value.is_floating_point():
                raise ValueError(
                    f"{name}.log_prob: action must be floating point, got {value.dtype}."
                )
            check_value_shape(name, value, self.batch_shape + self.event_shape, "an action")
        u = (value - self._mid) / self._half if self._rescale else value
        if not compiling():
            outside = u.abs() > 1 + self._OUT_OF_BOUNDS_TOL
            if outside.any():
                raise ValueError(
                    f"{name}.log_prob: {int(outside.sum())} action entries lie outside "
                    f"[low, high] = [{self.low.tolist()}, {self.high.tolist()}], e.g. "
                    f"{value[outside].flatten()[:3].tolist()}. Store the action as sampled and "
                    "give the distribution the environment's action bounds (low=..., high=...)."
                )
        # Clamp inside atanh: an action at (or rounded onto) a bound would give atanh = inf.
        x = torch.atanh(u.clamp(-self._lim, self._lim))
        return self._log_prob_at(x)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self._squash(self.loc)

    @property
    def mode(self) -> torch.Tensor:
        return self._squash(self.loc)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(loc: {list(self.loc.shape)}, scale: {list(self.scale.shape)}, "
            f"low: {self.low.tolist()}, high: {self.high.tolist()}, event_dims={self.event_dims})"
        )
