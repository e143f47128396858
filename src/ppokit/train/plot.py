"""Learning curves of one or more runs (``progress.csv``) to a PNG, headless (Agg).

Runs are grouped by environment id (from each run's ``config.json``). Every run is drawn as
a thin line; a group of several runs (seeds) adds its mean, interpolated on a common step
grid, with a band of one standard deviation.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ppokit.train.metrics import read_progress_csv
from ppokit.train.rundir import holds_run, record_written

__all__ = ["load_curve", "plot_runs"]


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


def plot_runs(
    run_dirs: list[str | Path],
    *,
    out: str | Path | None = None,
    metric: str = "episode_return_mean",
) -> Path:
    """Write a PNG of ``metric`` vs env steps for ``run_dirs``; returns its path.

    Example:
        >>> import tempfile
        >>> from ppokit.train.metrics import MetricsLogger
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
    for d in dirs:
        steps, values = load_curve(d, metric)
        groups[_env_of(d)].append((d, steps, values))
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
        usable = [(s, v) for _, s, v in runs if len(s) > 1]
        if len(usable) > 1:
            lo = max(s[0] for s, _ in usable)
            hi = min(s[-1] for s, _ in usable)
            if hi > lo:
                grid = np.linspace(lo, hi, 200)
                curves = np.stack([np.interp(grid, s, v) for s, v in usable])
                mean, std = curves.mean(0), curves.std(0)
                ax.plot(grid, mean, color="k", lw=2, label=f"mean of {len(usable)} runs")
                ax.fill_between(
                    grid, mean - std, mean + std, color="k", alpha=0.15, label="± 1 std"
                )
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    out_path = Path(out) if out is not None else dirs[0] / "learning_curve.png"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out is None and holds_run(dirs[0]):
        record_written(dirs[0], "learning_curve.png")
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
