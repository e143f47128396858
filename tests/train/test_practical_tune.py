"""``ppokit tune``: a tiny Optuna study in SQLite, resumed, and its best config trained on."""

from __future__ import annotations

import json

import pytest

from ppokit.train.cli.arguments import resolve_train_config
from ppokit.train.cli.main import main

optuna = pytest.importorskip("optuna")

_TINY = [
    "--env",
    "CartPole-v1",
    "--total-steps",
    "256",
    "--eval-every",
    "1",
    "--eval-episodes",
    "2",
    "--params",
    "lr,num_epochs,width,clip_epsilon",
]


def _study(db):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{db}")


def test_tiny_study_resumes_and_writes_a_trainable_config(tmp_path, capsys):
    db = tmp_path / "study.db"
    common = [
        *_TINY,
        "--storage",
        f"sqlite:///{db}",
        "--study-name",
        "s",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    assert main(["tune", *common, "--trials", "2"]) == 0
    study = _study(db)
    assert len(study.trials) == 2
    first = [t.params for t in study.trials]
    # a kill mid-trial leaves it RUNNING: the rerun marks it failed and does not count it
    study.ask()
    assert main(["tune", *common, "--trials", "3"]) == 0
    study = _study(db)
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == 1 and len(study.trials) == 4
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 3
    assert [t.params for t in study.trials[:2]] == first  # nothing redone
    # the finished trials reported their intermediate eval returns to the pruner
    assert all(t.intermediate_values for t in done)
    out = tmp_path / "runs" / "s" / "best_config.json"
    assert str(out) in capsys.readouterr().out
    values = json.loads(out.read_text())
    best = study.best_trial.params
    assert values["lr"] == pytest.approx(best["lr"])
    assert values["hidden_sizes"] == [best["width"]] * 2
    assert values["num_epochs"] == best["num_epochs"]
    assert "run_dir" not in values
    cfg, _, _ = resolve_train_config(["--config", str(out), "--run-dir", str(tmp_path / "final")])
    assert cfg.lr == pytest.approx(best["lr"]) and cfg.clip_epsilon == best["clip_epsilon"]
    assert cfg.hidden_sizes == (best["width"],) * 2
    # a finished study: rerunning runs nothing more
    assert main(["tune", *common, "--trials", "3"]) == 0
    assert "0 trial(s) run now" in capsys.readouterr().out


@pytest.mark.parametrize(
    "storage", ["sqlite:////nonexistent_dir_ppokit/x/study.db", "study.db", "nosuchdb://x"]
)
def test_bad_storage_is_a_clear_error(storage, tmp_path, capsys):
    assert (
        main(["tune", *_TINY, "--trials", "1", "--storage", storage, "--runs-dir", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err
    assert repr(storage) in err and "sqlite:///study.db" in err
    assert not any(tmp_path.iterdir())


def test_bad_params_refused(capsys):
    assert main(["tune", "--params", "lr,learning_rate"]) == 2
    assert "['learning_rate'] not searchable" in capsys.readouterr().err
