"""Batches with no sample to learn from: an empty batch, or a mask that is all ``False``.

An empty batch (a zero in the batch shape, e.g. the last chunk of a bad minibatch split) is
an error: there is nothing to average, and a loss of 0 would hide the bug upstream.
:func:`check_not_empty` says so before any network runs.

A mask with no valid sample is legitimate data (a minibatch of padding from variable-length
episodes or sequences, or one DDP rank's share of such a batch), so it gets defined outputs:

* every loss term (``loss_objective``, ``loss_entropy``, ``loss_critic``) is 0 with
  ``reduction="mean"`` or ``"sum"`` and all zeros with ``"none"``, with a zero gradient, so
  an optimiser step on it changes nothing (plain SGD; Adam's moments still decay);
* every diagnostic that is a statistic over valid samples (``kl_approx``, ``ESS``,
  ``max_ratio``, ``mean_ratio``, ``clip_fraction``, ``entropy``, ``value_clip_fraction``,
  ``explained_variance``) is NaN: it is undefined over zero samples, and NaN shows up in
  logs instead of passing for a real 0 or 1 (use ``nanmean`` to average such logs).

:func:`nan_without_samples` applies the second rule; the first holds by construction of
:func:`ppokit.objectives.functional.masked_mean` (a sum over valid entries divided by
``max(count, 1)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["check_not_empty", "nan_without_samples"]


def check_not_empty(batch: torch.Size | tuple[int, ...], *, what: str) -> None:
    """Raise a ValueError if the batch shape holds no sample (one of its dims is 0).

    Args:
        batch: the batch shape ``[*B]``.
        what: how to name the data in the message (e.g. ``"ClipPPOLoss's input"``).

    Example:
        >>> check_not_empty(torch.Size([4, 2]), what="the batch")
        >>> check_not_empty(torch.Size([0]), what="the batch")
        Traceback (most recent call last):
        ...
        ValueError: the batch has batch shape (0,), which holds no sample; ...
    """
    if math.prod(batch) == 0:
        raise ValueError(
            f"{what} has batch shape {tuple(batch)}, which holds no sample; a PPO loss needs "
            "at least one. An empty minibatch usually comes from a split with more "
            "minibatches than samples or a filter that removed every transition: skip "
            "empty batches before calling the loss."
        )


def nan_without_samples(
    out: dict[str, torch.Tensor], mask: torch.Tensor | None, keys: Iterable[str]
) -> dict[str, torch.Tensor]:
    """Set the statistics ``keys`` of ``out`` to NaN when ``mask`` has no valid sample.

    No host sync (``torch.where`` on ``mask.any()``), so it traces into compiled graphs.
    ``out`` is changed in place and returned; absent keys are skipped.

    Example:
        >>> out = {"ESS": torch.tensor(1.0), "loss_objective": torch.tensor(0.0)}
        >>> nan_without_samples(out, torch.tensor([False, False]), ["ESS"])["ESS"]
        tensor(nan)
    """
    if mask is None:
        return out
    any_valid = mask.any()
    for key in keys:
        value = out.get(key)
        if value is not None:
            out[key] = torch.where(any_valid, value, torch.full_like(value, math.nan))
    return out
