"""Killing a training process: SIGKILL then ``--resume``, and Ctrl-C (SIGINT) saving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppokit.train.records.checkpoint import load_checkpoint
from ppokit.train.records.metrics import read_progress_csv

# 40 iterations of 8 envs x 32 steps: long enough to be killed in the middle
TOTAL = 40 * 256


def _train_cmd(run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ppokit",
        "train",
        "--env",
        "CartPole-v1",
        "--run-dir",
        str(run),
        "--total-steps",
        str(TOTAL),
        "--checkpoint-every",
        "2",
        "--eval-episodes",
        "0",
        "--no-progress",
        *extra,
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_for_checkpoint(
    proc: subprocess.Popen, run: Path, *, min_steps: int, timeout: float = 120.0
) -> int:
    latest = run / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before it could be interrupted"
        if latest.exists():
            try:
                steps = load_checkpoint(latest)["env_steps"]
            except Exception:  # replaced while reading: try again
                steps = 0
            if steps >= min_steps:
                return steps
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared in time")


def test_resume_after_sigkill_reaches_the_same_step_count(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(run), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for_checkpoint(proc, run, min_steps=4 * 256)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = load_checkpoint(run / "checkpoints" / "latest.pt")  # intact after the kill
    assert 0 < saved["env_steps"] < TOTAL
    res = subprocess.run(
        [sys.executable, "-m", "ppokit", "train", "--resume", str(run), "--no-progress"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert f"resumed at step {saved['env_steps']:,}" in res.stdout
    final = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert final["env_steps"] == TOTAL and final["iteration"] == 40
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == TOTAL
    # the log has every iteration exactly once: rows written after the last checkpoint by
    # the killed process were dropped on resume and logged again
    steps = [int(r["env_steps"]) for r in read_progress_csv(run / "progress.csv")]
    assert steps == list(range(256, TOTAL + 1, 256))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path, mode):
    run = tmp_path / "run"
    # a terminal's Ctrl-C reaches the whole process group, env worker processes included:
    # run in a new session and signal the group, as a terminal does
    proc = subprocess.Popen(
        _train_cmd(run, "--checkpoint-every", "1000", "--vector-mode", mode),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # wait until training is under way (the first log row is written)
        deadline = time.monotonic() + 120
        while not (
            (run / "progress.csv").exists() and len(read_progress_csv(run / "progress.csv")) >= 2
        ):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert not (run / "checkpoints" / "latest.pt").exists()  # none periodic yet
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Ctrl-C received" in err and "--resume" in err
    assert "Traceback" not in err
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert 0 < state["env_steps"] < TOTAL
    assert not (run / "summary.json").exists()
    steps = [int(r["env_steps"]) for r in read_progress_csv(run / "progress.csv")]
    assert steps[-1] == state["env_steps"]
