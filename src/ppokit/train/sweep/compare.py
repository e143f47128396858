"""Comparing sweeps of one task: which settings are better, and how sure is that.

:func:`compare_sweeps` reads the final evaluations of several ``ppokit sweep`` directories of
the same environment (the first is the baseline) and gives, for each, the interquartile mean
with its bootstrap 95% CI, mean ± std and the worst seed, and for each other sweep the
probability of improvement over the baseline, P(X > baseline), with its bootstrap 95% CI
(Agarwal et al. 2021: an interval on how often a seed of X beats a seed of the baseline,
rather than a p-value). An interval that lies above 0.5 says X is better on this task; one
that straddles 0.5 says the seeds cannot tell. It also lists the settings whose resolved
values differ between the sweeps (from each sweep's ``config.json``: a preset may have changed
since a sweep ran, so its flags alone do not say what it trained with). Nothing is written:
``ppokit sweep-compare`` prints :func:`format_comparison` and draws the curves.

Example:
    >>> import json, tempfile
    >>> from ppokit.train.sweep.plan import SweepRecord, write_sweep_record
    >>> def sweep(root, scores):
    ...     _ = write_sweep_record(root, SweepRecord("X-v0", (), tuple(range(1, 4))))
    ...     for seed, score in enumerate(scores, 1):
    ...         (root / f"seed-{seed}").mkdir()
    ...         s = {"eval_return_mean": score, "eval_episodes": 5, "env_steps": 100}
    ...         _ = (root / f"seed-{seed}" / "summary.json").write_text(json.dumps(s))
    ...     return root
    >>> tmp = Path(tempfile.mkdtemp())
    >>> a = sweep(tmp / "a", [1.0, 2.0, 3.0])
    >>> b = sweep(tmp / "b", [2.5, 4.0, 5.0])
    >>> cmp = compare_sweeps([a, b])
    >>> # pairs of (b, a): 2.5 beats 1 and 2, 4 and 5 beat all three: 8 of 9
    >>> round(cmp["sweeps"][1]["p_improvement"], 4)
    0.8889
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from ppokit.train.sweep.aggregate import read_sweep_scores
from ppokit.train.sweep.settings import resolved_config, setting_differences
from ppokit.train.sweep.stats import (
    BOOTSTRAP,
    improvement_ci,
    probability_of_improvement,
    summarize_scores,
)

__all__ = ["compare_sweeps", "format_comparison"]


def _values(scores: dict[int, float]) -> np.ndarray:
    return np.array([scores[s] for s in sorted(scores)], dtype=float)


def compare_sweeps(sweep_dirs: list[str | Path]) -> dict[str, Any]:
    """The figures of each sweep and each one's probability of improvement over the first.

    Args:
        sweep_dirs: two or more sweep dirs of the same environment; the first is the baseline.

    Returns:
        ``env``, ``baseline`` (its directory name), ``score``, ``bootstrap`` (the settings)
        and ``sweeps``: per sweep its ``dir``, ``name``, ``train_args``, ``missing`` seeds,
        median ``env_steps`` of its seeds, :func:`~ppokit.train.sweep.stats.summarize_scores`'
        figures, and (all but the baseline) ``p_improvement`` with ``p_improvement_ci95``
        (``None`` when either side has fewer than 2 seeds); ``differences``: the
        :func:`~ppokit.train.sweep.settings.setting_differences` of the sweeps' resolved
        configs.

    Raises:
        ValueError: fewer than two dirs, sweeps of different environments, or a sweep without
            any finished seed.
        FileNotFoundError: a directory that is not a sweep dir.
    """
    dirs = [Path(d) for d in sweep_dirs]
    if len(dirs) < 2:
        raise ValueError(
            f"Comparing needs at least two sweep dirs (the baseline first), got {len(dirs)}."
        )
    reads = [read_sweep_scores(d) for d in dirs]
    envs = {r["env"] for r in reads}
    if len(envs) > 1:
        listing = ", ".join(f"{d.name} is {r['env']}" for d, r in zip(dirs, reads))
        raise ValueError(
            f"Sweeps of different tasks are not comparable by score ({listing}); give "
            "sweep dirs of one environment."
        )
    base = _values(reads[0]["scores"])
    rows = []
    for i, (path, read) in enumerate(zip(dirs, reads)):
        values = _values(read["scores"])
        row: dict[str, Any] = {
            "dir": str(path),
            "name": path.name,
            "train_args": read["train_args"],
            "missing": [m["seed"] for m in read["missing"]],
            "env_steps": median(s["env_steps"] for s in read["seeds"]),
            **summarize_scores(read["scores"]),
        }
        row.pop("bootstrap")
        if i > 0:
            row["p_improvement"] = probability_of_improvement(values, base)
            many = min(len(values), len(base)) > 1
            row["p_improvement_ci95"] = list(improvement_ci(values, base)) if many else None
        rows.append(row)
    return {
        "env": reads[0]["env"],
        "baseline": dirs[0].name,
        "score": reads[0]["score"],
        "bootstrap": dict(BOOTSTRAP),
        "sweeps": rows,
        "differences": setting_differences(
            [resolved_config(d, [s["seed"] for s in r["seeds"]]) for d, r in zip(dirs, reads)]
        ),
    }


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _interval(ci: list[float] | None, digits: int = 1) -> str:
    return "n/a" if ci is None else f"[{_num(ci[0], digits)}, {_num(ci[1], digits)}]"


def format_comparison(cmp: dict[str, Any]) -> str:
    """:func:`compare_sweeps`' result as Markdown: one row per sweep, then each one's flags.

    Example:
        >>> row = {"name": "a", "n": 1, "iqm": 2.0, "iqm_ci95": None, "mean": 2.0,
        ...        "std": None, "min": {"seed": 1, "score": 2.0}, "env_steps": 10,
        ...        "train_args": [], "missing": []}
        >>> text = format_comparison({"env": "X-v0", "baseline": "a", "sweeps": [row]})
        >>> text.splitlines()[4]
        '| a (baseline) | 1 | 10 | 2.0 n/a | 2.0 ± n/a | 1 (2.0) | |'
    """
    lines = [
        f"# {cmp['env']}: {len(cmp['sweeps'])} sweeps against {cmp['baseline']}",
        "",
        "| sweep | seeds | env steps | IQM [95% CI] | mean ± std | worst seed (score) "
        f"| P(better than {cmp['baseline']}) [95% CI] |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, row in enumerate(cmp["sweeps"]):
        name = f"{row['name']} (baseline)" if i == 0 else row["name"]
        better = (
            ""
            if i == 0
            else f"{_num(row['p_improvement'], 2)} {_interval(row['p_improvement_ci95'], 2)}"
        )
        lines.append(
            f"| {name} | {row['n']} | {row['env_steps']:,.0f} "
            f"| {_num(row['iqm'])} {_interval(row['iqm_ci95'])} "
            f"| {_num(row['mean'])} ± {_num(row['std'])} "
            f"| {row['min']['seed']} ({_num(row['min']['score'])}) | {better} |"
        )
    lines += ["", "Score: the final deterministic evaluation's mean return of each seed."]
    for row in cmp["sweeps"]:
        flags = " ".join(row["train_args"]) or "(preset)"
        missing = (
            f"; seeds without a final evaluation: {', '.join(map(str, row['missing']))}"
            if row["missing"]
            else ""
        )
        lines.append(f"- {row['name']}: `{flags}`{missing}")
    differences = cmp.get("differences") or {}
    if differences:
        names = [row["name"] for row in cmp["sweeps"]]
        lines += [
            "",
            "Settings that differ (each sweep's first seed's `config.json`, as resolved):",
            "",
            "| setting | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for field, values in differences.items():
            cells = " | ".join("?" if v is None else json.dumps(v) for v in values)
            lines.append(f"| `{field}` | {cells} |")
    return "\n".join(lines) + "\n"
