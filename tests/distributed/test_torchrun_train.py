"""``torchrun --nproc-per-node 2 -m ppokit train``: a short CartPole run, its resume, a failure.

Each test runs the real launcher (``python -m torch.distributed.run``, which is ``torchrun``)
with two gloo ranks and a deadline; nothing is mocked except the injected failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ppokit.train.records.checkpoint import load_checkpoint
from ppokit.train.records.metrics import read_progress_csv

pytestmark = pytest.mark.distributed

HERE = Path(__file__).parent
# per rank 4 envs x 64 steps = 256, so 512 steps per iteration over the two ranks
SMALL = [
    "--env",
    "CartPole-v1",
    "--num-envs",
    "4",
    "--num-steps",
    "64",
    "--num-epochs",
    "2",
    "--num-minibatches",
    "2",
    "--checkpoint-every",
    "1",
    "--no-progress",
    "--obs-norm",
    "--reward-scale",
]


def _torchrun(*args: str, timeout: float = 100.0) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "PPOKIT_DIST_TIMEOUT": "60",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        *args,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE.parent.parent
    )


def test_two_rank_run_then_two_rank_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _torchrun(
        "-m",
        "ppokit",
        "train",
        *SMALL,
        "--run-dir",
        str(run),
        "--total-steps",
        "1024",
        "--eval-episodes",
        "2",
    )
    assert first.returncode == 0, first.stdout + first.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    # 1024 steps over 2 ranks x 256 per rank and iteration: 2 iterations
    assert (summary["env_steps"], summary["iterations"]) == (1024, 2)
    assert summary["eval_episodes"] == 2  # evaluated once, by rank 0
    assert first.stdout.count("ppokit: done:") == 1  # only rank 0 reports

    # the checkpoint holds plain (unwrapped) weights: a single process can load it
    from ppokit.train.trainer import load_policy

    load_policy(run)
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["env_steps"] == 1024 and state["world_size"] == 2

    second = _torchrun(
        "-m",
        "ppokit",
        "train",
        "--resume",
        str(run),
        "--total-steps",
        "2048",
        "--eval-episodes",
        "0",
        "--no-progress",
    )
    assert second.returncode == 0, second.stdout + second.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["env_steps"], summary["iterations"], summary["world_size"]) == (2048, 4, 2)
    # one writer: every iteration logged once, the step count continuing across the resume
    steps = [int(row["env_steps"]) for row in read_progress_csv(run / "progress.csv")]
    assert steps == [512, 1024, 1536, 2048]


def test_a_rank_raising_mid_run_ends_the_job_with_an_error(tmp_path: Path) -> None:
    proc = _torchrun(
        str(HERE / "_raising_train.py"),
        "train",
        *SMALL,
        "--run-dir",
        str(tmp_path / "run"),
        "--total-steps",
        "4096",
        "--eval-episodes",
        "0",
    )
    assert proc.returncode != 0
    assert "injected failure on rank 1 at iteration 2" in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "summary.json").exists()
