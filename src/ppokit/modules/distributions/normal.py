"""Diagonal Gaussian actions: the pure sample/log-prob functions, the class, the param extractor.

:func:`normal_rsample` and :func:`normal_log_prob` are the one implementation of a Gaussian
draw and density in ppokit: :class:`IndependentNormal`'s methods call them, and so does the
collector's tensor policy (eager and compiled), so both paths give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

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

__all__ = [
    "IndependentNormal",
    "NormalParamExtractor",
    "biased_softplus",
    "normal_log_prob",
    "normal_rsample",
    "normal_sample_and_log_prob",
]

LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


def normal_rsample(
    loc: torch.Tensor,
    scale: torch.Tensor,
    sample_shape: torch.Size | Sequence[int] = NO_SAMPLE,
    *,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reparameterised Gaussian draw ``loc + noise * scale``, ``noise ~ N(0, 1)``.

    The noise is drawn with ``torch.randn`` (torch's ``Normal.rsample`` stream: the same seed
    gives the same numbers) unless given, e.g. drawn eagerly outside a compiled graph.

    Args:
        loc: ``[*B]`` means.
        scale: ``[*B]`` standard deviations (unchecked: > 0 is the caller's promise).
        sample_shape: leading sample dims ``S``.
        noise: ``[*S, *B]`` standard-normal noise, or None to draw it.

    Returns:
        ``[*S, *B]``, differentiable w.r.t. ``loc`` and ``scale``.

    Example:
        >>> normal_rsample(torch.tensor([1.0]), torch.tensor([2.0]), noise=torch.tensor([0.5]))
        tensor([2.])
    """
    if noise is None:
        noise = torch.randn(
            torch.Size(sample_shape) + loc.shape, dtype=loc.dtype, device=loc.device
        )
    return loc + noise * scale


def normal_log_prob(
    value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, event_dims: int
) -> torch.Tensor:
    """Gaussian log-density ``-(x - m)^2 / (2 s^2) - log s - log sqrt(2 pi)``, summed over events.

    Args:
        value: ``[*S, *B, *E]``.
        loc: ``[*B, *E]``.
        scale: ``[*B, *E]`` (unchecked).
        event_dims: ``len(E)``, the trailing dims summed over (0: elementwise).

    Returns:
        ``[*S, *B]``.

    Example:
        >>> normal_log_prob(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), 1)
        tensor([-1.8379])
    """
    lp = -((value - loc) ** 2) / (2 * scale**2) - scale.log() - LOG_SQRT_2PI
    if event_dims:
        lp = lp.reshape((*lp.shape[:-event_dims], -1)).sum(-1)
    return lp


def normal_sample_and_log_prob(
    loc: torch.Tensor, scale: torch.Tensor, event_dims: int, *, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``IndependentNormal(loc, scale, event_dims)``'s ``rsample()`` and its ``log_prob``.

    The unchecked acting step (no distribution object, no parameter checks): a NaN or
    non-positive ``scale`` shows as a non-finite log-prob, which the caller must test.

    Returns:
        ``(action [*B, *E], log_prob [*B])``.

    Example:
        >>> a, lp = normal_sample_and_log_prob(torch.zeros(2), torch.ones(2), 1,
        ...                                    noise=torch.zeros(2))
        >>> a, lp  # 2 * -log sqrt(2 pi)
        (tensor([0., 0.]), tensor(-1.8379))
    """
    action = normal_rsample(loc, scale, noise=noise)
    return action, normal_log_prob(action, loc, scale, event_dims)


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


# --------------------------------------------------------------------------- the class


class IndependentNormal(D.Independent):
    """Diagonal Gaussian: ``Independent(Normal(loc, scale), event_dims)``.

    ``loc`` and ``scale`` are ``[*B, *E]`` with ``len(E) == event_dims``; ``log_prob`` and
    ``entropy`` (closed form) are ``[*B]``. ``deterministic_sample`` and ``mode`` are ``loc``.
    Samples and log-probs come from :func:`normal_rsample` and :func:`normal_log_prob` (the
    numbers of ``torch.distributions``, same random stream).

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
        loc = as_loc(name, loc)
        scale = as_scale(name, scale, loc)
        check_normal_params(name, loc, scale)
        check_event_dims(name, event_dims, loc)
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

    def rsample(self, sample_shape: torch.Size | Sequence[int] = NO_SAMPLE) -> torch.Tensor:
        """Reparameterised action ``[*sample_shape, *B, *E]``."""
        return normal_rsample(self.loc, self.scale, sample_shape)

    def sample(self, sample_shape: torch.Size | Sequence[int] = NO_SAMPLE) -> torch.Tensor:
        """Action ``[*sample_shape, *B, *E]`` without gradient (the same draw as ``rsample``)."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if not compiling():
            check_value_shape(
                type(self).__name__, value, self.batch_shape + self.event_shape, "an action"
            )
        return normal_log_prob(value, self.loc, self.scale, self.reinterpreted_batch_ndims)
