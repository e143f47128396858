"""A sweep stopped while a seed is still starting: a stop, not a failure.

The sweep relays Ctrl-C/SIGTERM to its training processes as "checkpoint and stop". A child
that has not installed its own handler yet (still importing torch) dies of the signal instead,
exit code -15. That seed has nothing to resume, but it did not fail either: the next run of
the command starts it over. The children here are plain ``sleep`` processes with no handler,
standing in for a training process caught in its start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ppokit.train.sweep import runner
from ppokit.train.sweep.plan import SeedJob


def _job(tmp_path: Path, seed: int) -> SeedJob:
    run = tmp_path / f"seed-{seed}"
    return SeedJob(seed, "start", run, tmp_path / "logs" / f"seed-{seed}.log", ())


def _fake_start(script: str, on_start=None):
    def start(job: SeedJob) -> runner._Running:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        log = open(job.log, "ab")  # noqa: SIM115 (closed by the runner)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=log)
        if on_start is not None:
            on_start()
        return runner._Running(job, proc, log)

    return start


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_seed_killed_by_the_sweeps_stop_is_stopped_not_failed(tmp_path, monkeypatch):
    # the SIGTERM reaches this (the sweep's) process once the first child runs; the sweep's
    # handler then relays it to the child, which has no handler and dies of it
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    monkeypatch.setattr(runner, "_start", _fake_start("import time; time.sleep(60)", timer.start))
    said: list[str] = []
    outcomes = runner.run_seed_jobs(
        [_job(tmp_path, 1), _job(tmp_path, 2)], max_parallel=1, steps_per_seed=10, say=said.append
    )
    timer.cancel()
    assert [o.job.seed for o in outcomes] == [1]  # seed 2 never started
    (outcome,) = outcomes
    assert outcome.returncode == -signal.SIGTERM and outcome.stop_requested
    assert outcome.interrupted and not outcome.ok
    assert said[-1] == "seed 1: stopped before its first checkpoint (started over on the next run)"
    assert not any("FAILED" in line for line in said)


def test_a_seed_that_dies_of_a_signal_without_a_stop_failed(tmp_path, monkeypatch):
    # the same exit code with no stop of the sweep: something else killed it (OOM killer, a
    # stray kill), which the sweep must report as a failure with the log's tail
    script = "import os, signal; print('last words'); os.kill(os.getpid(), signal.SIGTERM)"
    monkeypatch.setattr(runner, "_start", _fake_start(script))
    said: list[str] = []
    (outcome,) = runner.run_seed_jobs(
        [_job(tmp_path, 1)], max_parallel=1, steps_per_seed=10, say=said.append
    )
    assert outcome.returncode == -signal.SIGTERM and not outcome.stop_requested
    assert not outcome.interrupted and not outcome.ok
    assert said[-1].startswith("seed 1: FAILED (exit code -15)") and "last words" in said[-1]


@pytest.mark.parametrize(
    ("code", "stop", "interrupted"),
    [(0, False, False), (130, False, True), (143, True, True), (-2, True, True),
     (-15, False, False), (1, True, False), (-9, True, False)],
)  # fmt: skip
def test_which_exit_codes_are_a_stop(tmp_path, code, stop, interrupted):
    # 130/143: the training process caught SIGINT/SIGTERM and saved a checkpoint; -2/-15: it
    # died of them during start-up, a stop only if the sweep was stopping; a crash (1) or
    # SIGKILL (-9) is a failure even then
    outcome = runner.SeedOutcome(_job(tmp_path, 1), code, stop_requested=stop)
    assert outcome.interrupted is interrupted
