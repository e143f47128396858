"""Statistics over seeds: mean, sample std, interquartile mean and bootstrap confidence intervals.

A handful of seeds is a small sample from a wide, often skewed distribution of outcomes, so a
bare mean says little (Henderson et al. 2018, "Deep RL that Matters"). Following Agarwal et al.
2021 ("Deep RL at the Edge of the Statistical Precipice", the rliable library) the sweep reports
the interquartile mean (IQM: the mean of the middle 50% of the scores, robust to one runaway
seed yet using more of the data than the median) with a percentile bootstrap confidence interval
over seeds. Both come from SciPy (``scipy.stats.trim_mean`` and ``scipy.stats.bootstrap``),
written once here and used by the aggregate files and the sweep plot alike.

Example:
    >>> import numpy as np
    >>> iqm(np.array([10.0, 20.0, 30.0, 40.0, 1000.0]))  # mean of 20, 30, 40
    30.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "BOOTSTRAP",
    "bootstrap_ci",
    "improvement_ci",
    "iqm",
    "mean_over_axis",
    "probability_of_improvement",
    "summarize_scores",
]

#: settings of every bootstrap of the sweep: fixed so that the same scores give the same interval
BOOTSTRAP: dict[str, Any] = {
    "method": "percentile",
    "confidence_level": 0.95,
    "n_resamples": 10_000,
    "seed": 0,
}


def iqm(values: np.ndarray, axis: int = -1) -> Any:
    """Interquartile mean: ``scipy.stats.trim_mean`` with 25% cut from each end along ``axis``.

    SciPy cuts ``int(0.25 * n)`` values from each end, so 4 or 5 seeds lose the lowest and the
    highest, while 2 or 3 seeds lose none (the IQM is then the plain mean), as in rliable.

    Args:
        values: scores, any shape; reduced along ``axis``.
        axis: the axis of the seeds.

    Returns:
        A float for 1-D input, else an array with ``axis`` removed.

    Example:
        >>> iqm(np.array([1.0, 2.0, 3.0, 4.0]))  # cuts 1 and 4: (2 + 3) / 2
        2.5
    """
    from scipy.stats import trim_mean

    out = trim_mean(values, 0.25, axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def mean_over_axis(values: np.ndarray, axis: int = -1) -> Any:
    """``np.mean`` along ``axis`` with :func:`iqm`'s signature (the statistic of the plot's band).

    Example:
        >>> mean_over_axis(np.array([[1.0, 3.0], [2.0, 6.0]]), axis=0).tolist()
        [1.5, 4.5]
    """
    return np.mean(values, axis=axis)


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[..., Any],
    *,
    axis: int = 0,
) -> tuple[Any, Any]:
    """Percentile bootstrap 95% confidence interval of ``statistic`` over the seeds on ``axis``.

    The resamples draw seeds with replacement (``scipy.stats.bootstrap``, settings in
    :data:`BOOTSTRAP`, a fixed generator seed so reruns agree).

    Args:
        values: scores with the seeds along ``axis``; ``[seeds]`` or ``[seeds, points]``.
        statistic: a vectorised reduction ``f(x, axis)``, e.g. :func:`iqm`.
        axis: the seeds' axis (at least 2 seeds).

    Returns:
        ``(low, high)``: floats for 1-D input, arrays over the other axes otherwise.

    Raises:
        ValueError: fewer than 2 seeds (an interval needs at least two).

    Example:
        >>> lo, hi = bootstrap_ci(np.array([100.0, 300.0, 200.0, 500.0, 50.0]), iqm)
        >>> bool(50.0 <= lo <= iqm(np.array([100.0, 300.0, 200.0, 500.0, 50.0])) <= hi <= 500)
        True
    """
    values = np.asarray(values, dtype=float)
    if values.shape[axis] < 2:
        raise ValueError(
            f"A bootstrap confidence interval needs at least 2 seeds, got "
            f"{values.shape[axis]}; run more seeds (e.g. --seeds 1-5)."
        )
    return _interval((values,), statistic, axis=axis)


def _interval(
    samples: tuple[np.ndarray, ...], statistic: Callable[..., Any], *, axis: int
) -> tuple[Any, Any]:
    """``scipy.stats.bootstrap`` with :data:`BOOTSTRAP`'s settings; each sample resampled on
    its own (unpaired)."""
    from scipy.stats import bootstrap

    res = bootstrap(
        samples,
        statistic,
        axis=axis,
        vectorized=True,
        paired=False,
        method=BOOTSTRAP["method"],
        confidence_level=BOOTSTRAP["confidence_level"],
        n_resamples=BOOTSTRAP["n_resamples"],
        rng=np.random.default_rng(BOOTSTRAP["seed"]),
    )
    low, high = res.confidence_interval.low, res.confidence_interval.high
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


def probability_of_improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> Any:
    """P(X > Y): the share of (x, y) seed pairs where ``x`` beats ``y``, a tie counting half.

    The Mann-Whitney U statistic over ``len(x) * len(y)``, the comparison Agarwal et al. 2021
    recommend between two algorithms: it asks how often one seed of X does better than one
    seed of Y, so one runaway seed cannot carry it.

    Args:
        x: scores of X, seeds along ``axis``.
        y: scores of Y, seeds along ``axis`` (another count is fine).
        axis: the seeds' axis (the bootstrap adds a leading axis of resamples).

    Example:
        >>> # pairs (3,1) (3,4) (3,5) (5,1) (5,4) (5,5): 1 + 0 + 0 + 1 + 1 + 1/2 = 3.5 of 6
        >>> round(probability_of_improvement(np.array([3.0, 5.0]), np.array([1.0, 4.0, 5.0])), 4)
        0.5833
    """
    xs = np.moveaxis(np.asarray(x, dtype=float), axis, -1)[..., :, None]
    ys = np.moveaxis(np.asarray(y, dtype=float), axis, -1)[..., None, :]
    wins = (xs > ys).mean(axis=(-2, -1)) + 0.5 * (xs == ys).mean(axis=(-2, -1))
    return float(wins) if np.ndim(wins) == 0 else wins


def improvement_ci(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of :func:`probability_of_improvement`, the seeds of ``x``
    and of ``y`` resampled independently (:data:`BOOTSTRAP`'s settings).

    Raises:
        ValueError: fewer than 2 seeds on either side.

    Example:
        >>> lo, hi = improvement_ci(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0, 3.0]))
        >>> (lo, hi)  # every seed of x beats every seed of y in every resample
        (1.0, 1.0)
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if min(len(xs), len(ys)) < 2:
        raise ValueError(
            f"A bootstrap confidence interval needs at least 2 seeds on each side, got "
            f"{len(xs)} and {len(ys)}; run more seeds (e.g. --seeds 1-5)."
        )
    low, high = _interval((xs, ys), probability_of_improvement, axis=-1)
    return float(low), float(high)


def summarize_scores(scores: dict[int, float]) -> dict[str, Any]:
    """The over-seeds figures of one score per seed.

    Args:
        scores: seed -> score (e.g. the final deterministic eval return mean of that seed).

    Returns:
        ``n``, ``mean``, ``std`` (sample std, ``ddof=1``; ``None`` for one seed), ``iqm``,
        ``iqm_ci95`` (``[low, high]``; ``None`` for one seed), ``median``, ``min`` and
        ``max`` (each ``{"seed", "score"}``) and the ``bootstrap`` settings.

    Raises:
        ValueError: no scores.

    Example:
        >>> s = summarize_scores({1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0, 5: 1000.0})
        >>> s["mean"], s["iqm"], s["min"]
        (220.0, 30.0, {'seed': 1, 'score': 10.0})
    """
    if not scores:
        raise ValueError("No finished seed to aggregate: every seed is missing its summary.")
    seeds = sorted(scores)
    values = np.array([scores[s] for s in seeds], dtype=float)
    low = int(np.argmin(values))
    high = int(np.argmax(values))
    many = len(values) > 1
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if many else None,
        "iqm": iqm(values),
        "iqm_ci95": list(bootstrap_ci(values, iqm)) if many else None,
        "median": float(np.median(values)),
        "min": {"seed": seeds[low], "score": float(values[low])},
        "max": {"seed": seeds[high], "score": float(values[high])},
        "bootstrap": dict(BOOTSTRAP, statistic="iqm"),
    }
