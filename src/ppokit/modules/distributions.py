"""Action distributions for PPO actors, built on ``torch.distributions``.

Each class is constructed from keyword parameters (``loc``/``scale`` or ``logits``/``probs``), so
it can be given as ``distribution_class`` to tensordict's ``ProbabilisticTensorDictModule`` (and to
ppokit's or TorchRL's ``ProbabilisticActor``). Each has a ``deterministic_sample``, which is what
``set_interaction_type(InteractionType.DETERMINISTIC)`` acts with.

Numbers and shapes follow TorchRL 0.14.1 (``torchrl.modules.TanhNormal``, ``OneHotCategorical``,
``tensordict.nn.NormalParamExtractor``), so actions sampled by one library are scored identically by
the other. Parameters are checked on construction and actions on ``log_prob``; a bad value raises
``ValueError`` naming the parameter instead of producing NaNs downstream. The value checks are
skipped under ``torch.compile`` and inside :func:`deferred_param_checks` (whose caller checks the
results instead).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn
from torch.distributions import constraints

__all__ = [
    "Categorical",
    "IndependentNormal",
    "NormalParamExtractor",
    "OneHotCategorical",
    "TanhNormal",
    "biased_softplus",
    "deferred_param_checks",
    "tanh_normal_log_prob",
]

ScaleLike = torch.Tensor | float | Callable[[torch.Tensor], torch.Tensor]
_NO_SAMPLE = torch.Size()


def _compiling() -> bool:
    return torch.compiler.is_compiling()


_DEFERRED = contextvars.ContextVar("ppokit_deferred_param_checks", default=False)


@contextlib.contextmanager
def deferred_param_checks() -> Iterator[None]:
    """Build ppokit distributions without their per-call parameter-value checks.

    Each check (NaN/Inf ``loc`` or ``logits``, ``scale <= 0``) costs a host sync and several
    small ops. A caller that detects non-finite results itself, and rebuilds the distribution
    outside this context to name the culprit, may skip them: ``ClipPPOLoss`` does (its one
    finiteness probe on the outputs covers every parameter). Shape and type checks still run.

    Example:
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


def _skip_value_checks() -> bool:
    # _compiling() first: dynamo cannot trace a ContextVar read
    return _compiling() or _DEFERRED.get()


# --------------------------------------------------------------------------- parameter checks


def _as_loc(cls: str, loc: object) -> torch.Tensor:
    if not isinstance(loc, torch.Tensor):
        loc = torch.as_tensor(loc, dtype=torch.get_default_dtype())
    if not loc.is_floating_point():
        raise ValueError(f"{cls}: loc must be a floating-point tensor, got dtype {loc.dtype}.")
    return loc


def _as_scale(cls: str, scale: ScaleLike, loc: torch.Tensor) -> torch.Tensor:
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


def _check_normal_params(cls: str, loc: torch.Tensor, scale: torch.Tensor) -> None:
    if _skip_value_checks():
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


def _check_event_dims(cls: str, event_dims: int, loc: torch.Tensor) -> int:
    if isinstance(event_dims, bool) or not isinstance(event_dims, int):
        raise TypeError(f"{cls}: event_dims must be an int, got {event_dims!r}.")
    if not 0 <= event_dims <= loc.ndim:
        raise ValueError(
            f"{cls}: event_dims must be in [0, loc.ndim={loc.ndim}], got {event_dims}. "
            f"loc has shape {list(loc.shape)}; event_dims=1 sums the log-prob over the last dim."
        )
    return event_dims


def _check_value_shape(cls: str, value: torch.Tensor, expected: torch.Size, what: str) -> None:
    # Leading sample dims are allowed; the trailing dims must match exactly. torch would
    # otherwise broadcast, e.g. an action [B, 1] against a batch [B] into a [B, B] log-prob.
    n = len(expected)
    if value.ndim < n or value.shape[value.ndim - n :] != expected:
        raise ValueError(
            f"{cls}.log_prob: expected {what} of shape [*sample, {', '.join(map(str, expected))}]"
            f" (batch {list(expected)}), got {list(value.shape)}. "
            "Reshape the stored action to match the distribution's parameters."
        )


# --------------------------------------------------------------------------- param extractor


def biased_softplus(x: torch.Tensor, *, bias: float = 1.0, min_val: float = 0.01) -> torch.Tensor:
    """``softplus(x + b) + min_val`` with ``b`` chosen so that an input ``0`` maps to ``bias``.

    This is the positive mapping TorchRL/tensordict use by default for a Gaussian scale
    (``"biased_softplus_1.0"``): a zero-initialised network starts at a unit scale.

    Args:
        x: raw values, any shape.
        bias: the value ``f(0)``; must exceed ``min_val``.
        min_val: the infimum of the output.

    Returns:
        A tensor of ``x``'s shape with values in ``(min_val, inf)``.

    Example:
        >>> biased_softplus(torch.zeros(2))
        tensor([1., 1.])
    """
    return F.softplus(x + _inv_softplus(bias - min_val)) + min_val


def _inv_softplus(y: float) -> float:
    # softplus(b) = y  <=>  b = log(exp(y) - 1); expm1 keeps precision for small y.
    return math.log(math.expm1(y))


def _parse_scale_mapping(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name == "exp":
        return torch.exp
    if name == "softplus":
        return F.softplus
    if name.startswith("biased_softplus"):
        parts = name.split("_")[2:]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) == 1 and numbers[0] > 0.01:
            return lambda x: biased_softplus(x, bias=numbers[0])
        if len(numbers) == 2 and numbers[0] > numbers[1] >= 0:
            return lambda x: biased_softplus(x, bias=numbers[0], min_val=numbers[1])
    raise ValueError(
        f"NormalParamExtractor: unknown scale_mapping {name!r}. Use 'exp', 'softplus', "
        "'biased_softplus_{bias}' (bias > 0.01) or 'biased_softplus_{bias}_{min_val}' "
        "(bias > min_val >= 0), e.g. 'biased_softplus_1.0'."
    )


class NormalParamExtractor(nn.Module):
    """Split ``[*B, 2 * d]`` into ``loc`` ``[*B, d]`` and a positive ``scale`` ``[*B, d]``.

    The first half of the last dim is ``loc``; the second half goes through ``scale_mapping`` and
    is clamped below at ``scale_lb``. The defaults give the same numbers as
    ``tensordict.nn.NormalParamExtractor()`` (TorchRL's default).

    Args:
        scale_mapping: ``"biased_softplus_{bias}"`` (``softplus(x + b) + 0.01`` with ``f(0) =
            bias``), ``"biased_softplus_{bias}_{min_val}"``, ``"softplus"`` or ``"exp"``.
        scale_lb: lower bound of the scale.

    Example:
        >>> loc, scale = NormalParamExtractor()(torch.tensor([[0.5, 0.0]]))
        >>> loc, scale
        (tensor([[0.5000]]), tensor([[1.]]))
    """

    def __init__(self, scale_mapping: str = "biased_softplus_1.0", scale_lb: float = 1e-4) -> None:
        super().__init__()
        if not isinstance(scale_mapping, str):
            raise TypeError(
                f"NormalParamExtractor: scale_mapping must be a string, got {scale_mapping!r}."
            )
        self._mapping = _parse_scale_mapping(scale_mapping)
        if not (isinstance(scale_lb, (int, float)) and math.isfinite(scale_lb) and scale_lb >= 0):
            raise ValueError(
                f"NormalParamExtractor: scale_lb must be a finite number >= 0, got {scale_lb!r}."
            )
        self.scale_mapping = scale_mapping
        self.scale_lb = float(scale_lb)

    def forward(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = params.shape[-1] if params.ndim else 0
        if size == 0 or size % 2:
            raise ValueError(
                f"NormalParamExtractor: the last dim must be even (loc and scale halves), got "
                f"shape {list(params.shape)}. Make the network output 2 * action_dim features."
            )
        loc, raw_scale = params.chunk(2, dim=-1)
        return loc, self._mapping(raw_scale).clamp_min(self.scale_lb)

    def extra_repr(self) -> str:
        return f"scale_mapping={self.scale_mapping!r}, scale_lb={self.scale_lb}"


# --------------------------------------------------------------------------- Gaussians


class IndependentNormal(D.Independent):
    """Diagonal Gaussian: ``Independent(Normal(loc, scale), event_dims)``.

    ``loc`` and ``scale`` are ``[*B, *E]`` with ``len(E) == event_dims``; ``log_prob`` and
    ``entropy`` (closed form) are ``[*B]``. ``deterministic_sample`` and ``mode`` are ``loc``.

    Args:
        loc: the mean.
        scale: the standard deviation (> 0): a tensor broadcastable to ``loc``, a float, or a
            callable applied to ``loc`` (e.g. ``torch.ones_like``).
        event_dims: how many trailing dims form one action.

    Example:
        >>> d = IndependentNormal(torch.zeros(2, 3), torch.ones(2, 3))
        >>> d.log_prob(torch.zeros(2, 3))  # 3 * -0.5 * log(2 pi)
        tensor([-2.7568, -2.7568])
    """

    param_keys = ("loc", "scale")

    def __init__(self, loc: torch.Tensor, scale: ScaleLike, *, event_dims: int = 1) -> None:
        name = type(self).__name__
        loc = _as_loc(name, loc)
        scale = _as_scale(name, scale, loc)
        _check_normal_params(name, loc, scale)
        _check_event_dims(name, event_dims, loc)
        super().__init__(D.Normal(loc, scale, validate_args=False), event_dims, validate_args=False)

    @property
    def loc(self) -> torch.Tensor:
        return self.base_dist.loc

    @property
    def scale(self) -> torch.Tensor:
        return self.base_dist.scale

    @property
    def mode(self) -> torch.Tensor:
        return self.base_dist.loc

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.base_dist.loc

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if not _compiling():
            _check_value_shape(
                type(self).__name__, value, self.batch_shape + self.event_shape, "an action"
            )
        return super().log_prob(value)


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
    log_normal = (
        -((pre_tanh - loc) ** 2) / (2 * scale**2) - scale.log() - 0.5 * math.log(2 * math.pi)
    )
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
        loc = _as_loc(name, loc)
        scale = _as_scale(name, scale, loc)
        _check_normal_params(name, loc, scale)
        self.event_dims = _check_event_dims(name, event_dims, loc)
        low_t = self._as_bound("low", low, loc)
        high_t = self._as_bound("high", high, loc)
        floats = not isinstance(low, torch.Tensor) and not isinstance(high, torch.Tensor)
        if not _compiling():
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
        if _compiling():
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

    def rsample(self, sample_shape: torch.Size | Sequence[int] = _NO_SAMPLE) -> torch.Tensor:
        """Reparameterised action ``[*sample_shape, *B, *E]``."""
        return self._squash(self.base_dist.rsample(torch.Size(sample_shape)))

    def sample(self, sample_shape: torch.Size | Sequence[int] = _NO_SAMPLE) -> torch.Tensor:
        """Action ``[*sample_shape, *B, *E]`` without gradient."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_and_log_prob(
        self, sample_shape: torch.Size | Sequence[int] = _NO_SAMPLE
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action and its log-prob, scored at the exact pre-tanh draw.

        Preferable to ``log_prob(rsample())`` for Monte-Carlo entropy: it does not invert a
        saturated ``tanh``. Returns ``([*S, *B, *E], [*S, *B])``.
        """
        x = self.base_dist.rsample(torch.Size(sample_shape))
        return self._squash(x), self._log_prob_at(x)

    def sample_and_log_prob(
        self, sample_shape: torch.Size | Sequence[int] = _NO_SAMPLE
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``rsample_and_log_prob`` but the action carries no gradient."""
        with torch.no_grad():
            x = self.base_dist.sample(torch.Size(sample_shape))
            action = self._squash(x)
        return action, self._log_prob_at(x)

    def _log_prob_at(self, x: torch.Tensor) -> torch.Tensor:
        log_half = self._log_half if self._rescale else self._log_half.new_zeros(())
        return tanh_normal_log_prob(x, self.loc, self.scale, log_half, self.event_dims)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-density of actions ``[*S, *B, *E]`` -> ``[*S, *B]``."""
        name = type(self).__name__
        if not _compiling():
            if not value.is_floating_point():
                raise ValueError(
                    f"{name}.log_prob: action must be floating point, got {value.dtype}."
                )
            _check_value_shape(name, value, self.batch_shape + self.event_shape, "an action")
        u = (value - self._mid) / self._half if self._rescale else value
        if not _compiling():
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


# --------------------------------------------------------------------------- discrete


def _check_categorical_params(
    cls: str, logits: torch.Tensor | None, probs: torch.Tensor | None
) -> None:
    if (logits is None) == (probs is None):
        raise ValueError(
            f"{cls}: pass exactly one of logits or probs, got "
            f"{'both' if logits is not None else 'neither'}."
        )
    name, param = ("logits", logits) if logits is not None else ("probs", probs)
    if not isinstance(param, torch.Tensor) or not param.is_floating_point():
        raise ValueError(f"{cls}: {name} must be a floating-point tensor, got {param!r:.80}.")
    if param.ndim == 0 or param.shape[-1] == 0:
        raise ValueError(
            f"{cls}: {name} must have shape [*B, num_actions] with num_actions >= 1, got "
            f"{list(param.shape)}."
        )
    if _skip_value_checks():
        return
    if name == "logits":
        # -inf logits are legitimate (masked actions); NaN and +inf are not.
        if torch.isnan(logits).any() or torch.isposinf(logits).any():
            raise ValueError(
                f"{cls}: logits contain NaN or +inf. The network producing them diverged or read "
                "a NaN observation; check the inputs and lower the learning rate."
            )
    elif not (torch.isfinite(probs).all() and (probs >= 0).all() and (probs.sum(-1) > 0).all()):
        raise ValueError(
            f"{cls}: probs must be finite, >= 0 and have a positive sum over the last dim."
        )


class Categorical(D.Categorical):
    """Categorical over ``n`` actions; actions are integer indices ``[*B]``.

    ``logits``/``probs`` are ``[*B, n]``; ``log_prob(action [*S, *B]) -> [*S, *B]``;
    ``deterministic_sample`` (= ``mode``) is the argmax ``[*B]``. Same semantics as
    ``torch.distributions.Categorical`` (which TorchRL uses), with checked inputs: an action
    ``[*B, 1]`` (a common Gym shape) raises instead of broadcasting to ``[*B, *B]``.

    Args:
        logits: unnormalised log-probabilities.
        probs: probabilities (normalised over the last dim).

    Example:
        >>> d = Categorical(logits=torch.log(torch.tensor([0.2, 0.3, 0.5])))
        >>> d.log_prob(torch.tensor(2)), d.deterministic_sample
        (tensor(-0.6931), tensor(2))
    """

    param_keys = ("logits",)

    def __init__(
        self, logits: torch.Tensor | None = None, probs: torch.Tensor | None = None
    ) -> None:
        _check_categorical_params(type(self).__name__, logits, probs)
        super().__init__(probs=probs, logits=logits, validate_args=False)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if not _compiling():
            name = type(self).__name__
            _check_value_shape(name, value, self.batch_shape, "an integer action")
            if value.is_floating_point() and not (value == value.round()).all():
                raise ValueError(f"{name}.log_prob: actions must be integer indices.")
            n = self._num_events
            if ((value < 0) | (value >= n)).any():
                raise ValueError(
                    f"{name}.log_prob: actions must be in [0, {n - 1}], got values from "
                    f"{value.min().item()} to {value.max().item()}."
                )
        return super().log_prob(value)


class OneHotCategorical(D.OneHotCategorical):
    """Categorical over ``n`` actions with one-hot actions ``[*B, n]``.

    ``logits``/``probs`` are ``[*B, n]``; samples and ``deterministic_sample`` (= ``mode``, the
    argmax, the first one on ties) are one-hot ``int64`` ``[*B, n]`` as in TorchRL;
    ``log_prob(action [*S, *B, n]) -> [*S, *B]`` scores the hot index (float one-hots are fine);
    ``entropy()`` is closed form, ``[*B]``.

    Args:
        logits: unnormalised log-probabilities.
        probs: probabilities (normalised over the last dim).

    Example:
        >>> d = OneHotCategorical(logits=torch.log(torch.tensor([0.2, 0.3, 0.5])))
        >>> d.log_prob(torch.tensor([0, 0, 1])), d.deterministic_sample
        (tensor(-0.6931), tensor([0, 0, 1]))
    """

    param_keys = ("logits",)

    def __init__(
        self, logits: torch.Tensor | None = None, probs: torch.Tensor | None = None
    ) -> None:
        _check_categorical_params(type(self).__name__, logits, probs)
        super().__init__(probs=probs, logits=logits, validate_args=False)

    @property
    def num_actions(self) -> int:
        return self._categorical._num_events

    def sample(self, sample_shape: torch.Size | Sequence[int] = _NO_SAMPLE) -> torch.Tensor:
        """One-hot ``int64`` actions ``[*sample_shape, *B, n]``."""
        index = self._categorical.sample(torch.Size(sample_shape))
        return F.one_hot(index, self.num_actions)

    @property
    def mode(self) -> torch.Tensor:
        return F.one_hot(self._categorical.logits.argmax(-1), self.num_actions)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if not _compiling():
            name = type(self).__name__
            _check_value_shape(name, value, self.batch_shape + self.event_shape, "a one-hot action")
            index = value.argmax(-1)
            # Tolerance for straight-through one-hots (1 + p - p is not exactly 1 in float).
            off = (value - F.one_hot(index, self.num_actions).to(value.dtype)).abs()
            if (off > 1e-4).any():
                raise ValueError(
                    f"{name}.log_prob: actions must be one-hot over the last dim (a single 1, "
                    "zeros elsewhere). For integer indices use Categorical."
                )
            return self._categorical.log_prob(index)
        return self._categorical.log_prob(value.argmax(-1))
