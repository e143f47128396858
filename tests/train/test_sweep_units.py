"""``ppokit sweep``'s parts without training: seeds, statistics, plan, aggregate, plot, refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ppokit.train.cli.main import main
from ppokit.train.records.metrics import MetricsLogger
from ppokit.train.records.plot import mean_band, plot_runs
from ppokit.train.sweep.aggregate import aggregate_sweep
from ppokit.train.sweep.plan import SweepRecord, parse_seeds, plan_seeds, write_sweep_record
from ppokit.train.sweep.stats import bootstrap_ci, iqm, summarize_scores

pytest.importorskip("scipy")


# ------------------------------------------------------------------------------ seeds
@pytest.mark.parametrize(
    ("spec", "seeds"),
    [("1-5", [1, 2, 3, 4, 5]), ("1,3,7", [1, 3, 7]), ("7, 1-2", [7, 1, 2]), ("0", [0])],
)
def test_seed_specs(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5-1", "the range 5-1 goes down; write it low-high, e.g. 1-5"),
        ("a", "'a' is not a seed or a range"),
        ("1,,2", "'' is not a seed or a range"),
        ("1-3,2", "seed 2 is listed twice"),
        ("4294967296", "seed 4294967296 is outside [0, 4294967295]"),
    ],
)
def test_bad_seed_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError) as err:
        parse_seeds(spec)
    assert message in str(err.value)


# ------------------------------------------------------------------------------ statistics
def test_summary_over_seeds_matches_a_hand_computation():
    s = summarize_scores({1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0, 5: 1000.0})
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(220.0)  # 1100 / 5
    # sample std: deviations -210 -200 -190 -180 780, squares sum to 761000, / (5 - 1)
    assert s["std"] == pytest.approx(math.sqrt(761000 / 4))
    # IQM: int(0.25 * 5) = 1 score cut from each end -> mean of 20, 30, 40
    assert s["iqm"] == pytest.approx(30.0)
    assert s["median"] == 30.0
    assert s["min"] == {"seed": 1, "score": 10.0}
    assert s["max"] == {"seed": 5, "score": 1000.0}
    low, high = s["iqm_ci95"]
    # the interval holds the estimate and lies inside the scores' range
    assert 10.0 <= low <= s["iqm"] <= high <= 1000.0


def test_iqm_of_four_and_two_seeds():
    assert iqm(np.array([4.0, 1.0, 3.0, 2.0])) == pytest.approx(2.5)  # cuts 1 and 4: (2 + 3) / 2
    assert iqm(np.array([1.0, 5.0])) == pytest.approx(3.0)  # int(0.25 * 2) = 0: plain mean


def test_bootstrap_interval_is_deterministic_and_agrees_with_a_plain_resampling_loop():
    scores = np.array([120.0, 340.0, 200.0, 510.0, 80.0, 260.0])
    first = bootstrap_ci(scores, iqm)
    assert bootstrap_ci(scores, iqm) == first  # fixed generator seed: reruns agree
    # independent reference: resample seeds with replacement, IQM each, 2.5/97.5 percentiles
    rng = np.random.default_rng(123)
    stats = []
    for _ in range(20_000):
        sample = np.sort(scores[rng.integers(0, len(scores), len(scores))])
        stats.append(sample[1:-1].mean())  # int(0.25 * 6) = 1 cut from each end
    stats = np.array(stats)
    # each end is a quantile of the reference distribution (which has atoms: compare the
    # mass strictly below and at-or-below it with the 2.5% / 97.5% it should cut)
    for end, q in zip(first, (0.025, 0.975)):
        assert np.mean(stats < end) <= q + 0.01
        assert np.mean(stats <= end) >= q - 0.01


def test_one_seed_has_no_interval():
    s = summarize_scores({3: 7.0})
    assert s["std"] is None and s["iqm_ci95"] is None and s["iqm"] == 7.0
    with pytest.raises(ValueError, match="at least 2 seeds"):
        bootstrap_ci(np.array([7.0]), iqm)


# ------------------------------------------------------------------------------ plan
def _fake_run(run: Path, *names: str) -> None:
    run.mkdir(parents=True)
    for name in names:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}")


def test_plan_skips_finished_resumes_interrupted_restarts_uncheckpointed(tmp_path):
    _fake_run(tmp_path / "seed-1", "summary.json", "config.json", "checkpoints/latest.pt")
    _fake_run(tmp_path / "seed-2", ".ppokit-manifest", "config.json", "checkpoints/latest.pt")
    _fake_run(tmp_path / "seed-3", ".ppokit-manifest", "config.json")  # killed before one
    jobs = plan_seeds(tmp_path, "CartPole-v1", [1, 2, 3, 4], ("--total-steps", "512"))
    assert [j.action for j in jobs] == ["skip", "resume", "restart", "start"]
    assert jobs[0].train_argv == ()
    assert jobs[1].train_argv == ("--resume", str(tmp_path / "seed-2"), "--no-progress")
    assert jobs[2].train_argv[-1] == "--overwrite"
    assert jobs[3].train_argv == (
        "--env", "CartPole-v1", "--seed", "4", "--run-dir", str(tmp_path / "seed-4"),
        "--no-progress", "--total-steps", "512",
    )  # fmt: skip
    assert jobs[3].log == tmp_path / "logs" / "seed-4.log"


def test_a_sweep_dir_refuses_other_settings_and_merges_seeds(tmp_path):
    write_sweep_record(tmp_path, SweepRecord("CartPole-v1", ("--lr", "1e-3"), (1, 2)))
    merged = write_sweep_record(tmp_path, SweepRecord("CartPole-v1", ("--lr", "1e-3"), (2, 5)))
    assert merged.seeds == (1, 2, 5)
    with pytest.raises(ValueError, match="repeat the original flags"):
        write_sweep_record(tmp_path, SweepRecord("CartPole-v1", ("--lr", "3e-4"), (1,)))
    with pytest.raises(ValueError, match="holds a sweep of --env CartPole-v1"):
        write_sweep_record(tmp_path, SweepRecord("Acrobot-v1", ("--lr", "1e-3"), (1,)))


# ------------------------------------------------------------------------------ aggregate
def _summary(run: Path, ret: float, std: float = 2.0) -> None:
    run.mkdir(parents=True, exist_ok=True)
    summary = {"eval_return_mean": ret, "eval_return_std": std, "eval_episodes": 20}
    (run / "summary.json").write_text(json.dumps({**summary, "env_steps": 1000}))


def test_aggregate_files_hold_every_seed_and_name_the_missing(tmp_path):
    write_sweep_record(tmp_path, SweepRecord("Hopper-v5", (), (1, 2, 3, 4, 5, 6)))
    for seed, ret in {1: 3300.0, 2: 880.0, 3: 3100.0, 4: 2900.0, 5: 3500.0}.items():
        _summary(tmp_path / f"seed-{seed}", ret)
    agg = aggregate_sweep(tmp_path)
    assert json.loads((tmp_path / "aggregate.json").read_text()) == agg
    assert [s["seed"] for s in agg["seeds"]] == [1, 2, 3, 4, 5]
    assert agg["missing"] == [
        {"seed": 6, "reason": "no summary.json (not finished, or failed: see its log)"}
    ]
    # sorted 880 2900 3100 3300 3500: IQM cuts 880 and 3500 -> (2900 + 3100 + 3300) / 3
    assert agg["iqm"] == pytest.approx(3100.0)
    assert agg["mean"] == pytest.approx(13680.0 / 5)
    assert agg["min"] == {"seed": 2, "score": 880.0}
    md = (tmp_path / "aggregate.md").read_text()
    assert "| 2 | 880.0 ± 2.0 | 20 | 1,000 |" in md
    assert "interquartile mean: 3100.0, 95% CI [" in md and "worst seed: 2 (880.0)" in md
    assert "| 6 | missing: no summary.json" in md
    (tmp_path / "aggregate.json").unlink()
    assert main(["sweep", "--aggregate-only", "--sweep-dir", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "aggregate.json").read_text()) == agg  # recomputed the same


def test_aggregate_command_refuses_a_dir_that_is_no_sweep(tmp_path, capsys):
    assert main(["sweep-aggregate", str(tmp_path)]) == 2
    assert "is not a sweep dir (no sweep.json)" in capsys.readouterr().err


# ------------------------------------------------------------------------------ plot
def _curve(run: Path, values: list[float]) -> None:
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"env": "CartPole-v1"}))
    with MetricsLogger(run, tensorboard=False) as log:
        for i, v in enumerate(values, 1):
            log.log({"episode_return_mean": v}, env_steps=100 * i, iteration=i, wall_seconds=0.0)


def test_plot_of_a_sweep_dir_draws_its_seeds_with_a_band(tmp_path):
    write_sweep_record(tmp_path, SweepRecord("CartPole-v1", (), (1, 2, 3, 4)))
    for seed, values in {1: [10, 20, 30], 2: [12, 25, 28], 3: [8, 15, 40]}.items():
        _curve(tmp_path / f"seed-{seed}", [float(v) for v in values])
    out = plot_runs([tmp_path])  # seed 4 has no progress.csv yet: drawn without it
    assert out == tmp_path / "learning_curve.png" and out.stat().st_size > 1000
    out.unlink()
    assert main(["plot", str(tmp_path)]) == 0 and out.is_file()  # `ppokit plot SWEEP_DIR`
    curves = np.array([[10.0, 20.0, 30.0], [12.0, 25.0, 28.0], [8.0, 15.0, 40.0]])
    mean, low, high = mean_band(curves)
    assert mean.tolist() == pytest.approx([10.0, 20.0, 98.0 / 3])
    assert np.all(low <= mean) and np.all(mean <= high)
    assert np.all(low >= curves.min(0)) and np.all(high <= curves.max(0))


# ------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "5-1"], "--seeds '5-1': the range 5-1 goes down"),
        (["--seeds", "a"], "--seeds 'a': 'a' is not a seed or a range"),
        (["--jobs", "0"], "--jobs must be a positive number of seeds trained at once, got 0"),
        (["--seed", "3"], "ppokit sweep sets --seed itself"),
        (["--run-dir=x"], "ppokit sweep sets --run-dir itself"),
        (["--not-a-field", "3"], "were refused by `ppokit train` (see above); nothing was"),
        (["--lr", "-1"], "--lr must be a positive finite number, got -1.0."),
    ],
)
def test_bad_sweep_input_is_refused_before_anything_starts(tmp_path, capsys, args, message):
    sweep_dir = tmp_path / "sweep"
    code = main(["sweep", "--env", "CartPole-v1", "--sweep-dir", str(sweep_dir), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert not sweep_dir.exists()  # nothing launched, nothing created


def test_progress_reads_the_last_complete_row_only(tmp_path):
    from ppokit.train.sweep.runner import _last_env_steps

    (tmp_path / "progress.csv").write_text("env_steps,iteration\n256,1\n512,2\n76")  # mid-write
    assert _last_env_steps(tmp_path) == 512
    assert _last_env_steps(tmp_path / "absent") == 0
