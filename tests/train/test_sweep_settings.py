"""A sweep dir keeps one set of settings, also when a preset changes between two runs of it.

``sweep.json`` records the train flags, but a seed trains with those flags over the preset of
the day. These tests change a seed's saved settings the way a preset change would and check
that ``ppokit sweep`` refuses to add seeds, before anything is written or launched.
"""

from __future__ import annotations

import json
import shlex

import pytest

from ppokit.train.cli.arguments import resolve_train_config
from ppokit.train.cli.main import main
from ppokit.train.records.rundir import MANIFEST_NAME
from ppokit.train.settings.config import config_to_dict
from ppokit.train.settings.presets import preset_config
from ppokit.train.sweep.plan import SweepRecord, read_sweep_record, write_sweep_record
from ppokit.train.sweep.settings import settings_as_flags

FLAGS = ("--total-steps", "512", "--eval-episodes", "3")


def _seed_run(sweep, seed, *, finished, **changed):
    """Seed ``seed``'s run dir as ppokit leaves it, trained with today's CartPole settings
    (the sweep's flags over the preset) except for ``changed``."""
    run = sweep / f"seed-{seed}"
    run.mkdir(parents=True)
    cfg = config_to_dict(preset_config("CartPole-v1", seed=seed, total_steps=512))
    cfg.update(eval_episodes=3, run_dir=str(run), progress=False, **changed)
    (run / "config.json").write_text(json.dumps(cfg))
    (run / MANIFEST_NAME).write_text("config.json\n")
    if finished:
        summary = {"env": "CartPole-v1", "seed": seed, "env_steps": 512}
        summary.update(eval_return_mean=100.0, eval_return_std=0.0, eval_episodes=3)
        (run / "summary.json").write_text(json.dumps(summary))


def _sweep(args, sweep):
    return main(["sweep", "--env", "CartPole-v1", "--sweep-dir", str(sweep), *args, *FLAGS])


def test_new_seeds_with_other_settings_than_the_dirs_seeds_are_refused(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_sweep_record(sweep, SweepRecord("CartPole-v1", FLAGS, (1,)))
    # seed 1 ran when the preset had lr 5e-4 and 10 epochs (today: 1e-3 and 20)
    _seed_run(sweep, 1, finished=True, lr=5e-4, num_epochs=10)
    assert _sweep(["--seeds", "1-2"], sweep) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "its seeds trained with other settings than these flags resolve to now" in err
    assert "lr 0.0005 -> 0.001, num_epochs 10 -> 20" in err
    assert "with --lr 0.0005 --num-epochs 10 added to these flags" in err
    # refused before anything was written or launched
    assert not (sweep / "seed-2").exists() and not (sweep / "logs").exists()
    assert read_sweep_record(sweep) == SweepRecord("CartPole-v1", FLAGS, (1,))


def test_a_rerun_that_trains_no_new_seed_is_not_refused(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_sweep_record(sweep, SweepRecord("CartPole-v1", FLAGS, (1,)))
    # nothing new to train: rerunning the command only aggregates, whatever the preset says
    _seed_run(sweep, 1, finished=True, lr=5e-4)
    assert _sweep(["--seeds", "1"], sweep) == 0
    assert json.loads((sweep / "aggregate.json").read_text())["seeds"][0]["seed"] == 1
    capsys.readouterr()


@pytest.mark.parametrize(
    ("values", "flags"),
    [
        ({"gamma": 0.99, "entropy_coef": 0.0}, "--gamma 0.99 --entropy-coef 0.0"),
        ({"anneal_lr": False, "obs_norm": True}, "--no-anneal-lr --obs-norm"),
        ({"hidden_sizes": [256, 256]}, "--hidden-sizes 256 256"),
        (
            {"env_kwargs": {"sutton_barto_reward": True}},
            """--env-kwargs '{"sutton_barto_reward": true}'""",
        ),
        ({"target_kl": None, "lr": 1e-4}, "--lr 0.0001"),
    ],
)
def test_settings_as_flags_are_flags_ppokit_train_reads_back(tmp_path, values, flags):
    assert settings_as_flags(values) == flags
    argv = ["--env", "CartPole-v1", "--run-dir", str(tmp_path / "run"), *shlex.split(flags)]
    cfg = config_to_dict(resolve_train_config(argv)[0])
    assert {k: cfg[k] for k in values if values[k] is not None} == {
        k: v for k, v in values.items() if v is not None
    }
