"""Detached statistics of a PPO update: importance-weight diagnostics, ESS, explained variance.

Pure functions on tensors, like :mod:`ppokit.objectives.functional` (whose masks and shapes
they follow); :func:`ppokit.objectives.objective.ppo_objective` reports them.
"""

from __future__ import annotations

import math

import torch

from ppokit.objectives.degenerate import nan_without_samples
from ppokit.objectives.functional import ClipRange, clip_fraction, log_clip_bounds, masked_mean

__all__ = ["effective_sample_size", "explained_variance", "ratio_diagnostics"]


def explained_variance(
    target: torch.Tensor,
    prediction: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    batch_ndim: int | None = None,
) -> torch.Tensor:
    """``1 - Var[target - prediction] / Var[target]`` over valid samples (biased variances).

    1 is a perfect critic, 0 predicts no better than the mean, negative is worse.
    ``batch_ndim`` (no mask): values ``[*B, *T, 1]`` with per-agent or per-token dims
    ``[*T]`` after the ``batch_ndim`` batch dims give one figure per agent, ``[*T, 1]``, as
    in :func:`effective_sample_size`.

    Example:
        >>> explained_variance(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 2.0]))
        tensor(0.6667)
    """
    target = target.detach()
    prediction = prediction.detach()
    eps = torch.finfo(target.dtype).eps
    if batch_ndim is not None and mask is None and target.dim() - 1 > batch_ndim:
        pair = torch.stack([target, target - prediction]).flatten(1, batch_ndim)
        var_target, var_residual = pair.var(1, unbiased=False).unbind()
        return 1.0 - var_residual / (var_target + eps)
    if mask is None:
        # both variances in one reduction (one torch call costs microseconds on a minibatch)
        var_target, var_residual = (
            torch.stack([target, target - prediction])
            .reshape(2, -1)
            .var(1, unbiased=False)
            .unbind()
        )
        return 1.0 - var_residual / (var_target + eps)

    def var(x: torch.Tensor) -> torch.Tensor:
        mean = masked_mean(x, mask)
        return masked_mean((x - mean).pow(2), mask)

    return 1.0 - var(target - prediction) / (var(target) + eps)


def ratio_diagnostics(
    log_weight: torch.Tensor,
    clip_epsilon: ClipRange | None = None,
    mask: torch.Tensor | None = None,
    *,
    batch_ndim: int | None = None,
) -> dict[str, torch.Tensor]:
    """Detached statistics of the importance weights ``r = exp(log_weight)``.

    ``kl_approx`` (mean ``-log r``, the ``k1`` estimator of KL(old || new)), ``ESS``
    (:func:`effective_sample_size`), ``max_ratio``, ``mean_ratio`` and, with
    ``clip_epsilon``, ``clip_fraction`` (:func:`clip_fraction`), all over valid samples;
    all NaN when the mask has no valid sample (see :mod:`ppokit.objectives.degenerate`).

    Without a mask the per-sample columns are reduced in one call, and the ESS is computed
    from ``w = exp(log r - max log r)`` (in ``(0, 1]``, so neither ``r`` nor ``r^2``
    overflows): ``ESS = mean(w)^2 / mean(w^2)``, equal to the log-space formula.

    Args:
        log_weight: ``[*B, 1]`` log importance weights.
        clip_epsilon: the PPO clip range, or None for no ``clip_fraction``.
        mask: optional validity mask broadcastable to ``log_weight``.
        batch_ndim: how many leading dims of ``log_weight`` are samples; see
            :func:`effective_sample_size` (None: all but the trailing 1).

    Example:
        >>> stats = ratio_diagnostics(torch.tensor([[0.0], [0.5]]), 0.2)
        >>> round(float(stats["clip_fraction"]), 4), round(float(stats["max_ratio"]), 4)
        (0.5, 1.6487)
    """
    lw = log_weight.detach()
    if mask is not None:
        ratio = lw.exp()
        valid = mask.expand_as(ratio)
        out = {
            "kl_approx": masked_mean(-lw, mask),
            "ESS": effective_sample_size(lw, mask),
            # where(), not ratio[valid]: no data-dependent shape (torch.compile-friendly)
            "max_ratio": torch.where(valid, ratio, torch.full_like(ratio, -math.inf)).max(),
            "mean_ratio": masked_mean(ratio, mask),
        }
        if clip_epsilon is not None:
            out["clip_fraction"] = clip_fraction(lw, clip_epsilon, mask)
        return nan_without_samples(out, mask, list(out))  # no valid sample: NaN, not -inf
    top = lw.max()
    w = (lw - top).exp()
    columns = [lw, w, w * w]
    if clip_epsilon is not None:
        low, high = log_clip_bounds(clip_epsilon)
        columns.append(lw.clamp(low, high).ne(lw).to(lw.dtype))
    means = torch.stack(columns).reshape(len(columns), -1).mean(1).unbind()
    max_ratio = top.exp()
    out = {
        "kl_approx": -means[0],
        "ESS": means[1] * means[1] / means[2],
        "max_ratio": max_ratio,
        "mean_ratio": means[1] * max_ratio,
    }
    if clip_epsilon is not None:
        out["clip_fraction"] = means[3]
    if batch_ndim is not None and lw.dim() - 1 > batch_ndim:  # per-token log-probs
        out["ESS"] = effective_sample_size(lw, batch_ndim=batch_ndim)
    return out


def effective_sample_size(
    log_weight: torch.Tensor, mask: torch.Tensor | None = None, *, batch_ndim: int | None = None
) -> torch.Tensor:
    """Normalised effective sample size of the importance weights, in (0, 1].

    ``ESS = (sum w)^2 / sum w^2`` computed in log space, divided by the number of valid
    samples: 1 when the policy has not moved, small when a few samples dominate.

    ``batch_ndim`` (no mask) says how many leading dims of ``log_weight`` ``[*B, *T, 1]`` are
    samples; the dims ``[*T]`` between them and the trailing 1 (per-token or per-agent
    log-probs) are kept, one ESS each: ``[*T]``, TorchRL's layout, which takes the ESS over
    the data's first dim. None: every dim is a sample dim (a 0-d result).

    Example:
        >>> effective_sample_size(torch.zeros(4, 1))
        tensor(1.)
        >>> # 2 samples x 3 tokens; token 0 has weights (1, e^-inf = 0): ESS 1/2
        >>> lw = torch.tensor([[0.0, 0.0, 0.0], [-math.inf, 0.0, 0.0]]).unsqueeze(-1)
        >>> effective_sample_size(lw, batch_ndim=1)
        tensor([0.5000, 1.0000, 1.0000])
    """
    lw = log_weight.detach()
    if batch_ndim is not None and mask is None and lw.dim() - 1 > batch_ndim:
        lw = lw.squeeze(-1).flatten(0, batch_ndim - 1)  # [N, *T]
    else:
        lw = lw.reshape(-1)
    count: int | torch.Tensor = lw.shape[0]
    if mask is not None:
        flat_mask = mask.expand_as(log_weight).reshape(-1)
        lw = torch.where(flat_mask, lw, torch.full_like(lw, -math.inf))
        count = flat_mask.sum().clamp_min(1)
    return (2 * lw.logsumexp(0) - (2 * lw).logsumexp(0)).exp() / count
