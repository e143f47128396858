"""Run the seeds of a sweep as ``ppokit train`` subprocesses, a few at a time.

Each seed trains in its own process (its own interpreter, so one crash or memory blow-up
touches no other seed), single-threaded (``OMP_NUM_THREADS=1``: small MLPs gain nothing from
more threads and parallel seeds would fight over the cores), with its output in its log file.
A failing seed is reported and the others go on. Ctrl-C or SIGTERM stops the sweep: the
running seeds are asked to save a checkpoint (SIGTERM, which a training process turns into
"checkpoint and stop") and waited for, so a rerun resumes them.

Progress is one ``tqdm`` bar over the environment steps of all seeds (read from each run's
``progress.csv``), shown on a terminal only; every start and end is also printed as a line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from ppokit.train.sweep.plan import SeedJob, is_resumable

__all__ = ["SeedOutcome", "run_seed_jobs"]

#: seconds between polls of the children and their progress files
_POLL_SECONDS = 0.5


@dataclass
class SeedOutcome:
    """How one seed's training ended: exit code (0 done, 130/143 interrupted, other failed).

    ``stop_requested`` says the sweep was being stopped (Ctrl-C or SIGTERM) when the seed
    ended: a child still starting up has no signal handler of its own yet, so the signal
    kills it (exit code -2 or -15) before it can save anything. That is a stop, not a failure.
    """

    job: SeedJob
    returncode: int
    stop_requested: bool = False

    @property
    def ok(self) -> bool:
        """Whether the run finished (or had finished before: a skipped seed)."""
        return self.returncode == 0

    @property
    def interrupted(self) -> bool:
        """Whether the run stopped on the sweep's stop: the next run resumes or restarts it."""
        if self.returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            return True  # the training process caught the signal and saved a checkpoint
        return self.stop_requested and self.returncode in (-signal.SIGINT, -signal.SIGTERM)


@dataclass
class _Running:
    job: SeedJob
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float = field(default_factory=time.monotonic)
    signalled: bool = False


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # one thread per seed: N seeds in parallel share N cores instead of oversubscribing them
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _last_env_steps(run_dir: Path) -> int:
    """The ``env_steps`` of the last complete row of ``run_dir/progress.csv`` (0 if none)."""
    path = run_dir / "progress.csv"
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            text = fh.read().decode(errors="replace")
    except OSError:
        return 0
    lines = text.split("\n")[:-1]  # the piece after the last newline may be half-written
    for line in reversed(lines):
        head = line.split(",", 1)[0]
        if head.isdigit():
            return int(head)
    return 0


def _start(job: SeedJob) -> _Running:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    log = open(job.log, "ab")  # noqa: SIM115 (closed when the child ends)
    command = [sys.executable, "-m", "ppokit", "train", *job.train_argv]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    log.write(f"\n=== ppokit sweep {stamp}: seed {job.seed} ({job.action}): ".encode())
    log.write((" ".join(command) + "\n").encode())
    log.flush()
    # same process group as the sweep: a terminal's Ctrl-C and a kill of the group reach it
    proc = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_child_env()
    )
    return _Running(job, proc, log)


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return "\n".join(f"    | {line}" for line in text[-lines:])


def run_seed_jobs(
    jobs: list[SeedJob],
    *,
    max_parallel: int,
    steps_per_seed: int,
    say: Callable[[str], None] | None = None,
) -> list[SeedOutcome]:
    """Run ``jobs`` (skipping those planned ``skip``), at most ``max_parallel`` at once.

    Args:
        jobs: one per seed, from :func:`~ppokit.train.sweep.plan.plan_seeds`.
        max_parallel: training processes at a time (``--jobs``).
        steps_per_seed: the runs' ``total_steps`` (the progress bar's scale).
        say: where event lines go (default: printed above the progress bar).

    Returns:
        One outcome per job, in the order of ``jobs``; seeds never started (the sweep was
        interrupted first) are left out.
    """
    from tqdm import tqdm

    outcomes: dict[int, SeedOutcome] = {}
    pending = [j for j in jobs if j.action != "skip"]
    for job in jobs:
        if job.action == "skip":
            outcomes[job.seed] = SeedOutcome(job, 0)
    bar = tqdm(
        total=steps_per_seed * len(jobs),
        unit="step",
        unit_scale=True,
        desc=f"sweep of {len(jobs)} seeds",
        disable=None,  # a terminal only: logs and pipes get the event lines alone
        dynamic_ncols=True,
    )
    emit = say or bar.write
    for job in jobs:
        if job.action == "skip":
            emit(f"seed {job.seed}: finished before, skipped ({job.run_dir})")
    running: dict[int, _Running] = {}
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop:
            emit(
                f"sweep: {signal.Signals(signum).name} received: the running seeds save a "
                "checkpoint and stop; rerun the same command to resume them."
            )
        stop.append(signum)

    previous = {s: _install(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            if stop:
                pending.clear()
                for r in running.values():
                    if r.proc.poll() is None and not r.signalled:
                        r.proc.send_signal(signal.SIGTERM)  # "checkpoint and stop"
                        r.signalled = True
            while pending and len(running) < max_parallel:
                job = pending.pop(0)
                running[job.seed] = _start(job)
                emit(f"seed {job.seed}: {job.action} -> {job.run_dir} (log {job.log})")
            for seed, r in list(running.items()):
                code = r.proc.poll()
                if code is None:
                    continue
                r.log.close()
                del running[seed]
                outcomes[seed] = outcome = SeedOutcome(r.job, code, stop_requested=bool(stop))
                emit(_describe(outcome, time.monotonic() - r.started))
            bar.n = sum(
                steps_per_seed if o.ok else _last_env_steps(o.job.run_dir)
                for o in outcomes.values()
            ) + sum(_last_env_steps(r.job.run_dir) for r in running.values())
            bar.refresh()
            if pending or running:
                time.sleep(_POLL_SECONDS)
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        for r in running.values():  # only on an error of the sweep itself
            r.proc.terminate()
            r.proc.wait()
            r.log.close()
        bar.close()
    return [outcomes[j.seed] for j in jobs if j.seed in outcomes]


def _install(sig: int, handler: Callable[[int, FrameType | None], None]) -> Any:
    """Install ``handler`` for ``sig``; returns the previous one (``None`` off the main
    thread, where signals cannot be changed: the sweep then runs without handlers)."""
    try:
        return signal.signal(sig, handler)
    except ValueError:
        return None


def _describe(outcome: SeedOutcome, seconds: float) -> str:
    job = outcome.job
    if outcome.ok:
        return f"seed {job.seed}: done in {seconds:.0f} s{_eval_text(job.run_dir)}"
    if outcome.interrupted:
        if is_resumable(job.run_dir):
            return f"seed {job.seed}: stopped with a checkpoint (resumed on the next run)"
        return (
            f"seed {job.seed}: stopped before its first checkpoint (started over on the next run)"
        )
    return (
        f"seed {job.seed}: FAILED (exit code {outcome.returncode}); log {job.log}:\n"
        f"{_tail(job.log)}"
    )


def _eval_text(run_dir: Path) -> str:
    import json

    try:
        summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
        return f", eval {summary['eval_return_mean']:.1f} +/- {summary['eval_return_std']:.1f}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
