"""``ppokit export``: the written files act as ``load_policy``'s deterministic policy does."""

from __future__ import annotations

import pytest
import torch

from ppokit.train.cli import export as cli_export
from ppokit.train.cli.main import main
from ppokit.train.deploy.export import FORMATS, load_exported
from ppokit.train.deploy.policy import load_policy
from ppokit.train.evaluation.evaluate import deterministic_action
from ppokit.train.records.checkpoint import load_checkpoint, save_checkpoint
from ppokit.train.trainer import PPOTrainer


def _train(run_dir, env):
    # obs_norm on, so the normaliser's statistics are not the identity and must be folded in
    PPOTrainer(
        env=env,
        run_dir=run_dir,
        total_steps=256,
        num_envs=2,
        num_steps=64,
        num_epochs=2,
        eval_episodes=0,
        progress=False,
        obs_norm=True,
    ).train()


@pytest.fixture(scope="module", params=["CartPole-v1", "Pendulum-v1"])
def run(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(request.param.split("-")[0])
    _train(run_dir, request.param)
    if request.param == "Pendulum-v1":
        # a short run's actions stay near 0 (policy head gain 0.01): scale the mean's output
        # layer so that some actions leave [-2, 2] and the exported clip is exercised
        path = run_dir / "checkpoints" / "latest.pt"
        state = load_checkpoint(path)
        last = [k for k in state["actor"] if k.endswith("weight")][-1]
        state["actor"][last] = state["actor"][last] * 300.0
        save_checkpoint(state, path)
    return run_dir, request.param


def _reference(run_dir, env, obs):
    """load_policy's actor on normalised observations, then the env's clip: written out here
    by hand, independently of DeployedPolicy."""
    actor, obs_norm, _ = load_policy(run_dir)
    assert obs_norm.enabled and obs_norm.rms.count > 100  # the statistics are really used
    action = deterministic_action(actor, obs_norm.normalize(obs, update=False))
    if env == "Pendulum-v1":  # Box(-2, 2, (1,))
        action = action.clamp(-2.0, 2.0)
    return action


def _observations(env):
    gen = torch.Generator().manual_seed(0)
    dim = 4 if env == "CartPole-v1" else 3
    # scaled so some Pendulum actions leave [-2, 2] and the clip matters
    return torch.randn(64, dim, generator=gen) * 3.0


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported-program"])
def test_export_matches_load_policy(run, fmt, tmp_path, capsys):
    run_dir, env = run
    if fmt == "onnx":
        pytest.importorskip("onnx")
        ort = pytest.importorskip("onnxruntime")
    out = tmp_path / f"policy{FORMATS[fmt]}"
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    obs = _observations(env)
    expected = _reference(run_dir, env, obs)
    if fmt == "onnx":
        session = ort.InferenceSession(str(out))
        got = torch.from_numpy(session.run(None, {"observation": obs.numpy()})[0])
    else:
        with torch.no_grad():
            got = load_exported(out)(obs)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if env == "CartPole-v1":
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert (expected.abs() == 2.0).any()  # the clip was exercised
    # another batch size than the one captured
    if fmt != "onnx":
        with torch.no_grad():
            one = load_exported(out)(obs[:1])
        torch.testing.assert_close(one, expected[:1], rtol=1e-5, atol=1e-5)


def test_default_output_and_best(tmp_path, capsys):
    run_dir = tmp_path / "r"
    PPOTrainer(
        env="CartPole-v1",
        run_dir=run_dir,
        total_steps=128,
        num_envs=2,
        num_steps=32,
        eval_every=1,
        eval_episodes=2,
        progress=False,
    ).train()
    assert (
        main(["export", str(run_dir), "--format", "exported-program", "--checkpoint", "best"]) == 0
    )
    out = run_dir / "policy-best.pt2"
    assert out.is_file() and str(out) in capsys.readouterr().out
    actor, _, _ = load_policy(run_dir, checkpoint="best")
    obs = torch.randn(8, 4)
    with torch.no_grad():
        assert torch.equal(load_exported(out)(obs), deterministic_action(actor, obs))


def test_bad_input_is_refused_with_exit_2(tmp_path, capsys, monkeypatch):
    assert main(["export", str(tmp_path), "--format", "torchscript"]) == 2
    assert "no checkpoints/" in capsys.readouterr().err
    (tmp_path / "checkpoints").mkdir()
    assert main(["export", str(tmp_path), "--format", "torchscript", "--checkpoint", "best"]) == 2
    assert "--eval-every" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "tflite"]) == 2
    err = capsys.readouterr().err
    assert "'tflite'" in err and "exported-program" in err
    real = cli_export.find_spec
    monkeypatch.setattr(
        cli_export, "find_spec", lambda name: None if name == "onnx" else real(name)
    )
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "onnx" in err and "ppokit[export]" in err
