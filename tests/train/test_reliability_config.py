"""Issue #15 (training side): every config field is checked up front against the one table of
allowed values (``ppokit.train.settings.validation.RANGES``), which ``--help`` quotes."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from ppokit.train.cli.main import main
from ppokit.train.settings.config import TrainConfig, validate_config
from ppokit.train.settings.validation import RANGES

# field -> values outside its range (each must be refused)
BAD = {
    "env": ["", "   "],
    "seed": [-1, 2**32],
    "total_steps": [0, -5],
    "num_envs": [0],
    "num_steps": [0],
    "lr": [0.0, -1e-3, math.nan, math.inf],
    "adam_eps": [0.0, math.nan],
    "gamma": [0.0, 1.5, math.nan],
    "gae_lambda": [0.0, 1.01, math.nan],
    "num_epochs": [0],
    "num_minibatches": [0],
    "clip_epsilon": [0.0, 1.0, 1.5, -0.2, math.nan],
    "entropy_coef": [-0.1, math.inf, math.nan],
    "critic_coef": [-1.0, math.nan],
    "max_grad_norm": [0.0, math.inf, math.nan],
    "target_kl": [0.0, -1.0, math.inf, math.nan],
    "obs_clip": [0.0, math.nan],
    "reward_clip": [-1.0, math.inf],
    "hidden_sizes": [(), (64, 0)],
    "init_log_std": [math.nan, math.inf, -21.0, 6.0],
    "torch_threads": [0],
    "eval_episodes": [-1],
    "eval_every": [-1],
    "checkpoint_every": [0],
    "keep_checkpoint_every": [-1],
    "action_mask_key": ["", "  "],
    "recurrent_size": [0],
    "recurrent_seq_len": [-1],
}


def test_every_ranged_field_has_bad_values_here():
    assert set(BAD) == set(RANGES)


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in BAD.items() for v in vs])
def test_out_of_range_values_are_refused_naming_the_range(name, value):
    cfg = dataclasses.replace(TrainConfig(), **{name: value})
    with pytest.raises(
        ValueError, match=re.escape(f"--{name.replace('_', '-')} must be {RANGES[name][0]}, got")
    ):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lr", "0.1"),
        ("num_envs", 2.0),
        ("num_envs", True),
        ("anneal_lr", 1),
        ("progress", None),
        ("hidden_sizes", (64.0,)),
        ("env_kwargs", {1: 2}),
        ("env", 3),
    ],
)
def test_wrong_types_are_refused(name, value):
    cfg = dataclasses.replace(TrainConfig(), **{name: value})
    with pytest.raises(TypeError, match=f"Config field '{name}' expects"):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("name", "value"),
    [("vector_mode", "threads"), ("activation", "gelu"), ("loss_critic_type", "huber")],
)
def test_choices_are_refused_listing_them(name, value):
    cfg = dataclasses.replace(TrainConfig(), **{name: value})
    with pytest.raises(ValueError, match=r"must be one of \["):
        validate_config(cfg)


def test_edge_values_inside_the_ranges_are_accepted():
    validate_config(
        TrainConfig(
            seed=0,
            gamma=1.0,
            gae_lambda=1.0,
            clip_epsilon=0.999,
            entropy_coef=0.0,
            critic_coef=0.0,
            eval_episodes=0,
            keep_checkpoint_every=0,
            init_log_std=-20.0,
            target_kl=0.01,
        )
    )
    validate_config(TrainConfig(seed=2**32 - 1, init_log_std=5.0, lr=1))  # an int lr is fine


def test_help_quotes_every_range(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = " ".join(line.strip(" │╭╮╰╯─") for line in capsys.readouterr().out.splitlines())
    text = re.sub(r"\s+", " ", text)
    for name, (desc, _) in RANGES.items():
        at = text.index(f"--{name.replace('_', '-')} ")
        block = text[at : text.index("(default:", at)]
        assert f"[{desc}]" in block, (name, block)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--clip-epsilon", "1.5"], r"--clip-epsilon must be a number in \(0, 1\), got 1.5"),
        (["--seed", "-1"], r"--seed must be an integer in \[0, 4294967295\], got -1"),
        (
            ["--env", "Pendulum-v1", "--init-log-std", "nan"],
            r"--init-log-std must be a number in \[-20, 5\], got nan",
        ),
    ],
)
def test_the_issue_examples_on_the_command_line(argv, message, tmp_path, capsys):
    assert main(["train", *argv, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()  # nothing created
