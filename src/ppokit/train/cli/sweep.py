"""``ppokit sweep``, ``sweep-aggregate`` and ``sweep-compare``: one training per seed, the
aggregate, and the comparison of several sweeps of one task.

``ppokit sweep --env ID --seeds 1-5 [--jobs N] [--sweep-dir DIR] [train flags ...]`` checks
everything before any training starts: its own options, then the train flags, through the
same parser as ``ppokit train`` (a flag that ``ppokit train`` would refuse launches nothing).
It then runs the seeds (:mod:`ppokit.train.sweep.runner`), writes the aggregate
(:mod:`ppokit.train.sweep.aggregate`) and the learning-curve plot. Rerun with the same command,
it skips finished seeds and resumes interrupted ones (:mod:`ppokit.train.sweep.plan`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ppokit.train.cli.arguments import UsageError, resolve_train_config
from ppokit.train.records.rundir import RunDirError, holds_run, lock_run_dir, unlock_run_dir
from ppokit.train.settings.config import config_to_dict
from ppokit.train.sweep.plan import (
    SeedJob,
    SweepRecord,
    merge_sweep_record,
    parse_seeds,
    plan_seeds,
    seed_run_dir,
    write_sweep_record,
)
from ppokit.train.sweep.settings import resolved_config, setting_differences, settings_as_flags

__all__ = ["run_sweep", "run_sweep_aggregate", "run_sweep_compare"]

#: train flags the sweep sets itself for every seed
_OWNED_FLAGS = ("--seed", "--run-dir", "--resume", "--overwrite", "--no-overwrite")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppokit sweep",
        allow_abbrev=False,  # an abbreviation could swallow a train flag (--see -> --seeds)
        description=(
            "Train one run per seed (as `ppokit train` subprocesses, single-threaded, N at a "
            "time) into DIR/seed-<k>, then write DIR/aggregate.json, DIR/aggregate.md (per-seed "
            "final eval, mean ± std, interquartile mean with a bootstrap 95% CI, worst seed) "
            "and DIR/learning_curve.png. Rerun the same command to resume: finished seeds are "
            "skipped, interrupted ones resumed."
        ),
        epilog=(
            "Every other flag is a `ppokit train` flag, passed to each seed unchanged (see "
            "`ppokit train --help`); --seed, --run-dir, --resume and --overwrite are the "
            "sweep's own."
        ),
    )
    parser.add_argument("--env", help="Gymnasium id to train on (picks the preset).")
    parser.add_argument("--seeds", default="1-5", help="seeds: 1-5, 1,3,7 or 1-3,10 (default 1-5)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once (default 1)")
    parser.add_argument(
        "--sweep-dir", type=Path, help="directory of the sweep (default sweeps/<env>)"
    )
    parser.add_argument(
        "--aggregate-only",
        action="store_true",
        help="only recompute the aggregate of --sweep-dir (as `ppokit sweep-aggregate DIR`)",
    )
    return parser


def _default_sweep_dir(env: str) -> Path:
    return Path("sweeps") / env.replace("/", "_").replace(":", "_")


def _check_train_args(
    env: str, seeds: list[int], train_args: list[str], sweep_dir: Path
) -> dict[str, Any]:
    """Refuse the train flags the sweep owns and run the rest through ``ppokit train``'s
    parser; returns the settings a new seed resolves to (``config.json``'s values)."""
    for arg in train_args:
        flag = arg.split("=", 1)[0]
        if flag in _OWNED_FLAGS:
            raise UsageError(
                f"ppokit sweep sets {flag} itself (seed k trains with --seed k into "
                f"{sweep_dir}/seed-k and is resumed by rerunning the sweep); drop {arg!r}. "
                "To start a sweep over, remove its directory or pick another --sweep-dir."
            )
    # a run dir that holds no run: the check must not depend on the seeds' own run dirs
    probe = sweep_dir / ".train-flags-check"
    argv = ["--env", env, "--seed", str(seeds[0]), "--run-dir", str(probe), *train_args]
    try:
        cfg, _, _ = resolve_train_config(argv)
    except SystemExit as exc:  # the train parser printed why (an unknown flag, a bad value)
        if exc.code in (0, None):
            raise
        raise UsageError(
            f"the train flags {train_args} were refused by `ppokit train` (see above); "
            "nothing was launched."
        ) from None
    return config_to_dict(cfg)


def _check_same_settings(
    sweep_dir: Path, seeds: tuple[int, ...], planned: list[SeedJob], new: dict[str, Any]
) -> None:
    """Refuse to train new seeds whose settings differ from the seeds already in the dir.

    The train flags match (``sweep.json`` checked that), but the preset they apply over may
    have changed since; seeds that resume keep their saved settings and are not affected.
    """
    if not any(job.action in ("start", "restart") for job in planned):
        return
    # only run dirs ppokit wrote count: a config.json of another origin says nothing
    old = resolved_config(sweep_dir, [s for s in seeds if holds_run(seed_run_dir(sweep_dir, s))])
    differ = setting_differences([old, new]) if old is not None else {}
    if not differ:
        return
    changes = ", ".join(f"{k} {was!r} -> {now!r}" for k, (was, now) in differ.items())
    pin = settings_as_flags({k: was for k, (was, _) in differ.items()})
    raise UsageError(
        f"sweep dir {str(sweep_dir)!r}: its seeds trained with other settings than these flags "
        f"resolve to now ({changes}); the preset or ppokit's defaults changed since, and "
        "seeds with other settings are not comparable. Pick another --sweep-dir for the new "
        "settings; to train more seeds with the old ones, sweep into another --sweep-dir with "
        f"{pin} added to these flags."
    )


def run_sweep(argv: list[str]) -> int:
    """``ppokit sweep``: returns 0 when every seed finished, 1 when one failed, 130 when
    interrupted."""
    args, train_args = _parser().parse_known_args(argv)
    if args.aggregate_only:
        if args.sweep_dir is None:
            raise UsageError("--aggregate-only needs --sweep-dir DIR (the sweep to aggregate).")
        return run_sweep_aggregate([str(args.sweep_dir)])
    if args.env is None:
        raise UsageError("ppokit sweep needs --env ID, e.g. --env CartPole-v1.")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.jobs < 1:
        raise UsageError(
            f"--jobs must be a positive number of seeds trained at once, got {args.jobs}; "
            "e.g. --jobs 2 on a 2-core machine."
        )
    sweep_dir: Path = args.sweep_dir or _default_sweep_dir(args.env)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise UsageError(f"--sweep-dir {str(sweep_dir)!r} is a file; pick another --sweep-dir.")
    new_settings = _check_train_args(args.env, seeds, train_args, sweep_dir)
    try:
        lock_run_dir(sweep_dir)
    except (RunDirError, OSError) as err:
        raise UsageError(f"sweep dir: {err}") from None
    try:
        planned = plan_seeds(sweep_dir, args.env, seeds, tuple(train_args))
        # the recorded flags first (another sweep altogether), then the settings they resolve
        # to; sweep.json is written only once both agree
        try:
            record = merge_sweep_record(
                sweep_dir, SweepRecord(args.env, tuple(train_args), tuple(seeds))
            )
            _check_same_settings(sweep_dir, record.seeds, planned, new_settings)
            write_sweep_record(sweep_dir, record)
        except (ValueError, OSError) as err:  # another sweep's dir, or an unreadable record
            raise UsageError(str(err)) from None
        return _run(sweep_dir, args.env, planned, args.jobs, int(new_settings["total_steps"]))
    finally:
        unlock_run_dir(sweep_dir)


def _run(sweep_dir: Path, env: str, planned: list[SeedJob], jobs: int, steps: int) -> int:
    from ppokit.train.sweep.runner import run_seed_jobs

    todo = sum(j.action != "skip" for j in planned)
    print(
        f"ppokit sweep: {env}, seeds {','.join(str(j.seed) for j in planned)} -> {sweep_dir} "
        f"({todo} to train, {jobs} at a time)",
        flush=True,
    )
    outcomes = run_seed_jobs(planned, max_parallel=jobs, steps_per_seed=steps)
    failed = [o for o in outcomes if not o.ok and not o.interrupted]
    stopped = len(outcomes) < len(planned) or any(o.interrupted for o in outcomes)
    if any(o.ok for o in outcomes):
        _report(sweep_dir)
    for o in failed:
        print(
            f"ppokit sweep: seed {o.job.seed} failed (exit code {o.returncode}); "
            f"its log: {o.job.log}",
            flush=True,
        )
    if stopped:
        print(f"ppokit sweep: interrupted; rerun the same command to resume {sweep_dir}.")
        return 130
    return 1 if failed else 0


def _report(sweep_dir: Path) -> dict[str, Any] | None:
    """Write the aggregate and the plot, print the figures; a problem is reported, not raised."""
    from ppokit.train.sweep.aggregate import aggregate_sweep, format_aggregate

    try:
        agg = aggregate_sweep(sweep_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"ppokit sweep: no aggregate: {err}", flush=True)
        return None
    print("\n" + format_aggregate(agg), flush=True)
    print(f"ppokit sweep: aggregate in {sweep_dir / 'aggregate.json'} and aggregate.md")
    from ppokit.train.records.plot import plot_runs

    try:
        print(f"ppokit sweep: plot {plot_runs([sweep_dir])}")
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"ppokit sweep: no plot: {err.args[0] if err.args else err}")
    return agg


def run_sweep_aggregate(argv: list[str]) -> int:
    """``ppokit sweep-aggregate DIR``: recompute ``aggregate.json``/``.md`` of a sweep dir."""
    parser = argparse.ArgumentParser(
        prog="ppokit sweep-aggregate",
        description="Recompute DIR/aggregate.json and DIR/aggregate.md from the seeds' "
        "summary.json files.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep's directory")
    args = parser.parse_args(argv)
    from ppokit.train.sweep.aggregate import aggregate_sweep, format_aggregate

    try:
        agg = aggregate_sweep(args.sweep_dir)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    print(format_aggregate(agg), end="")
    return 0


def run_sweep_compare(argv: list[str]) -> int:
    """``ppokit sweep-compare BASE OTHER [...]``: the sweeps' figures side by side, each one's
    probability of improvement over BASE, and their curves on one plot."""
    parser = argparse.ArgumentParser(
        prog="ppokit sweep-compare",
        description="Compare sweeps of one task (the first is the baseline): IQM with its "
        "bootstrap 95% CI, mean ± std and worst seed of each, the probability that a seed of "
        "each beats a seed of the baseline with its 95% CI, and the mean curves with their "
        "bands on one plot. Reads the sweeps' summary.json files; writes only --out/--json.",
    )
    parser.add_argument("sweep_dirs", type=Path, nargs="+", help="sweep dirs, baseline first")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("sweep-comparison.png"),
        help="PNG of the curves (default ./sweep-comparison.png)",
    )
    parser.add_argument("--no-plot", action="store_true", help="print the table only")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--metric", default="episode_return_mean", help="progress.csv column of the curves"
    )
    args = parser.parse_args(argv)
    from ppokit.train.sweep.compare import compare_sweeps, format_comparison

    try:
        cmp = compare_sweeps(args.sweep_dirs)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    print(format_comparison(cmp), end="")
    if args.json is not None:
        import json

        from ppokit.train.records.rundir import atomic_write_text

        atomic_write_text(args.json, json.dumps(cmp, indent=2) + "\n")
        print(f"figures: {args.json}")
    if not args.no_plot:
        from ppokit.train.records.plot import plot_sweep_comparison

        try:
            out = plot_sweep_comparison(args.sweep_dirs, out=args.out, metric=args.metric)
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise UsageError(str(err.args[0] if err.args else err)) from None
        print(f"plot: {out}")
    return 0
