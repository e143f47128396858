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

__all__ = ["BOOTSTRAP", "bootstrap_ci", "iqm", "mean_over_axis", "summarize_scores"]

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
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if values.shape[axis] < 2:
        raise ValueError(
            f"A bootstrap confidence interval needs at least 2 seeds, got "
            f"{values.shape[axis]}; run more seeds (e.g. --seeds 1-5)."
        )
    res = bootstrap(
        (values,),
        statistic,
        axis=axis,
        vectorized=True,
        method=BOOTSTRAP["method"],
        confidence_level=BOOTSTRAP["confidence_level"],
        n_resamples=BOOTSTRAP["n_resamples"],
        rng=np.random.default_rng(BOOTSTRAP["seed"]),
    )
    low, high = res.confidence_interval.low, res.confidence_interval.high
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


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
