"""``ppokit train | eval | plot``: errors before any work, config files, help, eval, plot."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from ppokit.train.cli.main import main
from ppokit.train.settings.config import TrainConfig, config_from_dict, validate_config
from ppokit.train.settings.files import load_config_file

FAST = ["--total-steps", "256", "--eval-episodes", "2", "--no-progress"]


def _err(capsys) -> str:
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "CartPol-v1"], r"Unknown environment id 'CartPol-v1'.*CartPole-v1"),
        (["--env", "PpokitTest/TextObs-v0"], r"observation leaf '<root>' is Text"),
        (["--num-minibatches", "512"], r"num_minibatches=512 is larger than the batch"),
        (["--num-minibatches", "3"], r"not divisible by num_minibatches=3"),
        (["--lr", "0"], r"--lr must be a positive finite number, got 0.0"),
        (["--lr", "-1e-3"], r"--lr must be a positive finite number"),
        (["--clip-epsilon", "-0.2"], r"--clip-epsilon must be a number in \(0, 1\)"),
        (["--entropy-coef", "-0.1"], r"--entropy-coef must be >= 0"),
        (["--env-kwargs", "{not json"], r"--env-kwargs .* is not valid JSON"),
        (["--env-kwargs", "[1, 2]"], r"--env-kwargs expects a JSON object .* got list"),
        (["--env-kwargs", '{"no_such_arg": 1}'], r"--env-kwargs .* do not fit CartPole-v1"),
        (["--env", "no_such_pkg_xyz:Env-v0"], r"names the module .no_such_pkg_xyz. to import"),
        (["--gamma", "1.5"], r"--gamma must be in \(0, 1\]"),
        (["--num-envs", "0"], r"--num-envs must be a positive integer"),
        (["--total-steps", "-5"], r"--total-steps must be a positive integer"),
        (["--target-kl", "0"], r"--target-kl must be positive"),
    ],
)
def test_train_rejects_bad_input_before_any_work(argv, message, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", *argv, "--run-dir", str(run)])
    assert code == 2
    assert re.search(message, _err(capsys)), message
    assert not run.exists()  # nothing was created


def test_run_dir_holding_another_run_needs_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", *FAST, "--run-dir", str(run)]) == 2
    err = _err(capsys)
    assert "already holds a run" in err and f"--resume {run}" in err
    # --overwrite starts over (removing the old run's files, keeping the user's, listed in no
    # manifest); --resume continues (here: to a larger total)
    old_events = sorted((run / "tb").iterdir())
    (run / "checkpoints" / "step_999.pt").write_bytes(b"mine")
    (run / "notes.txt").write_text("mine")
    assert main(["train", *FAST, "--run-dir", str(run), "--overwrite"]) == 0
    assert (run / "checkpoints" / "step_999.pt").read_bytes() == b"mine"
    assert (run / "notes.txt").read_text() == "mine"
    assert old_events and not any(p.exists() for p in old_events)
    assert main(["train", "--resume", str(run), "--total-steps", "512", "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 512


def test_resume_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "none")]) == 2
    assert "no run to resume there" in _err(capsys)
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--env", "Acrobot-v1"]) == 2
    assert "holds a CartPole-v1 run" in _err(capsys)


def test_train_prints_evaluation_and_writes_summary(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run), "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert "Deterministic eval over 2 episodes" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["seed"] == 4 and summary["eval_episodes"] == 2
    assert json.loads((run / "config.json").read_text())["seed"] == 4


def test_config_files_json_and_toml(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text("lr = 5e-4\nhidden_sizes = [32, 32]\nobs_norm = true\n")
    run = tmp_path / "run"
    # flags win over the file
    assert main(["train", "--config", str(toml), "--lr", "1e-4", *FAST, "--run-dir", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["lr"] == 1e-4 and cfg["hidden_sizes"] == [32, 32] and cfg["obs_norm"] is True
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learning_rate": 1e-3}))
    assert main(["train", "--config", str(bad), "--run-dir", str(tmp_path / "x")]) == 2
    assert "Unknown config field 'learning_rate'" in _err(capsys)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"num_envs": "eight"}))
    assert main(["train", "--config", str(wrong)]) == 2
    assert "expects an integer, got 'eight'" in _err(capsys)
    yaml = tmp_path / "c.yaml"
    yaml.write_text("lr: 1\n")
    assert main(["train", "--config", str(yaml)]) == 2
    assert "expected .json or .toml" in _err(capsys)
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in _err(capsys)


def test_config_helpers():
    with pytest.raises(KeyError, match="Did you mean num_envs"):
        config_from_dict({"num_env": 4})
    with pytest.raises(TypeError, match="expects true/false"):
        config_from_dict({"obs_norm": 1})
    with pytest.raises(ValueError, match="hidden-sizes must be one or more positive widths"):
        validate_config(TrainConfig(hidden_sizes=(64, 0)))
    with pytest.raises(ValueError, match="Could not parse"):
        p = __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "x.json"
        p.write_text("{not json")
        load_config_file(p)


def test_presets_pick_the_task_family(tmp_path):
    from ppokit.train.settings.config import preset_config

    hopper = preset_config("Hopper-v5")
    assert (
        hopper.num_envs,
        hopper.num_steps,
        hopper.num_epochs,
        hopper.num_minibatches,
        hopper.lr,
        hopper.gamma,
        hopper.gae_lambda,
        hopper.entropy_coef,
        hopper.critic_coef,
        hopper.max_grad_norm,
        hopper.obs_norm,
        hopper.reward_scale,
        hopper.total_steps,
    ) == (1, 2048, 10, 32, 3e-4, 0.99, 0.95, 0.01, 0.5, 0.5, True, True, 1_000_000)
    # Hopper: the shared MuJoCo preset with an entropy bonus; other MuJoCo ids without a
    # preset of their own get the shared one
    shared = preset_config("Swimmer-v5")
    assert dataclasses.replace(hopper, entropy_coef=0.0, env="Swimmer-v5") == shared
    assert preset_config("Hopper-v4") == dataclasses.replace(hopper, env="Hopper-v4")
    # Walker2d and Ant: Tianshou's MuJoCo settings (batch 8 x 256, minibatches of 64)
    for env_id in ("Walker2d-v5", "Ant-v5"):
        cfg = preset_config(env_id)
        assert (cfg.num_envs, cfg.num_steps, cfg.minibatch_size, cfg.init_log_std) == (
            8,
            256,
            64,
            -0.5,
        )
        assert cfg.recompute_advantage and not cfg.normalize_advantage and not cfg.anneal_lr
        assert (cfg.critic_coef, cfg.total_steps) == (0.25, 1_000_000)
    # Ant-v5 leaves the contact forces out of the observation, as Ant-v4 and published runs did
    assert preset_config("Ant-v5").env_kwargs == {"include_cfrc_ext_in_observation": False}
    # Humanoid: the shared MuJoCo settings (they beat Tianshou's on Humanoid's seeds 1-2)
    humanoid = preset_config("Humanoid-v5")
    assert humanoid == dataclasses.replace(shared, env="Humanoid-v5")
    # HalfCheetah has its own MuJoCo preset (rl-zoo's tuned settings); the rest is shared
    cheetah = preset_config("HalfCheetah-v5", seed=3)
    assert (
        cheetah.num_steps,
        cheetah.num_epochs,
        cheetah.minibatch_size,
        cheetah.lr,
        cheetah.anneal_lr,
        cheetah.clip_epsilon,
        cheetah.init_log_std,
        cheetah.ortho_init,
        cheetah.hidden_sizes,
        cheetah.activation,
        cheetah.seed,
    ) == (512, 20, 64, 2.0633e-5, False, 0.1, -2.0, False, (256, 256), "relu", 3)
    assert (cheetah.obs_norm, cheetah.reward_scale, cheetah.total_steps) == (True, True, 1_000_000)
    v4 = preset_config("HalfCheetah-v4")
    assert dataclasses.replace(v4, env="HalfCheetah-v5") == preset_config("HalfCheetah-v5")
    # CartPole: the dataclass defaults with a shorter horizon (gamma/lambda default 0.99/0.95)
    # and the epochs' early stop on the approximate KL
    assert preset_config("CartPole-v1") == TrainConfig(gamma=0.98, gae_lambda=0.8, target_kl=0.02)
    assert (TrainConfig().gamma, TrainConfig().gae_lambda) == (0.99, 0.95)
    assert preset_config("Pendulum-v1").gamma == 0.9


def test_help_documents_every_field(capsys):
    import dataclasses

    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name.replace('_', '-')}" in out, f.name
    assert "--config" in out and "--resume" in out
    assert "Discount factor" in out


def test_unknown_command_and_usage(capsys):
    assert main(["trian"]) == 2
    assert "Did you mean 'train'" in _err(capsys)
    assert main([]) == 2
    assert main(["--help"]) == 0


def test_eval_and_plot_commands(tmp_path, capsys):
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"s{seed}"
        assert (
            main(
                [
                    "train",
                    "--total-steps",
                    "768",
                    "--eval-episodes",
                    "0",
                    "--no-progress",
                    "--seed",
                    str(seed),
                    "--run-dir",
                    str(run),
                ]
            )
            == 0
        )
        runs.append(run)
    capsys.readouterr()
    assert main(["eval", str(runs[0]), "--episodes", "3"]) == 0
    assert "deterministic eval over 3 episodes" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert "No checkpoint" in _err(capsys)
    out_png = tmp_path / "curves.png"
    assert main(["plot", *map(str, runs), "--out", str(out_png)]) == 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "No progress.csv" in _err(capsys)
    assert main(["plot", str(runs[0]), "--metric", "nope"]) == 2
    assert "has no column 'nope'" in _err(capsys)


def test_eval_video_writes_an_mp4(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--total-steps",
                "256",
                "--eval-episodes",
                "0",
                "--no-progress",
                "--run-dir",
                str(run),
            ]
        )
        == 0
    )
    assert main(["eval", str(run), "--episodes", "1", "--video"]) == 0
    videos = list((run / "videos").glob("*.mp4"))
    assert videos and videos[0].stat().st_size > 1000


def test_torchrun_exit_runs_atexit_handlers_flushes_and_keeps_the_code(tmp_path):
    # A torchrun rank ends through _exit_without_teardown: the atexit handlers must still run
    # (in LIFO order, as at a normal exit), unflushed output must not be lost, and the exit
    # code must be the run's, since it is all torchrun looks at.
    import os
    import subprocess
    import sys

    script = (
        "import atexit, sys\n"
        "from ppokit.train.cli.main import _exit_without_teardown\n"
        "atexit.register(lambda: print('runs last, unflushed'))\n"
        "atexit.register(lambda: print('runs first', flush=True))\n"
        "print('unflushed', end='')\n"
        "sys.stderr.write('err')\n"
        "_exit_without_teardown(7)\n"
        "print('never')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # block-buffered
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 7
    assert proc.stdout == "unflushedruns first\nruns last, unflushed\n"
    assert proc.stderr == "err"
