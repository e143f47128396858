"""``ppokit sweep-compare``: the probability of improvement, its interval, the table, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ppokit.train.cli.main import main
from ppokit.train.records.metrics import MetricsLogger
from ppokit.train.sweep.compare import compare_sweeps, format_comparison
from ppokit.train.sweep.plan import SweepRecord, write_sweep_record
from ppokit.train.sweep.stats import BOOTSTRAP, improvement_ci, probability_of_improvement

pytest.importorskip("scipy")


def _p_loop(x, y) -> float:
    """P(X > Y) by a plain double loop over the seed pairs, a tie counting half."""
    total = 0.0
    for a in x:
        for b in y:
            total += 1.0 if a > b else 0.5 if a == b else 0.0
    return total / (len(x) * len(y))


def test_probability_of_improvement_against_a_loop():
    # x = [1, 4, 4], y = [4, 2]: pairs (1,4) 0, (1,2) 0, (4,4) 1/2, (4,2) 1, (4,4) 1/2,
    # (4,2) 1 -> 3 of 6
    assert probability_of_improvement(np.array([1.0, 4.0, 4.0]), np.array([4.0, 2.0])) == 0.5
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, size=(7, 5)).astype(float), rng.integers(0, 5, size=(7, 4))
    batched = probability_of_improvement(x, y.astype(float), axis=-1)  # one value per row
    assert batched.tolist() == pytest.approx([_p_loop(a, b) for a, b in zip(x, y)])
    assert probability_of_improvement(y.T.astype(float), x.T, axis=0).tolist() == pytest.approx(
        [_p_loop(b, a) for a, b in zip(x, y)]
    )


def test_improvement_interval_matches_a_plain_bootstrap():
    x = np.array([3100.0, 2500.0, 3900.0, 1200.0, 3300.0])
    y = np.array([2900.0, 2000.0, 3500.0, 2600.0, 1800.0])
    low, high = improvement_ci(x, y)
    assert improvement_ci(x, y) == (low, high)  # fixed generator: the same interval again
    # a plain loop: resample each side's seeds with replacement, percentiles 2.5 / 97.5
    rng = np.random.default_rng(123)
    stats = [
        _p_loop(rng.choice(x, size=len(x)), rng.choice(y, size=len(y)))
        for _ in range(BOOTSTRAP["n_resamples"])
    ]
    ref_low, ref_high = np.percentile(stats, [2.5, 97.5])
    # P moves in steps of 1/50 here; two resampling streams may land a step apart
    assert low == pytest.approx(ref_low, abs=0.041) and high == pytest.approx(ref_high, abs=0.041)
    assert low <= probability_of_improvement(x, y) <= high
    assert improvement_ci(x + 1e4, y) == (1.0, 1.0)  # every seed of x beats every seed of y
    with pytest.raises(ValueError, match="at least 2 seeds on each side, got 1 and 5"):
        improvement_ci(x[:1], y)


def _sweep(
    root: Path,
    env: str,
    scores: dict[int, float | None],
    steps: int = 1000,
    config: dict | None = None,
) -> Path:
    """A sweep dir: a summary per finished seed (None: unfinished), a short curve each, and
    each seed's ``config.json`` when ``config`` is given."""
    write_sweep_record(root, SweepRecord(env, ("--total-steps", str(steps)), tuple(scores)))
    for seed, score in scores.items():
        run = root / f"seed-{seed}"
        with MetricsLogger(run, tensorboard=False) as log:
            for i in (1, 2, 3):
                log.log(
                    {"episode_return_mean": (score or 0.0) * i / 3},
                    env_steps=steps * i // 3,
                    iteration=i,
                    wall_seconds=0.0,
                )
        if config is not None:
            (run / "config.json").write_text(json.dumps({**config, "seed": seed}))
        if score is not None:
            summary = {"eval_return_mean": score, "eval_episodes": 5, "env_steps": steps}
            (run / "summary.json").write_text(json.dumps(summary))
    return root


def test_compare_figures_by_hand(tmp_path):
    base = _sweep(tmp_path / "base", "X-v0", {1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0})
    new = _sweep(tmp_path / "new", "X-v0", {1: 25.0, 2: 35.0, 3: 45.0, 4: 55.0, 5: None})
    cmp = compare_sweeps([base, new])
    b, n = cmp["sweeps"]
    # IQM of 4 seeds drops the lowest and the highest: (20 + 30) / 2 and (35 + 45) / 2
    assert (b["iqm"], n["iqm"]) == (25.0, 40.0)
    assert n["missing"] == [5] and n["n"] == 4 and "p_improvement" not in b
    # 25 beats 10, 20; 35 beats 10, 20, 30; 45 and 55 beat all four: 2 + 3 + 4 + 4 = 13 of 16
    assert n["p_improvement"] == 13 / 16
    low, high = n["p_improvement_ci95"]
    assert 0.0 <= low <= 13 / 16 <= high <= 1.0
    text = format_comparison(cmp)
    assert "| new | 4 | 1,000 | 40.0 [" in text and "| 0.81 [" in text
    assert "- new: `--total-steps 1000`; seeds without a final evaluation: 5" in text


def test_one_seed_has_no_interval_and_other_tasks_are_refused(tmp_path):
    base = _sweep(tmp_path / "base", "X-v0", {1: 10.0, 2: 20.0})
    one = _sweep(tmp_path / "one", "X-v0", {7: 15.0})
    row = compare_sweeps([base, one])["sweeps"][1]
    assert row["p_improvement"] == 0.5 and row["p_improvement_ci95"] is None
    other = _sweep(tmp_path / "other", "Y-v0", {1: 1.0, 2: 2.0})
    with pytest.raises(ValueError, match="one is X-v0, other is Y-v0"):
        compare_sweeps([one, other])
    with pytest.raises(ValueError, match="at least two sweep dirs"):
        compare_sweeps([base])


def test_cli_prints_writes_json_and_the_plot(tmp_path, capsys):
    base = _sweep(tmp_path / "base", "X-v0", {1: 10.0, 2: 20.0, 3: 30.0})
    new = _sweep(tmp_path / "new", "X-v0", {1: 25.0, 2: 35.0, 3: 45.0})
    png, figures = tmp_path / "cmp.png", tmp_path / "cmp.json"
    argv = ["sweep-compare", str(base), str(new), "--out", str(png), "--json", str(figures)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "# X-v0: 2 sweeps against base" in out and f"plot: {png}" in out
    assert png.stat().st_size > 0
    assert json.loads(figures.read_text()) == json.loads(json.dumps(compare_sweeps([base, new])))
    with pytest.raises(SystemExit):
        main(["sweep-compare", "--help"])
    help_text = capsys.readouterr().out
    assert "95% CI" in help_text and "%%" not in help_text
    assert main(["sweep-compare", str(base), str(tmp_path)]) == 2
    assert "is not a sweep dir (no sweep.json)" in capsys.readouterr().err


def test_the_settings_that_differ_come_from_the_resolved_configs(tmp_path):
    shared = {"env": "X-v0", "num_envs": 8, "run_dir": "somewhere"}
    base = _sweep(tmp_path / "base", "X-v0", {1: 1.0, 2: 2.0}, config={**shared, "lr": 3e-4})
    new = _sweep(
        tmp_path / "new",
        "X-v0",
        {1: 3.0, 2: 4.0},
        config={**shared, "lr": 1e-4, "env_kwargs": {"a": False}},
    )
    # seed and run_dir differ too, but they are not settings; a field a config.json lacks
    # (written before the field existed) has today's default: env_kwargs {} on the base side
    assert compare_sweeps([base, new])["differences"] == {
        "env_kwargs": [{}, {"a": False}],
        "lr": [3e-4, 1e-4],
    }
    old = _sweep(tmp_path / "old", "X-v0", {1: 7.0}, config={**shared, "lr": 3e-4})
    newer = {**shared, "lr": 3e-4, "precision": "float32"}  # the new field at its default
    (base / "seed-1" / "config.json").write_text(json.dumps(newer))
    assert compare_sweeps([old, base])["differences"] == {}
    bare = _sweep(tmp_path / "bare", "X-v0", {1: 5.0, 2: 6.0})  # no config.json: unknown
    cmp = compare_sweeps([base, new, bare])
    assert cmp["differences"]["lr"] == [3e-4, 1e-4, None]
    assert cmp["differences"]["env_kwargs"] == [{}, {"a": False}, None]
    text = format_comparison(cmp)
    assert "| `lr` | 0.0003 | 0.0001 | ? |" in text
    assert '| `env_kwargs` | {} | {"a": false} | ? |' in text
    assert compare_sweeps([base, base])["differences"] == {}
