"""The POMDP learning targets of recurrent PPO (slow: ``make test-slow``; the short CI
version is ``test_recurrent_train.py::test_memory_task_needs_the_recurrent_core``).

Settings are the presets of the two ids; benchmarks/results/recurrent.md has the runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppokit.train.cli.main import main


def _train(run: Path, env: str, *extra: str) -> dict:
    argv = ["train", "--env", env, "--run-dir", str(run), "--no-progress", *extra]
    assert main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_episodes"] == 20
    return summary


@pytest.mark.slow
def test_cartpole_novel_lstm_reaches_475_in_100k_steps(tmp_path: Path) -> None:
    summary = _train(tmp_path / "lstm", "ppokit/CartPoleNoVel-v1", "--seed", "1")
    assert summary["env_steps"] <= 100_352  # 98 iterations of 8 x 128
    assert summary["eval_return_mean"] >= 475, summary


@pytest.mark.slow
def test_cartpole_novel_feed_forward_stays_below_200(tmp_path: Path) -> None:
    summary = _train(
        tmp_path / "ff",
        "ppokit/CartPoleNoVel-v1",
        "--seed",
        "1",
        "--recurrent",
        "none",
        "--hidden-sizes",
        "64",
        "64",
    )
    assert summary["eval_return_mean"] < 200, summary


@pytest.mark.slow
def test_pendulum_novel_lstm_reaches_minus_250_in_200k_steps(tmp_path: Path) -> None:
    summary = _train(tmp_path / "lstm", "ppokit/PendulumNoVel-v1", "--seed", "1")
    assert summary["env_steps"] <= 200_704
    assert summary["eval_return_mean"] >= -250, summary
