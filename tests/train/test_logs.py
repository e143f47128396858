"""progress.csv logging (incl. resume truncation) and learning-curve plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ppokit.train.records.metrics import MetricsLogger, read_progress_csv
from ppokit.train.records.plot import load_curve, plot_runs


def _write_run(path, env, values, *, steps=100):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"env": env}))
    with MetricsLogger(path, tensorboard=False) as log:
        for i, v in enumerate(values, 1):
            log.log(
                {"episode_return_mean": v, "loss": 0.1 * i},
                env_steps=steps * i,
                iteration=i,
                wall_seconds=0.5 * i,
            )


def test_csv_rows_missing_values_and_resume_truncation(tmp_path):
    _write_run(tmp_path / "r", "CartPole-v1", [10.0, None, 30.0, 40.0])
    rows = read_progress_csv(tmp_path / "r" / "progress.csv")
    assert [r["env_steps"] for r in rows] == [100, 200, 300, 400]
    assert math.isnan(rows[1]["episode_return_mean"]) and rows[2]["episode_return_mean"] == 30
    assert list(rows[0]) == [
        "env_steps",
        "iteration",
        "wall_seconds",
        "episode_return_mean",
        "loss",
    ]
    # a process killed after logging step 400 but checkpointed at 200: resume drops 300, 400
    with MetricsLogger(tmp_path / "r", tensorboard=False, resume_from_step=200) as log:
        log.log(
            {"episode_return_mean": 33.0, "loss": 0.0}, env_steps=300, iteration=3, wall_seconds=9.0
        )
    rows = read_progress_csv(tmp_path / "r" / "progress.csv")
    assert [r["env_steps"] for r in rows] == [100, 200, 300]
    assert rows[-1]["episode_return_mean"] == 33.0


def test_tensorboard_events_are_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path, tensorboard=True) as log:
        log.log({"episode_return_mean": 5.0}, env_steps=64, iteration=1, wall_seconds=0.1)
        log.log({"episode_return_mean": 7.0}, env_steps=128, iteration=2, wall_seconds=0.2)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    events = acc.Scalars("episode_return_mean")
    assert [(e.step, e.value) for e in events] == [(64, 5.0), (128, 7.0)]


def test_load_curve_drops_missing_values_and_checks_the_metric(tmp_path):
    _write_run(tmp_path / "r", "CartPole-v1", [10.0, None, 30.0])
    steps, values = load_curve(tmp_path / "r")
    np.testing.assert_array_equal(steps, [100, 300])
    np.testing.assert_array_equal(values, [10.0, 30.0])
    with pytest.raises(KeyError, match="no column 'nope'"):
        load_curve(tmp_path / "r", "nope")
    with pytest.raises(FileNotFoundError, match=r"No progress\.csv"):
        load_curve(tmp_path / "missing")
    with pytest.raises(ValueError, match="at least one run"):
        plot_runs([])


def test_plot_groups_runs_by_env(tmp_path, monkeypatch):
    _write_run(tmp_path / "a1", "CartPole-v1", [1.0, 2.0, 3.0])
    _write_run(tmp_path / "a2", "CartPole-v1", [3.0, 4.0, 5.0])
    _write_run(tmp_path / "b", "Hopper-v5", [10.0, 20.0], steps=1000)
    import matplotlib.figure

    titles: list[str] = []
    original = matplotlib.figure.Figure.savefig

    def spy(self, *args, **kwargs):
        titles.extend(ax.get_title() for ax in self.axes if ax.get_title())
        # the mean line of the two CartPole seeds: (1+3)/2 .. (3+5)/2
        cart = next(ax for ax in self.axes if ax.get_title() == "CartPole-v1")
        mean = next(ln for ln in cart.lines if ln.get_label().startswith("mean of 2"))
        np.testing.assert_allclose(mean.get_ydata()[[0, -1]], [2.0, 4.0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    out = plot_runs([tmp_path / "a1", tmp_path / "a2", tmp_path / "b"], out=tmp_path / "p.png")
    assert titles == ["CartPole-v1", "Hopper-v5"]
    assert out.read_bytes()[:4] == b"\x89PNG"
