"""``ppokit export`` of a recurrent run: the hidden state as explicit inputs and outputs, the
files stepping an episode as ``load_policy``'s actor does with its carried state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppokit.train.cli.main import main
from ppokit.train.deploy.export import FORMATS, load_exported
from ppokit.train.deploy.policy import load_policy
from ppokit.train.evaluation.evaluate import deterministic_action
from ppokit.train.recurrent.state import PolicyState
from ppokit.train.trainer import PPOTrainer

B, T = 3, 6


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rec_export")
    PPOTrainer(
        env="ppokit/PendulumNoVel-v1",
        run_dir=run_dir,
        recurrent="lstm",
        recurrent_size=8,
        hidden_sizes=(8,),
        num_envs=2,
        num_steps=16,
        num_minibatches=2,
        total_steps=32,
        num_epochs=1,
        eval_episodes=0,
        progress=False,
        obs_norm=True,  # the normaliser's statistics must be folded in
    ).train()
    return run_dir


def _reference(run_dir, obs, starts):
    """load_policy's actor stepped with PolicyState (state zeroed where an episode starts),
    on normalised observations, then the env's clip to [-2, 2]."""
    actor, obs_norm, _ = load_policy(run_dir)
    state = PolicyState(actor, batch=B)
    actions, states = [], []
    for t in range(T):
        if t:
            state.advance(state.step_td, starts[:, t])
        action = deterministic_action(
            actor, obs_norm.normalize(obs[:, t], update=False), state=state
        )
        actions.append(action.clamp(-2.0, 2.0))
        states.append(state.step_td["next", "recurrent_state_h"])
    return torch.stack(actions, 1), torch.stack(states, 1)


@pytest.mark.parametrize(
    "fmt", [pytest.param("onnx", marks=pytest.mark.slow), "torchscript", "exported-program"]
)
def test_recurrent_export_steps_like_load_policy(run, fmt, tmp_path, capsys):
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(B, T, 2, generator=gen) * 3.0
    starts = torch.zeros(B, T, dtype=torch.bool)
    starts[0, 3], starts[2, 2] = True, True  # new episodes there: the caller passes zeros
    out = tmp_path / f"policy{FORMATS[fmt]}"  # ONNX export: ~15 s on the CI box, so slow
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
    assert "export:" in capsys.readouterr().out
    h = c = torch.zeros(B, 1, 8)
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")

        session = ort.InferenceSession(str(out))
        names = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
        assert names == (
            ["observation", "recurrent_state_h", "recurrent_state_c"],
            ["action", "next_recurrent_state_h", "next_recurrent_state_c"],
        )

        def policy(o, h, c):
            feed = {"observation": o.numpy(), "recurrent_state_h": h.numpy()}
            feed["recurrent_state_c"] = c.numpy()
            return [torch.from_numpy(np.asarray(v)) for v in session.run(None, feed)]
    else:
        policy = load_exported(out)
    actions, hs = [], []
    for t in range(T):
        keep = (~starts[:, t]).float()[:, None, None]
        action, h, c = policy(obs[:, t], h * keep, c * keep)
        actions.append(action)
        hs.append(h)
    ref_actions, ref_h = _reference(run, obs, starts)
    torch.testing.assert_close(torch.stack(actions, 1), ref_actions, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.stack(hs, 1), ref_h, rtol=1e-4, atol=1e-5)
