"""Gymnasium-Robotics ids: registered on use, the install hint, the MuJoCo check, Fetch."""

from __future__ import annotations

import enum
import sys
import types

import pytest

from ppokit.envs.robotics import check_mujoco_enums, import_robotics, is_robotics_id
from ppokit.envs.sources import check_env_id
from ppokit.train.cli.main import main


def test_robotics_ids_are_told_from_the_name():
    assert is_robotics_id("FetchReachDense-v4") and is_robotics_id("AntMaze_UMaze-v5")
    assert is_robotics_id("HandManipulateBlock-v1")
    assert not is_robotics_id("Hopper-v5") and not is_robotics_id("Fetcher-v0")
    assert not is_robotics_id(None)


def test_a_missing_extra_names_the_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gymnasium_robotics", None)  # import now fails
    with pytest.raises(ImportError, match=r'not installed: pip install "ppokit\[robotics\]"'):
        check_env_id("FetchReachDense-v4")
    import_robotics("CartPole-v1")  # other ids import nothing
    assert main(["train", "--env", "FetchReachDense-v4", "--total-steps", "64"]) == 2
    assert 'pip install "ppokit[robotics]"' in capsys.readouterr().err


def _fake_mujoco(monkeypatch, base: type, version: str) -> None:
    joints = base("mjtJoint", {"mjJNT_SLIDE": 2, "mjJNT_HINGE": 3})  # type: ignore[call-overload]
    fake = types.SimpleNamespace(mjtJoint=joints, __version__=version)
    monkeypatch.setitem(sys.modules, "mujoco", fake)


def test_a_mujoco_whose_enums_break_gymnasium_robotics_is_refused(monkeypatch):
    monkeypatch.setattr("importlib.metadata.version", lambda name: "1.4.2")
    # MuJoCo < 3.12: enums equal to integers (numpy's included), so the models build
    _fake_mujoco(monkeypatch, enum.IntEnum, "3.11.0")
    check_mujoco_enums("FetchReachDense-v4")
    # 3.12+: they are not
    _fake_mujoco(monkeypatch, enum.Enum, "3.17.0")
    with pytest.raises(ImportError, match=r"gymnasium-robotics 1\.4\.2 cannot build .* 3\.17\.0"):
        check_mujoco_enums("FetchReachDense-v4")
    # a later Gymnasium-Robotics may compare them differently: not refused
    monkeypatch.setattr("importlib.metadata.version", lambda name: "1.5.0")
    check_mujoco_enums("FetchReachDense-v4")


@pytest.mark.slow  # about 20 s on the shared 2-core box
def test_fetch_reach_trains_and_reports_a_success_rate(tmp_path):
    # needs the robotics extra (not in CI's dev install): skipped without it
    pytest.importorskip("gymnasium_robotics")
    from ppokit.train.trainer import PPOTrainer

    trainer = PPOTrainer(
        env="FetchReachDense-v4",
        run_dir=tmp_path,
        total_steps=256,
        num_envs=2,
        num_steps=64,
        num_minibatches=2,
        num_epochs=1,
        eval_episodes=2,
        progress=False,
    )
    summary = trainer.train().summary
    assert summary["eval_episodes"] == 2 and summary["eval_lengths"] == [50, 50]
    assert summary["eval_success_rate"] in (0.0, 0.5, 1.0)
