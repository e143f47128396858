"""Learning curves of one or more runs (``progress.csv``) to a PNG, headless (Agg).

Runs are grouped by environment id (from each run's ``config.json``); a sweep dir (made by
``ppokit sweep``, with a ``sweep.json``) stands for its seeds' run dirs and is a group of its
own. Every run is drawn as a thin line; a group of several runs (seeds) adds their mean,
interpolated on a common step grid, with a percentile-bootstrap 95% confidence band of that
mean over the seeds (:func:`ppokit.train.sweep.stats.bootstrap_ci`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ppokit.train.records.metrics import read_progress_csv
from ppokit.train.records.rundir import holds_run, record_written
from ppokit.train.sweep.plan import SWEEP_FILE, SweepRecord, read_sweep_record, seed_run_dir
from ppokit.train.sweep.stats import bootstrap_ci, mean_over_axis

__all__ = ["load_curve", "mean_band", "plot_runs", "plot_sweep_comparison", "seed_band"]


def load_curve(
    run_dir: str | Path, metric: str = "episode_return_mean"
) -> tuple[np.ndarray, np.ndarray]:
    """``(env_steps, values)`` of ``metric`` in ``run_dir/progress.csv`` (NaN rows dropped).

    Raises:
        FileNotFoundError: no progress.csv in ``run_dir``.
        KeyError: ``metric`` is not a column (the known columns are listed).
    """
    path = Path(run_dir) / "progress.csv"
    if not path.is_file():
        raise FileNotFoundError(f"No progress.csv in {str(run_dir)!r}: is it a ppokit run dir?")
    rows = read_progress_csv(path)
    if not rows:
        return np.zeros(0), np.zeros(0)
    if metric not in rows[0]:
        raise KeyError(f"{str(path)!r} has no column {metric!r}; columns: {sorted(rows[0])}")
    steps = np.array([r["env_steps"] for r in rows], dtype=float)
    values = np.array([r[metric] for r in rows], dtype=float)
    keep = ~np.isnan(values)
    return steps[keep], values[keep]


def _env_of(run_dir: Path) -> str:
    cfg = run_dir / "config.json"
    if cfg.is_file():
        return str(json.loads(cfg.read_text()).get("env", run_dir.name))
    return run_dir.name


def _sweep_of(path: Path) -> SweepRecord | None:
    """The record of the sweep dir ``path``; None for any other directory."""
    return read_sweep_record(path) if (path / SWEEP_FILE).is_file() else None


def _seed_runs(path: Path, record: SweepRecord) -> list[Path]:
    """The run dirs of the sweep's seeds that have a log."""
    runs = [seed_run_dir(path, s) for s in record.seeds]
    runs = [r for r in runs if (r / "progress.csv").is_file()]
    if not runs:
        raise FileNotFoundError(
            f"Sweep dir {str(path)!r} has no seed with a progress.csv yet; run the sweep first."
        )
    return runs


def _runs_of(path: Path) -> tuple[str | None, list[Path]]:
    """``(group label, run dirs)``: a sweep dir's seeds that have a log, or the run itself."""
    record = _sweep_of(path)
    if record is None:
        return None, [path]
    runs = _seed_runs(path, record)
    return f"{record.env} ({path.name}, {len(runs)} seeds)", runs


def mean_band(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds of ``curves`` ``[seeds, points]`` and its bootstrap 95% CI ``(low, high)``.

    Example:
        >>> curves = np.array([[0.0, 10.0], [2.0, 14.0], [1.0, 12.0]])
        >>> mean, low, high = mean_band(curves)
        >>> mean.tolist(), bool(np.all(low <= mean) and np.all(mean <= high))
        ([1.0, 12.0], True)
    """
    low, high = bootstrap_ci(curves, mean_over_axis, axis=0)
    return curves.mean(0), np.asarray(low), np.asarray(high)


def plot_runs(
    run_dirs: list[str | Path],
    *,
    out: str | Path | None = None,
    metric: str = "episode_return_mean",
) -> Path:
    """Write a PNG of ``metric`` vs env steps for ``run_dirs``; returns its path.

    A sweep dir among ``run_dirs`` is drawn as its seeds' runs with their mean and its 95%
    confidence band; the PNG goes to ``<first dir>/learning_curve.png`` unless ``out`` says.

    Example:
        >>> import tempfile
        >>> from ppokit.train.records.metrics import MetricsLogger
        >>> d = Path(tempfile.mkdtemp())
        >>> with MetricsLogger(d, tensorboard=False) as log:
        ...     for i in range(1, 4):
        ...         log.log({"episode_return_mean": 10.0 * i}, env_steps=100 * i,
        ...                 iteration=i, wall_seconds=0.0)
        >>> plot_runs([d]).name
        'learning_curve.png'
    """
    if not run_dirs:
        raise ValueError("plot_runs needs at least one run directory.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = [Path(d) for d in run_dirs]
    groups: dict[str, list[tuple[Path, np.ndarray, np.ndarray]]] = defaultdict(list)
    for path in dirs:
        label, members = _runs_of(path)
        for d in members:
            steps, values = load_curve(d, metric)
            groups[label or _env_of(d)].append((d, steps, values))
    if all(len(s) == 0 for runs in groups.values() for _, s, _ in runs):
        raise ValueError(
            f"Nothing to plot: the progress.csv of {', '.join(repr(str(d)) for d in dirs)} "
            f"{'has' if len(dirs) == 1 else 'have'} no {metric!r} values yet (no row logged, or "
            "no episode finished). Train longer, or pick another --metric."
        )
    n = len(groups)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    for ax, (env, runs) in zip(axes.flat, groups.items()):
        for i, (d, steps, values) in enumerate(runs):
            ax.plot(
                steps,
                values,
                lw=0.8,
                alpha=0.45 if len(runs) > 1 else 1.0,
                color=f"C{i % 10}",
                label=d.name,
            )
        band = seed_band([(s, v) for _, s, v in runs])
        if band is not None:
            grid, mean, low, high = band
            used = sum(len(steps) > 1 for _, steps, _ in runs)
            ax.plot(grid, mean, color="k", lw=2, label=f"mean of {used} runs")
            ax.fill_between(grid, low, high, color="k", alpha=0.15, label="95% CI of the mean")
        _finish_axes(ax, env, metric)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    out_path = Path(out) if out is not None else dirs[0] / "learning_curve.png"
    if out is None and holds_run(dirs[0]):
        record_written(dirs[0], "learning_curve.png")
    return _save(fig, out_path)


def seed_band(
    curves: list[tuple[np.ndarray, np.ndarray]], points: int = 200
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``(grid, mean, low, high)`` of several seeds' ``(steps, values)`` curves.

    The curves are interpolated on ``points`` steps over the range every one of them covers;
    :func:`mean_band` gives the mean and its band. None when fewer than two curves have two
    points or their ranges do not overlap.
    """
    usable = [(s, v) for s, v in curves if len(s) > 1]
    if len(usable) < 2:
        return None
    lo = max(s[0] for s, _ in usable)
    hi = min(s[-1] for s, _ in usable)
    if hi <= lo:
        return None
    grid = np.linspace(lo, hi, points)
    mean, low, high = mean_band(np.stack([np.interp(grid, s, v) for s, v in usable]))
    return grid, mean, low, high


def plot_sweep_comparison(
    sweep_dirs: list[str | Path], *, out: str | Path, metric: str = "episode_return_mean"
) -> Path:
    """One axes: each sweep's mean curve over its seeds with its 95% band, in its own colour.

    Args:
        sweep_dirs: sweep dirs (``ppokit sweep``), the first one the baseline.
        out: the PNG to write.
        metric: the ``progress.csv`` column.

    Raises:
        FileNotFoundError: a directory that is not a sweep dir, or a sweep without curves.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    envs = []
    for i, path in enumerate(Path(d) for d in sweep_dirs):
        record = _sweep_of(path)
        if record is None:
            raise FileNotFoundError(f"{str(path)!r} is not a sweep dir (no {SWEEP_FILE}).")
        envs.append(record.env)
        runs = _seed_runs(path, record)
        curves = [load_curve(r, metric) for r in runs]
        band = seed_band(curves)
        color = f"C{i % 10}"
        name = f"{path.name} ({len(runs)} seeds)"
        if band is None:  # one seed, or seeds without a common range: the first curve
            ax.plot(*curves[0], color=color, lw=1.5, label=name)
            continue
        grid, mean, low, high = band
        ax.plot(grid, mean, color=color, lw=2, label=name)
        ax.fill_between(grid, low, high, color=color, alpha=0.18)
    _finish_axes(ax, f"{' / '.join(dict.fromkeys(envs))}: mean over seeds, 95% CI band", metric)
    return _save(fig, Path(out))


def _finish_axes(ax: Any, title: str, metric: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig: Any, out_path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
