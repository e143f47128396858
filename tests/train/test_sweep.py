"""``ppokit sweep`` end to end: tiny CartPole sweeps as real subprocesses, a kill and a resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ppokit
from ppokit.train.cli.main import main
from ppokit.train.records.checkpoint import load_checkpoint
from ppokit.train.records.metrics import read_progress_csv
from ppokit.train.records.provenance import read_sessions

pytest.importorskip("scipy")


def test_a_failing_seed_is_reported_and_the_others_aggregated(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    # seed 3's run dir holds a file ppokit did not write: its training refuses to start
    (sweep / "seed-3").mkdir(parents=True)
    (sweep / "seed-3" / "config.json").write_text("{}")
    code = main(
        [
            "sweep", "--env", "CartPole-v1", "--seeds", "1-3", "--jobs", "2",
            "--sweep-dir", str(sweep), "--total-steps", "512", "--eval-episodes", "3",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert f"seed 3 failed (exit code 2); its log: {sweep / 'logs' / 'seed-3.log'}" in out
    assert "ppokit did not write" in (sweep / "logs" / "seed-3.log").read_text()
    # the aggregate of the two finished seeds, recomputed by hand from their summaries
    summaries = {s: json.loads((sweep / f"seed-{s}" / "summary.json").read_text()) for s in (1, 2)}
    assert all(s["env_steps"] == 512 and s["eval_episodes"] == 3 for s in summaries.values())
    a, b = (summaries[s]["eval_return_mean"] for s in (1, 2))
    agg = json.loads((sweep / "aggregate.json").read_text())
    assert [s["seed"] for s in agg["seeds"]] == [1, 2]
    assert [s["eval_return_mean"] for s in agg["seeds"]] == [a, b]
    assert agg["missing"][0]["seed"] == 3
    assert agg["mean"] == pytest.approx((a + b) / 2)
    assert agg["std"] == pytest.approx(abs(a - b) / math.sqrt(2))  # sample std of two values
    assert agg["iqm"] == pytest.approx((a + b) / 2)  # int(0.25 * 2) = 0 cut: the mean
    assert min(a, b) <= agg["iqm_ci95"][0] <= agg["iqm_ci95"][1] <= max(a, b)
    assert agg["min"]["score"] == min(a, b)
    assert (sweep / "aggregate.md").is_file() and (sweep / "learning_curve.png").is_file()
    # the children ran single-threaded
    assert json.loads((sweep / "seed-1" / "config.json").read_text())["torch_threads"] == 1


# 12 iterations of 8 envs x 32 steps, a checkpoint every iteration: the kill comes after
# the third, so 9 iterations are left for the resume to run
ITERATIONS = 12
TOTAL = ITERATIONS * 256


def _sweep_args(sweep: Path) -> list[str]:
    return [
        "sweep", "--env", "CartPole-v1", "--seeds", "1-2", "--jobs", "1",
        "--sweep-dir", str(sweep), "--total-steps", str(TOTAL), "--checkpoint-every", "1",
        "--eval-episodes", "2",
    ]  # fmt: skip


def test_rerun_after_a_kill_skips_the_finished_seed_and_resumes_the_killed_one(tmp_path):
    sweep = tmp_path / "sweep"
    # a sweep in its own process group, killed as a whole (sweep and training) like a crash
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppokit", *_sweep_args(sweep)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    latest = sweep / "seed-2" / "checkpoints" / "latest.pt"
    try:
        deadline = time.monotonic() + 240
        saved = 0
        while saved < 3 * 256:
            assert proc.poll() is None and time.monotonic() < deadline, "no kill point reached"
            if latest.exists():
                try:
                    saved = load_checkpoint(latest)["env_steps"]
                except Exception:  # replaced while reading: try again
                    saved = 0
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = (sweep / "seed-1" / "summary.json").read_bytes()
    assert not (sweep / "seed-2" / "summary.json").exists()
    saved = load_checkpoint(latest)["env_steps"]
    assert 0 < saved < TOTAL

    assert main(_sweep_args(sweep)) == 0
    assert (sweep / "seed-1" / "summary.json").read_bytes() == first  # skipped, not retrained
    log = (sweep / "logs" / "seed-2.log").read_text()
    assert "seed 2 (resume)" in log and f"resumed at step {saved:,}" in log
    assert (sweep / "logs" / "seed-1.log").read_text().count("=== ppokit sweep") == 1
    final = load_checkpoint(latest)
    assert final["env_steps"] == TOTAL and final["iteration"] == ITERATIONS
    steps = [int(r["env_steps"]) for r in read_progress_csv(sweep / "seed-2" / "progress.csv")]
    assert steps == list(range(256, TOTAL + 1, 256))  # every iteration logged once
    agg = json.loads((sweep / "aggregate.json").read_text())
    assert [s["seed"] for s in agg["seeds"]] == [1, 2] and agg["missing"] == []
    # provenance: one session for seed 1, two for seed 2 (the start and the resume)
    starts = [s["env_steps_at_start"] for s in read_sessions(sweep / "seed-2")]
    assert starts == [0, saved]
    assert [s["env_steps_at_start"] for s in read_sessions(sweep / "seed-1")] == [0]
    summary = json.loads((sweep / "seed-2" / "summary.json").read_text())
    assert summary["code"] == read_sessions(sweep / "seed-2")[-1]["code"]
    assert summary["code"]["ppokit"] == ppokit.__version__
