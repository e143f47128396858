"""What a sweep does for each seed: the seed list, the sweep dir's record, skip/start/resume.

A sweep dir holds one run dir per seed side by side, a log per seed and the record of what
the sweep runs::

    DIR/sweep.json         env, the train flags, the seeds (written before any child starts)
    DIR/seed-<k>/          the run dir of seed k (config.json, progress.csv, checkpoints/, ...)
    DIR/logs/seed-<k>.log  what seed k's training printed (appended on every rerun)

Run again, a sweep looks at each seed's run dir: a ``summary.json`` means the run finished
(skipped); ``checkpoints/latest.pt`` without a summary means it was interrupted (resumed with
``ppokit train --resume``); a run dir ppokit wrote into that holds no checkpoint yet is started
over (``--overwrite``, which removes only ppokit's files); anything else starts afresh.

Example:
    >>> parse_seeds("1-3,7")
    [1, 2, 3, 7]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ppokit.train.records.rundir import atomic_write_text, holds_run

__all__ = [
    "MAX_SEED",
    "SWEEP_FILE",
    "SeedJob",
    "SweepRecord",
    "is_resumable",
    "merge_sweep_record",
    "parse_seeds",
    "plan_seeds",
    "read_sweep_record",
    "seed_log",
    "seed_run_dir",
    "write_sweep_record",
]

SWEEP_FILE = "sweep.json"
#: the largest seed a run accepts (TrainConfig.seed's range)
MAX_SEED = 2**32 - 1
Action = Literal["skip", "start", "restart", "resume"]


def parse_seeds(spec: str) -> list[int]:
    """The seeds of a spec such as ``"1-5"``, ``"1,3,7"`` or ``"1-3,10"``, in the given order.

    Raises:
        ValueError: an empty item, a non-integer, a descending range, a repeated seed or a seed
            outside ``[0, 2**32 - 1]``; the message says which item and how to write it.

    Example:
        >>> parse_seeds("4,1-2")
        [4, 1, 2]
        >>> parse_seeds("5-1")
        Traceback (most recent call last):
        ...
        ValueError: --seeds '5-1': the range 5-1 goes down; write it low-high, e.g. 1-5.
    """
    seeds: list[int] = []
    for item in spec.split(","):
        item = item.strip()
        low_text, dash, high_text = item.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise ValueError(
                f"--seeds {spec!r}: {item!r} is not a seed or a range; expected integers and "
                "low-high ranges separated by commas, e.g. 1-5 or 1,3,7."
            ) from None
        if high < low:
            raise ValueError(
                f"--seeds {spec!r}: the range {item} goes down; write it low-high, "
                f"e.g. {high}-{low}."
            )
        for seed in (low, high):
            if not 0 <= seed <= MAX_SEED:
                raise ValueError(f"--seeds {spec!r}: seed {seed} is outside [0, {MAX_SEED}].")
        for seed in range(low, high + 1):
            if seed in seeds:
                raise ValueError(f"--seeds {spec!r}: seed {seed} is listed twice.")
            seeds.append(seed)
    return seeds


def seed_run_dir(sweep_dir: Path, seed: int) -> Path:
    """The run dir of ``seed`` inside ``sweep_dir``: ``sweep_dir/seed-<seed>``."""
    return sweep_dir / f"seed-{seed}"


def is_resumable(run: Path) -> bool:
    """Whether the next run of the sweep resumes ``run`` (a checkpoint and its saved config)."""
    return (run / "checkpoints" / "latest.pt").is_file() and (run / "config.json").is_file()


def seed_log(sweep_dir: Path, seed: int) -> Path:
    """The log file of ``seed``'s training: ``sweep_dir/logs/seed-<seed>.log``."""
    return sweep_dir / "logs" / f"seed-{seed}.log"


@dataclass(frozen=True)
class SweepRecord:
    """What ``sweep.json`` holds: the task, the train flags passed through, every seed run."""

    env: str
    train_args: tuple[str, ...]
    seeds: tuple[int, ...]

    def to_json(self) -> str:
        """The record as ``sweep.json``'s text."""
        data = {"env": self.env, "train_args": list(self.train_args), "seeds": list(self.seeds)}
        return json.dumps(data, indent=2) + "\n"


def read_sweep_record(sweep_dir: Path) -> SweepRecord | None:
    """The record in ``sweep_dir/sweep.json``, or ``None`` when there is none.

    Raises:
        ValueError: the file is not a sweep record (damaged or not written by ppokit).
    """
    path = sweep_dir / SWEEP_FILE
    if not path.is_file():
        return None
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        return SweepRecord(
            env=str(data["env"]),
            train_args=tuple(str(a) for a in data["train_args"]),
            seeds=tuple(int(s) for s in data["seeds"]),
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{str(path)!r} is not a readable ppokit sweep record ({type(err).__name__}: "
            f"{err}); restore it or pick another --sweep-dir."
        ) from None


def merge_sweep_record(sweep_dir: Path, record: SweepRecord) -> SweepRecord:
    """``record`` with the seeds of the earlier record of the same sweep in ``sweep_dir``
    (first, in their order); nothing is written.

    Raises:
        ValueError: ``sweep_dir`` holds a sweep of another env or other train flags (its
            seeds would not be comparable).
    """
    old = read_sweep_record(sweep_dir)
    if old is not None:
        if (old.env, old.train_args) != (record.env, record.train_args):
            raise ValueError(
                f"sweep dir {str(sweep_dir)!r} holds a sweep of --env {old.env} with the train "
                f"flags {list(old.train_args)}; this command gives --env {record.env} with "
                f"{list(record.train_args)}. Seeds trained with other settings are not "
                "comparable: repeat the original flags to resume or extend that sweep, or "
                "pick another --sweep-dir."
            )
        merged = old.seeds + tuple(s for s in record.seeds if s not in old.seeds)
        record = SweepRecord(record.env, record.train_args, merged)
    return record


def write_sweep_record(sweep_dir: Path, record: SweepRecord) -> SweepRecord:
    """Write ``sweep.json``, merging the seeds of an earlier record of the same sweep
    (:func:`merge_sweep_record`).

    Raises:
        ValueError: ``sweep_dir`` holds a sweep of another env or other train flags.
    """
    record = merge_sweep_record(sweep_dir, record)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / SWEEP_FILE, record.to_json())
    return record


@dataclass(frozen=True)
class SeedJob:
    """One seed of a sweep: what to do and the ``ppokit train`` arguments that do it."""

    seed: int
    action: Action
    run_dir: Path
    log: Path
    train_argv: tuple[str, ...]
    """Arguments after ``ppokit train`` (empty for ``skip``)."""


def plan_seeds(
    sweep_dir: Path, env: str, seeds: list[int], train_args: tuple[str, ...]
) -> list[SeedJob]:
    """Decide, from each seed's run dir, whether to skip, start, restart or resume it.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> (d / "seed-1").mkdir(); _ = (d / "seed-1" / "summary.json").write_text("{}")
        >>> [(j.seed, j.action) for j in plan_seeds(d, "CartPole-v1", [1, 2], ())]
        [(1, 'skip'), (2, 'start')]
    """
    jobs = []
    for seed in seeds:
        run = seed_run_dir(sweep_dir, seed)
        action: Action
        argv: tuple[str, ...]
        if (run / "summary.json").is_file():
            action, argv = "skip", ()
        elif is_resumable(run):
            # the saved config carries the flags: --resume alone continues the same run
            action, argv = "resume", ("--resume", str(run), "--no-progress")
        else:
            # killed before its first checkpoint: its files are ppokit's, start it over
            action = "restart" if holds_run(run) else "start"
            argv = (
                "--env",
                env,
                "--seed",
                str(seed),
                "--run-dir",
                str(run),
                "--no-progress",
                *train_args,
                *(("--overwrite",) if action == "restart" else ()),
            )
        jobs.append(SeedJob(seed, action, run, seed_log(sweep_dir, seed), tuple(argv)))
    return jobs
