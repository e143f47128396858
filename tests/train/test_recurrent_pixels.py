"""Pixels + LSTM/GRU (``--recurrent`` on image observations): Nature CNN -> core -> heads.

A tiny image task (36 x 36 grey frames, the smallest the Nature CNN takes): the sequence
re-run with resets against a step-by-step loop, uint8 frames and the state in the rollout,
the layouts, and a short run of the trainer that writes its summary.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from recurrent_steps import step_loop_against_sequence

from ppokit.modules.cnn import NatureCNN, SharedTrunk
from ppokit.modules.recurrent import recurrent_modules
from ppokit.train.build import build_actor_critic
from ppokit.train.deploy.policy import load_policy
from ppokit.train.recurrent.state import PolicyState
from ppokit.train.trainer import PPOTrainer

SIDE = 36  # the Nature CNN's smallest input: 8x8/4 -> 8, 4x4/2 -> 3, 3x3/1 -> 1


class ImageCue(gym.Env):
    """The cue task on frames: the first frame lights the left or the right half, then the
    frames are dark; at the last of ``length`` steps the action must name the lit half
    (reward 1). Without memory the best expected return is 0.5."""

    def __init__(self, length: int = 4) -> None:
        self.observation_space = spaces.Box(0, 255, (SIDE, SIDE, 1), np.uint8)
        self.action_space = spaces.Discrete(2)
        self.length = length

    def _frame(self, lit: int | None) -> np.ndarray:
        frame = np.zeros((SIDE, SIDE, 1), np.uint8)
        if lit is not None:
            frame[:, lit * SIDE // 2 : (lit + 1) * SIDE // 2] = 255
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return self._frame(self.cue), {}

    def step(self, action):
        self.t += 1
        last = self.t >= self.length - 1
        return self._frame(None), float(last and int(action) == self.cue), last, False, {}


gym.register("ppokit_test/ImageCue-v0", entry_point=ImageCue, max_episode_steps=10)
ENV = SimpleNamespace(obs_shape=(SIDE, SIDE, 1), discrete=True, num_actions=2)


@pytest.mark.parametrize(("kind", "shared"), [("lstm", True), ("gru", False)])
def test_image_core_sequence_with_resets_matches_step_loop(kind: str, shared: bool) -> None:
    torch.manual_seed(0)
    actor, critic = build_actor_critic(
        ENV, recurrent=kind, recurrent_size=8, recurrent_shared=shared
    )
    n, t = 2, 5
    frames = torch.randint(0, 256, (n, t, SIDE, SIDE, 1), dtype=torch.uint8)
    is_init = torch.zeros(n, t, 1, dtype=torch.bool)
    is_init[0, 2], is_init[1, 0], is_init[1, 3] = True, True, True
    step_loop_against_sequence(actor, critic, frames, is_init)


def test_image_layouts() -> None:
    def cnns(actor, critic) -> set[int]:
        return {id(m) for m in [*actor.modules(), *critic.modules()] if isinstance(m, NatureCNN)}

    shared = build_actor_critic(ENV, recurrent="lstm", recurrent_shared=True)
    assert len(cnns(*shared)) == 1 and len(list(recurrent_modules(*shared))) == 1
    assert any(isinstance(m, SharedTrunk) for m in shared[0].modules())
    # separate cores on one CNN (share_trunk, the default), or on two
    one_cnn = build_actor_critic(ENV, recurrent="gru")
    assert len(cnns(*one_cnn)) == 1 and len(list(recurrent_modules(*one_cnn))) == 2
    two_cnns = build_actor_critic(ENV, recurrent="gru", share_trunk=False)
    assert len(cnns(*two_cnns)) == 2
    with pytest.raises(ValueError, match="--no-share-trunk asks for two CNNs"):
        build_actor_critic(ENV, recurrent="lstm", recurrent_shared=True, share_trunk=False)


def test_image_lstm_run_stores_uint8_frames_and_writes_a_summary(tmp_path) -> None:
    trainer = PPOTrainer(
        env="ppokit_test/ImageCue-v0",
        run_dir=tmp_path,
        recurrent="lstm",
        recurrent_shared=True,
        recurrent_size=16,
        num_envs=2,
        num_steps=8,
        recurrent_seq_len=4,
        num_minibatches=2,
        num_epochs=1,
        total_steps=32,
        eval_episodes=2,
        progress=False,
    )
    rollout = trainer.collect()
    assert rollout["observation"].dtype == torch.uint8
    assert rollout["observation"].shape == (2, 8, SIDE, SIDE, 1)
    assert rollout["recurrent_state_h"].shape == (2, 8, 1, 16)
    # the episodes last 3 steps: is_init marks the step after each end, per env
    torch.testing.assert_close(rollout["is_init"][:, 1:], rollout["next", "done"][:, :-1])
    assert trainer.update(rollout)["minibatch_updates"] == 2
    result = trainer.train()  # 32 steps of iterations, after the 16 collected by hand above
    assert (result.env_steps, result.iterations) == (48, 2)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["eval_episodes"] == 2
    # load_policy rebuilds the same layout (one CNN and core) from the run's config
    actor, _, cfg = load_policy(tmp_path)
    assert cfg.recurrent_shared and len(PolicyState(actor, batch=1).keys) == 2  # h and c
    for name, value in actor.state_dict().items():
        torch.testing.assert_close(value, trainer.actor.state_dict()[name])
