"""``compile=True``: the trainer's updates run as one compiled graph and train the same way."""

from __future__ import annotations

import math

import pytest
import torch

from ppokit.fast.update import FusedPPOUpdate
from ppokit.train.settings.config import preset_config
from ppokit.train.trainer import PPOTrainer


def _cfg(**kw):
    # 2 envs x 32 steps, 2 epochs x 2 minibatches: 4 updates, the first eager, 3 compiled
    return preset_config(
        "Pendulum-v1",
        total_steps=64,
        num_envs=2,
        num_steps=32,
        num_epochs=2,
        num_minibatches=2,
        progress=False,
        eval_episodes=0,
        entropy_coef=0.01,
        **kw,
    )


def test_compiled_updates_match_eager(tmp_path):
    # one trainer after the other: construction seeds the global RNGs both draw from
    eager = PPOTrainer(_cfg(), run_dir=tmp_path / "eager")
    rollout_e = eager.collect().clone()  # update() writes the advantage into the rollout
    metrics_e = eager.update(rollout_e.clone())
    compiled = PPOTrainer(_cfg(compile=True), run_dir=tmp_path / "compiled")
    assert isinstance(compiled.update_step, FusedPPOUpdate) and compiled.update_kind == "fused"
    assert eager.update_kind == "eager"
    # same seed and random stream; compiled acting may only round differently
    rollout_c = compiled.collect()
    torch.testing.assert_close(rollout_c, rollout_e, rtol=1e-5, atol=1e-5)
    metrics_c = compiled.update(rollout_c)
    assert (compiled.update_step.fused_calls, compiled.update_step.eager_calls) == (3, 1)
    # inductor reorders float ops: equal up to rounding, after 4 Adam steps
    for key, value in metrics_e.items():
        assert metrics_c[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for p_e, p_c in zip(eager.params, compiled.params, strict=True):
        torch.testing.assert_close(p_c, p_e, rtol=1e-4, atol=1e-5)
    # and the parameters did move: the comparison above is not between two untouched nets
    fresh = PPOTrainer(_cfg(), run_dir=tmp_path / "fresh")
    assert any(not torch.equal(p, q) for p, q in zip(eager.params, fresh.params, strict=True))
    _fused_updates_write_the_optimizer_state_that_checkpoints_keep(compiled)
    for t in (eager, compiled, fresh):
        t.env.close()


def _fused_updates_write_the_optimizer_state_that_checkpoints_keep(trainer: PPOTrainer) -> None:
    # The fused graph updates Adam's own state tensors in place; if it kept copies, the
    # checkpoint would save a stale optimizer and a resumed run would restart Adam's moments.
    # (Run on the trainer of the test above, whose graph is compiled already: one compile
    # less in the suite.)
    from ppokit.train.records.checkpoint import load_checkpoint

    before = {k: v.clone() for k, v in trainer.optimizer.state[trainer.params[0]].items()}
    trainer.update(trainer.collect())  # 4 more minibatches, all fused
    assert trainer.update_step.fused_calls == 7
    assert {float(s["step"]) for s in trainer.optimizer.state.values()} == {8.0}
    after = trainer.optimizer.state[trainer.params[0]]
    assert not torch.equal(after["exp_avg"], before["exp_avg"])
    saved = load_checkpoint(trainer.save())["optimizer"]["state"]
    for index, param in enumerate(trainer.params):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(saved[index][key], trainer.optimizer.state[param][key]), key


def test_cli_compile_flag_trains_and_is_saved(tmp_path):
    import json

    from ppokit.train.cli.main import main

    run = tmp_path / "run"
    argv = [
        "train",
        "--env",
        "Pendulum-v1",
        # the shapes of _cfg: the graph compiled by the test above, if this worker ran it,
        # comes from inductor's cache
        "--total-steps",
        "64",
        "--num-envs",
        "2",
        "--num-steps",
        "32",
        "--num-minibatches",
        "2",
        "--num-epochs",
        "2",
        "--entropy-coef",
        "0.01",
        "--compile",
        "--eval-episodes",
        "1",
        "--no-progress",
        "--run-dir",
        str(run),
    ]
    assert main(argv) == 0
    assert json.loads((run / "config.json").read_text())["compile"] is True
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 64 and math.isfinite(summary["eval_return_mean"])
