"""Evaluation during training (--eval-every), checkpoints/best.pt, eval/load_policy of best."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppokit.train.cli.main import main
from ppokit.train.deploy.policy import load_policy
from ppokit.train.evaluation.evaluate import evaluate_policy
from ppokit.train.evaluation.periodic import run_evaluation
from ppokit.train.records.checkpoint import load_checkpoint
from ppokit.train.records.metrics import read_progress_csv
from ppokit.train.records.rundir import written_files
from ppokit.train.trainer import PPOTrainer

# 4 envs x 16 steps = 64 steps per iteration; 448 steps = 7 iterations
_SMALL = dict(
    num_envs=4,
    num_steps=16,
    num_minibatches=2,
    num_epochs=2,
    total_steps=448,
    eval_episodes=3,
    progress=False,
    checkpoint_every=100,
    keep_checkpoint_every=0,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evalrun")
    trainer = PPOTrainer(env="CartPole-v1", run_dir=run_dir, eval_every=3, obs_norm=True, **_SMALL)
    result = trainer.train()
    return run_dir, trainer, result


def test_eval_columns_logged_on_due_iterations(run):
    run_dir, _, _ = run
    rows = read_progress_csv(run_dir / "progress.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 8))
    # due: every 3rd iteration (3, 6) and the last (7); others are empty cells (NaN)
    evaluated = [int(r["iteration"]) for r in rows if not math.isnan(r["eval/return_mean"])]
    assert evaluated == [3, 6, 7]
    for r in rows:
        if int(r["iteration"]) in evaluated:
            assert r["eval/return_mean"] >= 1 and r["eval/length_mean"] >= 1
            assert r["eval/return_std"] >= 0 and r["eval/seconds"] > 0
            # CartPole pays 1 per step: the mean return is the mean length
            assert r["eval/return_mean"] == pytest.approx(r["eval/length_mean"], rel=1e-5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("eval/return_mean")]
    assert steps == [3 * 64, 6 * 64, 7 * 64]


def test_best_checkpoint_holds_the_best_evaluation(run):
    run_dir, _, result = run
    rows = read_progress_csv(run_dir / "progress.csv")
    returns = {
        int(r["iteration"]): r["eval/return_mean"]
        for r in rows
        if not math.isnan(r["eval/return_mean"])
    }
    best_iteration = max(returns, key=lambda i: (returns[i], -i))  # the first of equal bests
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["iteration"] == best_iteration
    assert best["best_eval_return"] == pytest.approx(returns[best_iteration], rel=1e-5)
    assert "checkpoints/best.pt" in written_files(run_dir)
    assert result.summary["best_eval_return"] == pytest.approx(returns[best_iteration], rel=1e-5)
    # independent check: the best checkpoint's policy, re-evaluated on the same seeds, plays
    # exactly the recorded return (deterministic actions, frozen normaliser)
    actor, obs_norm, cfg = load_policy(run_dir, checkpoint="best")
    again = evaluate_policy(
        actor, "CartPole-v1", episodes=3, seed=cfg.seed + 10_000, obs_normalizer=obs_norm
    )
    assert again.mean == pytest.approx(returns[best_iteration], rel=1e-6)
    # the final evaluation is the last iteration's, not played twice
    assert result.summary["eval_return_mean"] == pytest.approx(returns[7], rel=1e-6)


def test_latest_and_best_differ_and_load(run):
    run_dir, _, _ = run
    latest = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert latest["iteration"] == 7
    a_latest, _, _ = load_policy(run_dir, checkpoint="latest")
    a_best, _, _ = load_policy(run_dir, checkpoint="best")
    same = all(
        torch.equal(x, y)
        for x, y in zip(a_latest.state_dict().values(), a_best.state_dict().values())
    )
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert same == (best["iteration"] == 7)


def test_evaluation_freezes_normalisation(run):
    _, trainer, _ = run
    before = trainer.obs_norm.state_dict()
    res, seconds = run_evaluation(trainer)
    after = trainer.obs_norm.state_dict()
    assert seconds > 0 and len(res.returns) == 3
    assert before["rms"]["count"] == after["rms"]["count"]
    assert np.array_equal(before["rms"]["mean"].numpy(), after["rms"]["mean"].numpy())


def test_cli_eval_picks_best_or_latest(run, capsys):
    run_dir, _, _ = run
    assert main(["eval", str(run_dir), "--checkpoint", "best", "--episodes", "2"]) == 0
    assert main(["eval", str(run_dir), "--checkpoint", "latest", "--episodes", "2"]) == 0
    assert capsys.readouterr().out.count("deterministic eval over 2 episodes") == 2


def test_best_missing_is_a_clear_error(tmp_path, capsys):
    run_dir = tmp_path / "plain"
    PPOTrainer(env="CartPole-v1", run_dir=run_dir, **{**_SMALL, "total_steps": 64}).train()
    assert not (run_dir / "checkpoints" / "best.pt").exists()
    assert main(["eval", str(run_dir), "--checkpoint", "best"]) == 2
    err = capsys.readouterr().err
    assert "--eval-every" in err and "--checkpoint latest" in err
    with pytest.raises(FileNotFoundError, match=r"best\.pt is written by training"):
        load_policy(run_dir, checkpoint="best")


def test_eval_every_needs_episodes(capsys):
    with pytest.raises(ValueError, match="--eval-episodes is 0"):
        PPOTrainer(env="CartPole-v1", eval_every=2, eval_episodes=0, progress=False)
    assert main(["train", "--eval-every", "-1"]) == 2
    assert "--eval-every must be an integer >= 0" in capsys.readouterr().err


def test_resume_keeps_best_return(tmp_path):
    run_dir = tmp_path / "r"
    first = PPOTrainer(
        env="CartPole-v1",
        run_dir=run_dir,
        eval_every=1,
        **{**_SMALL, "total_steps": 128, "checkpoint_every": 1},
    )
    first.train()
    resumed = PPOTrainer(
        env="CartPole-v1",
        run_dir=run_dir,
        resume=True,
        eval_every=1,
        **{**_SMALL, "total_steps": 128},
    )
    assert resumed.best_eval_return == first.best_eval_return > 0
