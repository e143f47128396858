"""Discrete actions: the pure sample/log-prob functions and the categorical classes.

:func:`categorical_sample` and :func:`categorical_log_prob` are the one implementation of a
categorical draw and log-mass in ppokit: :class:`Categorical`'s and
:class:`OneHotCategorical`'s methods call them, and so does the collector's tensor policy, so
both give the same numbers (those of ``torch.distributions.Categorical``, same random stream).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import distributions as D

from ppokit.modules.distributions.checks import (
    NO_SAMPLE,
    check_value_shape,
    compiling,
    skip_value_checks,
)

__all__ = [
    "Categorical",
    "OneHotCategorical",
    "categorical_log_prob",
    "categorical_sample",
    "categorical_sample_and_log_prob",
]


def categorical_sample(
    probs: torch.Tensor, sample_shape: torch.Size | Sequence[int] = NO_SAMPLE
) -> torch.Tensor:
    """Draw action indices from ``probs`` ``[*B, n]`` (with replacement).

    Args:
        probs: ``[*B, n]`` probabilities (normalised over the last dim, unchecked).
        sample_shape: leading sample dims ``S``.

    Returns:
        ``int64`` indices ``[*S, *B]``.

    Example:
        >>> categorical_sample(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), (3,))
        tensor([[1, 0],
                [1, 0],
                [1, 0]])
    """
    shape = torch.Size(sample_shape)
    n = probs.shape[-1]
    draws = torch.multinomial(probs.reshape(-1, n), shape.numel(), True)  # [prod(B), prod(S)]
    if shape:  # (the acting step, one draw per row, runs every env step: no extra op there)
        draws = draws.T
    return draws.reshape(shape + probs.shape[:-1])


def categorical_log_prob(log_pmf: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Log-mass of action indices under normalised logits.

    Args:
        log_pmf: ``[*B, n]`` normalised log-probabilities (``logits - logsumexp(logits)``).
        index: ``[*S, *B]`` integer actions in ``[0, n)`` (unchecked).

    Returns:
        ``[*S, *B]``.

    Example:
        >>> categorical_log_prob(torch.tensor([0.25, 0.75]).log(), torch.tensor([1, 0]))
        tensor([-0.2877, -1.3863])
    """
    if index.dtype != torch.int64:
        index = index.long()
    index = index.unsqueeze(-1)
    if index.shape[:-1] != log_pmf.shape[:-1]:  # sample dims (or a scalar action): broadcast
        index, log_pmf = torch.broadcast_tensors(index, log_pmf)
        index = index[..., :1]
    return log_pmf.gather(-1, index).squeeze(-1)


def categorical_sample_and_log_prob(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Categorical(logits=logits)``'s ``sample()`` and its ``log_prob``.

    The unchecked acting step (no distribution object, no parameter checks); if the draw
    fails (NaN/+inf logits) the checked class is built to raise its clear error.

    Args:
        logits: ``[*B, n]`` unnormalised log-probabilities.

    Returns:
        ``(index [*B] int64, log_prob [*B])``.

    Example:
        >>> categorical_sample_and_log_prob(torch.tensor([[0.0, -float("inf")]]))
        (tensor([0]), tensor([0.]))
    """
    if logits.ndim == 0 or not logits.is_floating_point():
        raise ValueError(
            f"Categorical: logits must be a floating-point tensor of shape [*B, num_actions], "
            f"got {logits.dtype} {list(logits.shape)}."
        )
    log_pmf = logits - logits.logsumexp(dim=-1, keepdim=True)
    try:
        index = categorical_sample(log_pmf.softmax(-1))
    except RuntimeError:  # NaN/inf probabilities: let the checked class say why
        Categorical(logits=logits)
        raise
    return index, categorical_log_prob(log_pmf, index)


def check_categorical_params(
    cls: str, logits: torch.Tensor | None, probs: torch.Tensor | None
) -> None:
    """Exactly one of ``logits``/``probs``, floating point ``[*B, n]``, with valid values."""
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
    if skip_value_checks():
        return
    if logits is not None:
        # -inf logits are legitimate (masked actions); NaN and +inf are not.
        if torch.isnan(logits).any() or torch.isposinf(logits).any():
            raise ValueError(
                f"{cls}: logits contain NaN or +inf. The network producing them diverged or read "
                "a NaN observation; check the inputs and lower the learning rate."
            )
    elif probs is not None and not (
        torch.isfinite(probs).all() and (probs >= 0).all() and (probs.sum(-1) > 0).all()
    ):
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
        check_categorical_params(type(self).__name__, logits, probs)
        super().__init__(probs=probs, logits=logits, validate_args=False)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode

    def sample(self, sample_shape: torch.Size | Sequence[int] = NO_SAMPLE) -> torch.Tensor:
        """Action indices ``[*sample_shape, *B]`` (``int64``)."""
        return categorical_sample(self.probs, sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if not compiling():
            name = type(self).__name__
            check_value_shape(name, value, self.batch_shape, "an integer action")
            if value.is_floating_point() and not (value == value.round()).all():
                raise ValueError(f"{name}.log_prob: actions must be integer indices.")
            n = self._num_events
            if ((value < 0) | (value >= n)).any():
                raise ValueError(
                    f"{name}.log_prob: actions must be in [0, {n - 1}], got values from "
                    f"{value.min().item()} to {value.max().item()}."
                )
        return categorical_log_prob(self.logits, value)


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
        check_categorical_params(type(self).__name__, logits, probs)
        super().__init__(probs=probs, logits=logits, validate_args=False)

    @property
    def num_actions(self) -> int:
        return int(self.event_shape[-1])

    def sample(self, sample_shape: torch.Size | Sequence[int] = NO_SAMPLE) -> torch.Tensor:
        """One-hot ``int64`` actions ``[*sample_shape, *B, n]``."""
        index = categorical_sample(self.probs, sample_shape)
        return F.one_hot(index, self.num_actions)

    @property
    def mode(self) -> torch.Tensor:
        return F.one_hot(self.logits.argmax(-1), self.num_actions)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        index = value.argmax(-1)
        if not compiling():
            name = type(self).__name__
            check_value_shape(name, value, self.batch_shape + self.event_shape, "a one-hot action")
            # Tolerance for straight-through one-hots (1 + p - p is not exactly 1 in float).
            off = (value - F.one_hot(index, self.num_actions).to(value.dtype)).abs()
            if (off > 1e-4).any():
                raise ValueError(
                    f"{name}.log_prob: actions must be one-hot over the last dim (a single 1, "
                    "zeros elsewhere). For integer indices use Categorical."
                )
        return categorical_log_prob(self.logits, index)
