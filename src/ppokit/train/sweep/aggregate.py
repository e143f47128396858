"""A sweep's aggregate: every seed's final evaluation and the figures over seeds, as files.

:func:`aggregate_sweep` reads the ``summary.json`` of each seed listed in ``sweep.json`` and
writes ``aggregate.json`` (the numbers) and ``aggregate.md`` (a table to read or paste). A
seed's score is its final deterministic evaluation return mean (``eval_return_mean``); the
figures over seeds come from :func:`ppokit.train.sweep.stats.summarize_scores`. Seeds without
a summary (not finished, failed) or without an evaluation are listed as missing, never
silently dropped.

Example:
    >>> import json, tempfile
    >>> from ppokit.train.sweep.plan import SweepRecord, write_sweep_record
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = write_sweep_record(d, SweepRecord("CartPole-v1", (), (1, 2)))
    >>> for seed, ret in ((1, 480.0), (2, 500.0)):
    ...     (d / f"seed-{seed}").mkdir()
    ...     s = {"eval_return_mean": ret, "eval_return_std": 1.0, "eval_episodes": 5,
    ...          "env_steps": 1000}
    ...     _ = (d / f"seed-{seed}" / "summary.json").write_text(json.dumps(s))
    >>> agg = aggregate_sweep(d)
    >>> agg["mean"], agg["min"], sorted(p.name for p in d.glob("aggregate.*"))
    (490.0, {'seed': 1, 'score': 480.0}, ['aggregate.json', 'aggregate.md'])
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ppokit.train.records.provenance import read_sessions
from ppokit.train.records.rundir import atomic_write_text
from ppokit.train.sweep.plan import read_sweep_record, seed_run_dir
from ppokit.train.sweep.stats import summarize_scores

__all__ = ["aggregate_sweep", "format_aggregate", "read_sweep_scores"]

#: the per-seed score: the final deterministic evaluation's mean return (summary.json)
SCORE = "eval_return_mean"


def _seed_entry(run: Path) -> tuple[dict[str, Any] | None, str]:
    """``(entry, "")`` for a run with a final evaluation, else ``(None, why it is missing)``."""
    path = run / "summary.json"
    if not path.is_file():
        return None, "no summary.json (not finished, or failed: see its log)"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"summary.json unreadable ({err})"
    if not isinstance(summary, dict) or SCORE not in summary:
        return None, "no final evaluation in summary.json (trained with --eval-episodes 0)"
    return {
        "eval_return_mean": float(summary[SCORE]),
        "eval_return_std": float(summary.get("eval_return_std", math.nan)),
        "eval_episodes": int(summary.get("eval_episodes", 0)),
        "env_steps": int(summary.get("env_steps", 0)),
        "code": _code_of(run),
    }, ""


def _code_of(run: Path) -> list[str]:
    """The ppokit code each session of ``run`` ran on, in order, repeats dropped.

    A short commit (``+dirty`` with uncommitted changes), else ``ppokit <version>`` off git;
    [] for a run written before ppokit kept ``provenance.jsonl``.
    """
    labels: list[str] = []
    for session in read_sessions(run):
        code = session.get("code") or {}
        commit = code.get("commit")
        label = (
            f"{commit[:7]}{'+dirty' if code.get('dirty') else ''}"
            if isinstance(commit, str)
            else f"ppokit {code.get('ppokit', '?')}"
        )
        if not labels or labels[-1] != label:
            labels.append(label)
    return labels


def read_sweep_scores(sweep_dir: str | Path) -> dict[str, Any]:
    """Read a sweep's per-seed final evaluations without writing anything.

    Returns:
        ``env``, ``train_args``, ``score``, ``seeds`` (one entry per finished seed, with the
        ``code`` its sessions ran on, from each run's ``provenance.jsonl``), ``missing`` (seed
        and reason) and ``scores`` (seed -> score).

    Raises:
        FileNotFoundError: ``sweep_dir`` has no ``sweep.json``.
        ValueError: a damaged ``sweep.json``, or no seed has a final evaluation.
    """
    root = Path(sweep_dir)
    record = read_sweep_record(root)
    if record is None:
        raise FileNotFoundError(
            f"{str(root)!r} is not a sweep dir (no sweep.json); sweep dirs are made by "
            "`ppokit sweep --env ID --seeds 1-5 --sweep-dir DIR`."
        )
    seeds, missing, scores = [], [], {}
    for seed in record.seeds:
        entry, why = _seed_entry(seed_run_dir(root, seed))
        if entry is None:
            missing.append({"seed": seed, "reason": why})
            continue
        seeds.append({"seed": seed, "run_dir": f"seed-{seed}", **entry})
        scores[seed] = entry[SCORE]
    if not scores:
        reasons = "; ".join(f"seed {m['seed']}: {m['reason']}" for m in missing)
        raise ValueError(f"No seed of {str(root)!r} has a final evaluation yet ({reasons}).")
    return {
        "env": record.env,
        "train_args": list(record.train_args),
        "score": SCORE,
        "seeds": seeds,
        "missing": missing,
        "scores": scores,
    }


def aggregate_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """Compute the aggregate of ``sweep_dir`` and write ``aggregate.json`` and ``aggregate.md``.

    Returns:
        :func:`read_sweep_scores`'s entries but ``scores``, and the figures of
        :func:`~ppokit.train.sweep.stats.summarize_scores` (``n``, ``mean``, ``std``, ``iqm``,
        ``iqm_ci95``, ``median``, ``min``, ``max``, ``bootstrap``).

    Raises:
        FileNotFoundError: ``sweep_dir`` has no ``sweep.json``.
        ValueError: a damaged ``sweep.json``, or no seed has a final evaluation.
    """
    root = Path(sweep_dir)
    read = read_sweep_scores(root)
    scores = read.pop("scores")
    result = {**read, **summarize_scores(scores)}
    atomic_write_text(root / "aggregate.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(root / "aggregate.md", format_aggregate(result))
    return result


def _num(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def format_aggregate(agg: dict[str, Any]) -> str:
    """The aggregate as Markdown: a table of the seeds, then the figures over seeds.

    Example:
        >>> agg = {"env": "X-v0", "train_args": [], "seeds": [{"seed": 1, "eval_return_mean":
        ...     2.0, "eval_return_std": 0.0, "eval_episodes": 3, "env_steps": 10}],
        ...     "missing": [], "n": 1, "mean": 2.0, "std": None, "iqm": 2.0,
        ...     "iqm_ci95": None, "median": 2.0, "min": {"seed": 1, "score": 2.0}}
        >>> print(format_aggregate(agg).splitlines()[-1])
        - worst seed: 1 (2.0)
    """
    flags = " ".join(agg["train_args"]) or "(preset)"
    lines = [
        f"# Sweep of {agg['env']}: {agg['n']} seeds",
        "",
        f"Train flags: `{flags}`. Score: final deterministic evaluation, mean return per seed.",
        "",
        "| seed | eval return (mean ± std over episodes) | episodes | env steps | code |",
        "|---:|---:|---:|---:|---|",
    ]
    for s in agg["seeds"]:
        lines.append(
            f"| {s['seed']} | {_num(s['eval_return_mean'])} ± {_num(s['eval_return_std'])} "
            f"| {s['eval_episodes']} | {s['env_steps']:,} | {_code_text(s.get('code', []))} |"
        )
    for m in agg["missing"]:
        lines.append(f"| {m['seed']} | missing: {m['reason']} | | | |")
    ci = agg["iqm_ci95"]
    ci_text = (
        f"[{_num(ci[0])}, {_num(ci[1])}] (percentile bootstrap over seeds)"
        if ci is not None
        else "n/a (needs 2 seeds)"
    )
    lines += [
        "",
        f"- mean ± std over seeds: {_num(agg['mean'])} ± {_num(agg['std'])} (sample std)",
        f"- interquartile mean: {_num(agg['iqm'])}, 95% CI {ci_text}",
        f"- median: {_num(agg['median'])}",
        f"- worst seed: {agg['min']['seed']} ({_num(agg['min']['score'])})",
    ]
    codes = {tuple(s.get("code", [])) for s in agg["seeds"]}
    if len(codes) > 1 or any(len(c) > 1 for c in codes):
        lines.append(
            "- code: the seeds did not all run on the same code from start to end "
            "(column `code`); compare them with care"
        )
    return "\n".join(lines) + "\n"


def _code_text(labels: list[str]) -> str:
    """``a -> b`` for a run resumed on other code; ``n/a`` without provenance."""
    return " → ".join(f"`{c}`" for c in labels) if labels else "n/a"
