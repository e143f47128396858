"""The acceptance numbers of the CartPole preset (slow: ``make test-slow``)."""

from __future__ import annotations

import json

import pytest

from ppokit.train.cli.main import main


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cartpole_defaults_reach_475(seed, tmp_path):
    run = tmp_path / f"cartpole_s{seed}"
    assert (
        main(
            [
                "train",
                "--env",
                "CartPole-v1",
                "--seed",
                str(seed),
                "--run-dir",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_episodes"] >= 20
    assert summary["eval_return_mean"] >= 475, summary
