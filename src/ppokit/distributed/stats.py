"""Statistics over all ranks' data: moments, advantage standardisation, running statistics.

Every statistic the single-process algorithm computes over the whole batch is all-reduced
here, so that ``N`` ranks with batch ``b`` behave like one process with batch ``N * b``:

- :func:`global_standardize`: advantage normalisation with the global mean and unbiased std;
- :func:`global_mean_weight`: the factor that makes DDP's average of per-rank masked means
  the masked mean over the global batch;
- :class:`RunningStatsMerger`: running observation (or return) statistics, merged across ranks
  with Chan et al.'s parallel algorithm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ppokit.distributed.world import World
from ppokit.objectives.functional import standardize_with

__all__ = [
    "RunningStatsMerger",
    "global_mean_weight",
    "global_moments",
    "global_standardize",
    "merge_moments",
]


def global_moments(
    x: torch.Tensor, world: World, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, unbiased variance and count of ``x``'s valid entries over all ranks (float64).

    One all-reduce of ``(count, sum, sum of squares)``; float64 keeps the one-pass formula
    ``(S2 - S^2 / N) / (N - 1)`` accurate for advantages (the cancellation it suffers in
    float32 is why this is not done in the input dtype).

    Args:
        x: values ``[*B, ...]``.
        world: this process.
        mask: bool, broadcastable to ``x`` (e.g. ``[*B, 1]``); masked entries are ignored.

    Example:
        >>> m, v, n = global_moments(torch.tensor([1.0, 2.0, 3.0, 4.0]), World())
        >>> float(m), round(float(v), 4), int(n)   # var: (2.25+0.25+0.25+2.25) / 3
        (2.5, 1.6667, 4)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"global_moments expects a tensor, got {type(x).__name__}.")
    values = x.detach().to(torch.float64)
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"The mask must be a bool tensor, got {mask.dtype}.")
        try:
            mask = mask.expand_as(values)
        except RuntimeError:
            raise ValueError(
                f"The mask of shape {tuple(mask.shape)} does not broadcast to the values of "
                f"shape {tuple(x.shape)}; pass a mask [*B] or [*B, 1] matching the batch."
            ) from None
        values = torch.where(mask, values, torch.zeros_like(values))
        count = mask.sum().to(torch.float64)
    else:
        count = torch.tensor(float(values.numel()), dtype=torch.float64)
    local = torch.stack([count, values.sum(), values.square().sum()])
    total = world.all_reduce_sum(local)
    n, s, s2 = total[0], total[1], total[2]
    mean = s / n.clamp_min(1.0)
    var = ((s2 - s * mean) / (n - 1.0).clamp_min(1.0)).clamp_min(0.0)
    return mean, var, n


def global_standardize(
    x: torch.Tensor, world: World, mask: torch.Tensor | None = None, *, eps: float = 1e-6
) -> torch.Tensor:
    """``(x - mean) / max(std, eps)`` with the mean and unbiased std of ALL ranks' entries.

    This is the loss's ``normalize_advantage`` over the global batch: N ranks standardising
    their share of the batch this way get the values one process gets on the whole batch.
    Pass the result as the advantage to a loss built with ``normalize_advantage=False``.
    Masked entries come back as 0, as in the loss.

    Args:
        x: advantage ``[*B, 1]`` (any shape works).
        world: this process.
        mask: bool ``[*B, 1]`` (or broadcastable) of valid entries.
        eps: lower bound of the std (the loss uses 1e-6).

    Example:
        >>> global_standardize(torch.tensor([1.0, 2.0, 3.0]), World())
        tensor([-1.,  0.,  1.])
    """
    mean, var, _ = global_moments(x, world, mask)
    # the moments are float64 (see global_moments), so the division is done in float64 too
    return standardize_with(x.to(torch.float64), mean, var.sqrt(), mask, eps=eps).to(x.dtype)


def global_mean_weight(mask: torch.Tensor, world: World) -> torch.Tensor:
    """Factor making DDP's average of per-rank masked means the masked mean of the global batch.

    With ``reduction="mean"`` each rank's loss is the mean over ITS valid samples, and DDP
    averages the ranks' gradients with equal weights. When the ranks hold different numbers
    of valid samples (``n_r``, of ``n`` in all) that is not the gradient of the mean over all
    ``n`` samples: a rank with few valid samples counts as much as one with many. Multiplying
    rank ``r``'s loss by ``world_size * n_r / n`` fixes it, since then
    ``(1 / world_size) * sum_r world_size * (n_r / n) * mean_r = sum_r sum_r / n``.

    Use it as ``(global_mean_weight(mask, world) * total_loss).backward()``, where
    ``total_loss`` is the sum of a ``reduction="mean"`` loss's ``loss_*`` terms on this rank's
    batch. One all-reduce of the valid count; for a single process the factor is exactly 1.

    Args:
        mask: bool ``[*B]`` or ``[*B, 1]``, this rank's valid samples (the loss's mask). For
            unmasked batches of different sizes pass ``torch.ones(B, dtype=torch.bool)``.
        world: this process.

    Returns:
        A 0-dim tensor of the default dtype on ``mask``'s device; 0 when no rank holds a valid
        sample (the masked losses are then 0 anyway).

    Raises:
        TypeError: ``mask`` is not a bool tensor.

    Example:
        >>> # one process: this rank's mean already is the global one
        >>> global_mean_weight(torch.tensor([True, False, True]), World())
        tensor(1.)
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(
            f"global_mean_weight expects the bool mask of this rank's valid samples, got {got}; "
            "for an unmasked batch pass torch.ones(batch_size, dtype=torch.bool)."
        )
    local = mask.sum().to(torch.float64).reshape(1)
    total = world.all_reduce_sum(local)
    weight = world.world_size * local / total.clamp_min(1.0)
    return weight[0].to(torch.get_default_dtype())


def _unmerge(
    mean: np.ndarray,
    var: np.ndarray,
    count: float,
    base_mean: np.ndarray,
    base_var: np.ndarray,
    base_count: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Moments of the data folded in since ``base``: Chan's merge solved for the batch."""
    n_b = count - base_count
    if n_b <= 0:
        return np.zeros_like(mean), np.zeros_like(var), 0.0
    batch_mean = (count * mean - base_count * base_mean) / n_b
    delta = batch_mean - base_mean
    m2 = count * var - base_count * base_var - np.square(delta) * (base_count * n_b / count)
    return batch_mean, np.maximum(m2 / n_b, 0.0), n_b


def merge_moments(
    mean: np.ndarray,
    var: np.ndarray,
    count: float,
    batch_mean: np.ndarray,
    batch_var: np.ndarray,
    batch_count: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Merge two sets of (mean, population variance, count) (Chan et al., 1979).

    Example:
        >>> a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0])
        >>> m, v, n = merge_moments(a.mean(), a.var(), 2, b.mean(), b.var(), 3)
        >>> float(m), float(v), n   # mean and variance of 1..5
        (3.0, 2.0, 5)
    """
    total = count + batch_count
    delta = batch_mean - mean
    new_mean = mean + delta * (batch_count / total)
    m2 = var * count + batch_var * batch_count + np.square(delta) * (count * batch_count / total)
    return new_mean, m2 / total, total


class RunningStatsMerger:
    """Merge a running mean/variance across ranks after each rank folded in its own data.

    Every rank starts from the same statistics (the snapshot). Each iteration, a rank folds
    its own observations into its copy; :meth:`merge` then recovers each rank's new moments
    (count, mean, variance since the snapshot), all-gathers them and folds them into the
    snapshot in rank order with Chan et al.'s (1979) parallel update, so every rank ends with
    the same statistics, equal to one process having seen all ranks' data.

    Args:
        stats: a :class:`ppokit.train.normalization.RunningMeanStd` (numpy ``mean``, ``var``,
            ``count``), updated in place by :meth:`merge`.
        world: this process.

    Example:
        >>> from ppokit.train.normalization import RunningMeanStd
        >>> rms = RunningMeanStd(())
        >>> merger = RunningStatsMerger(rms, World())
        >>> rms.update(np.array([1.0, 3.0]))
        >>> merger.merge()   # one process: nothing to combine
        >>> round(float(rms.mean), 3), round(float(rms.var), 3)
        (2.0, 1.0)
    """

    def __init__(self, stats: Any, world: World) -> None:
        for attr in ("mean", "var", "count"):
            if not hasattr(stats, attr):
                raise TypeError(
                    f"RunningStatsMerger needs an object with mean, var and count (a "
                    f"ppokit.train.normalization.RunningMeanStd); {type(stats).__name__} has no "
                    f"{attr!r}."
                )
        self.stats = stats
        self.world = world
        self.reset()

    def reset(self) -> None:
        """Take the current statistics as the common starting point (after loading state)."""
        self._base = (
            np.array(self.stats.mean, dtype=np.float64, copy=True),
            np.array(self.stats.var, dtype=np.float64, copy=True),
            float(self.stats.count),
        )

    def merge(self) -> None:
        """All-gather every rank's new moments and fold them in; identical result on all."""
        if not self.world.is_distributed:
            self.reset()
            return

        base_mean, base_var, base_count = self._base
        mean, var, n = _unmerge(
            np.asarray(self.stats.mean, np.float64),
            np.asarray(self.stats.var, np.float64),
            float(self.stats.count),
            base_mean,
            base_var,
            base_count,
        )
        packed = torch.from_numpy(np.concatenate([[n], mean.reshape(-1), var.reshape(-1)]))
        size = mean.size
        merged_mean, merged_var, merged_count = base_mean, base_var, base_count
        for part in self.world.all_gather(packed):
            arr = part.numpy()
            count = float(arr[0])
            if count <= 0:
                continue
            merged_mean, merged_var, merged_count = merge_moments(
                merged_mean,
                merged_var,
                merged_count,
                arr[1 : 1 + size].reshape(base_mean.shape),
                arr[1 + size :].reshape(base_mean.shape),
                count,
            )
        self.stats.mean = np.asarray(merged_mean, dtype=np.float64).reshape(base_mean.shape)
        self.stats.var = np.asarray(merged_var, dtype=np.float64).reshape(base_mean.shape)
        self.stats.count = float(merged_count)
        self.reset()
