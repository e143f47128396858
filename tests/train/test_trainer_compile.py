"""``compile=True``: the trainer's updates run the compiled loss and train the same way."""

from __future__ import annotations

import math

import pytest
import torch

from ppokit.config import preset_config
from ppokit.objectives.compile import CompiledLoss
from ppokit.trainer import PPOTrainer, World


def _cfg(**kw):
    # 2 envs x 32 steps, 2 epochs x 2 minibatches: 4 updates, the first eager, 3 compiled
    return preset_config("Pendulum-v1", total_steps=64, num_envs=2, num_steps=32,
                         num_epochs=2, num_minibatches=2, progress=False, eval_episodes=0,
                         ent_coef=0.01, **kw)


def test_compiled_updates_match_eager(tmp_path):
    # one trainer after the other: construction seeds the global RNGs both draw from
    eager = PPOTrainer(_cfg(), run_dir=tmp_path / "eager")
    rollout_e = eager.collect().clone()  # update() writes the advantage into the rollout
    metrics_e = eager.update(rollout_e.clone())
    compiled = PPOTrainer(_cfg(compile=True), run_dir=tmp_path / "compiled")
    assert isinstance(compiled.loss_fn, CompiledLoss) and eager.loss_fn is eager.loss
    # same seed and random stream; compiled acting may only round differently
    rollout_c = compiled.collect()
    torch.testing.assert_close(rollout_c, rollout_e, rtol=1e-5, atol=1e-5)
    metrics_c = compiled.update(rollout_c)
    assert compiled.loss_fn.compiled_calls == 3 and compiled.loss_fn.eager_calls == 1
    # inductor reorders float ops: equal up to rounding, after 4 Adam steps
    for key, value in metrics_e.items():
        assert metrics_c[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for p_e, p_c in zip(eager.params, compiled.params, strict=True):
        torch.testing.assert_close(p_c, p_e, rtol=1e-4, atol=1e-5)
    # and the parameters did move: the comparison above is not between two untouched nets
    fresh = PPOTrainer(_cfg(), run_dir=tmp_path / "fresh")
    assert any(not torch.equal(p, q) for p, q in zip(eager.params, fresh.params, strict=True))
    for t in (eager, compiled, fresh):
        t.env.close()


def test_compile_with_distributed_world_is_refused(tmp_path):
    # refused before any process group is needed
    with pytest.raises(ValueError, match="compile=True does not work with distributed"):
        PPOTrainer(_cfg(compile=True), run_dir=tmp_path / "run", world=World(world_size=2))


def test_cli_compile_flag_trains_and_is_saved(tmp_path):
    import json

    from ppokit.cli import main

    run = tmp_path / "run"
    argv = ["train", "--env", "Pendulum-v1", "--total-steps", "256", "--num-envs", "2",
            "--num-steps", "64", "--num-minibatches", "2", "--num-epochs", "2", "--compile",
            "--eval-episodes", "1", "--no-progress", "--run-dir", str(run)]
    assert main(argv) == 0
    assert json.loads((run / "config.json").read_text())["compile"] is True
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 256 and math.isfinite(summary["eval_return_mean"])
