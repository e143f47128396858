"""Experiment tracking: the tracker interface (rows, config, summary) and W&B offline."""

from __future__ import annotations

import json
import math

import pytest

from ppokit.train.cli.main import main
from ppokit.train.records import tracking
from ppokit.train.records.metrics import read_progress_csv
from ppokit.train.trainer import PPOTrainer

_SMALL = dict(
    num_envs=2, num_steps=32, num_epochs=1, total_steps=192, eval_episodes=2, progress=False
)
CALLS: list[tuple] = []


class FakeTracker:
    """Records what the loop hands a tracker."""

    def __init__(self, *, run_dir, config, **options):
        CALLS.append(("init", run_dir, dict(config), options))

    def log(self, metrics, *, step):
        CALLS.append(("log", step, dict(metrics)))

    def summary(self, summary):
        CALLS.append(("summary", dict(summary)))

    def close(self, *, interrupted):
        CALLS.append(("close", interrupted))


def test_a_tracker_gets_every_row_the_config_and_the_summary(tmp_path, monkeypatch):
    monkeypatch.setitem(tracking.TRACKERS, "fake", (__name__, "FakeTracker", "pytest", "dev"))
    CALLS.clear()
    run = tmp_path / "run"
    PPOTrainer(env="CartPole-v1", run_dir=run, track="fake", eval_every=2, **_SMALL).train()
    kinds = [c[0] for c in CALLS]
    assert kinds == ["init", "log", "log", "log", "summary", "close"]
    assert CALLS[0][1] == run and CALLS[0][2] == json.loads((run / "config.json").read_text())
    rows = read_progress_csv(run / "progress.csv")
    for row, call in zip(rows, CALLS[1:4]):
        assert call[1] == row["env_steps"]
        logged = call[2]
        for key, value in row.items():
            if key == "env_steps":
                continue
            if math.isnan(value):  # an empty cell is not sent
                assert key not in logged
            else:
                assert logged[key] == pytest.approx(value, rel=1e-5, abs=1e-3)
    assert "eval/return_mean" in CALLS[2][2] and "eval/return_mean" not in CALLS[1][2]
    assert CALLS[4][1] == json.loads((run / "summary.json").read_text())
    assert CALLS[5] == ("close", False)


def test_wandb_offline_records_config_rows_and_summary(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--env",
                "CartPole-v1",
                "--run-dir",
                str(run),
                "--track",
                "wandb",
                "--wandb-tags",
                "ppo,tiny",
                "--wandb-group",
                "g1",
                "--total-steps",
                "256",
                "--eval-every",
                "2",
                "--eval-episodes",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    # wandb >= 0.31 writes the offline record file from its service process after
    # `run.finish()` has returned; shutting the service down waits for that write
    import wandb

    wandb.teardown()
    run_id = (run / ".wandb-run-id").read_text().strip()
    files = list((run / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1
    data = files[0].read_bytes()
    # the offline record stream names the config fields, the logged columns and the summary
    for name in (
        b"clip_epsilon",
        b"eval/return_mean",
        b"loss_objective",
        b"train_return_recent_mean",
        b"ppo",
        b"tiny",
        b"g1",
    ):
        assert name in data, name
    # --resume continues the same W&B run
    assert main(["train", "--resume", str(run), "--total-steps", "512", "--no-progress"]) == 0
    assert (run / ".wandb-run-id").read_text().strip() == run_id
    assert len(list((run / "wandb").glob(f"offline-run-*-{run_id}"))) >= 1


def test_missing_package_or_unknown_tracker_refused_before_work(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    monkeypatch.setattr(tracking, "find_spec", lambda name: None if name == "wandb" else object())
    assert main(["train", "--track", "wandb", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "'wandb' package" in err and "ppokit[wandb]" in err
    assert not run.exists()
    assert main(["train", "--track", "mlflow", "--run-dir", str(run)]) == 2
    assert "--track must be 'none' or one of ['wandb']" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"ppokit\[wandb\]"):
        PPOTrainer(env="CartPole-v1", track="wandb", progress=False)
