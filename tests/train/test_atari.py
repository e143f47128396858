"""Atari: the preprocessing on real ale-py games, whole-game scores, uint8 rollouts, a short run.

ale-py (the ``atari`` extra) bundles the ROMs; these tests step real games for a few dozen
steps only.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

pytest.importorskip("ale_py")

from ppokit.envs.atari import AtariGames, atari_game, make_atari_vector_env
from ppokit.envs.atari_ids import is_atari_id
from ppokit.envs.gym import GymVecEnv


class ScriptedGames:
    """A same-step vector env of 2 games whose rewards, ends and lives follow a script."""

    def __init__(self, script: list[dict[str, Any]]) -> None:
        self.script = script
        self.t = 0
        self.num_envs = 2
        self.single_observation_space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
        self.single_action_space = spaces.Discrete(4)
        self.observation_space = self.action_space = None
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def reset(self, *, seed=None, options=None):
        return np.zeros((2, 4, 84, 84), np.uint8), {"lives": np.array([3, 3])}

    def step(self, action):
        s = self.script[self.t]
        self.t += 1
        obs = np.full((2, 4, 84, 84), self.t, np.uint8)
        info = {"lives": np.array(s["lives"]), "final_obs": obs - 1}
        return (obs, np.array(s["r"], np.float64), np.array(s["term"]), np.array(s["trunc"]), info)

    def close(self):
        pass


# env 0: +4, life lost (3 -> 2, terminated), +1, game over (lives back to 3): score 5 in 4 steps
# env 1: -2, +0, truncated at step 3 with lives 3 -> 3: score -2 in 3 steps; then +7
SCRIPT = [
    {"r": [4, -2], "term": [False, False], "trunc": [False, False], "lives": [3, 3]},
    {"r": [0, 0], "term": [True, False], "trunc": [False, False], "lives": [2, 3]},
    {"r": [1, 0], "term": [False, False], "trunc": [False, True], "lives": [2, 3]},
    {"r": [0, 7], "term": [True, False], "trunc": [False, False], "lives": [3, 3]},
]


@pytest.mark.parametrize("training", [True, False])
def test_whole_game_scores_and_training_rewards(training: bool) -> None:
    games = AtariGames(ScriptedGames(SCRIPT), training=training)
    games.reset(seed=0)
    rewards, ends = [], []
    for _ in SCRIPT:
        _, reward, term, trunc, info = games.step(np.zeros(2, np.int64))
        rewards.append(reward.tolist())
        if term.any() or trunc.any():
            ends.append(info["_final_obs"].tolist())
    want = [[4, -2], [0, 0], [1, 0], [0, 7]]
    assert rewards == ([[1, -1], [0, 0], [1, 0], [0, 1]] if training else want)
    assert ends == [[True, False], [False, True], [True, False]]
    # the life loss at step 2 ends no game; env 1 (truncated, step 3) scores -2 in 3 steps,
    # env 0 (game over, step 4) 4 + 0 + 1 + 0 = 5 in 4 steps
    assert games.pop_games() == ([-2.0, 5.0], [3, 4])
    assert games.pop_games() == ([], [])


def test_the_collector_logs_whole_game_scores() -> None:
    from tensordict.nn import TensorDictModule

    from ppokit.train.collect.collector import RolloutCollector

    env = GymVecEnv(AtariGames(ScriptedGames(SCRIPT), training=True))
    assert env.obs_dtype == torch.uint8

    def policy(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(obs.shape[0], dtype=torch.int64), torch.zeros(obs.shape[0])

    td_policy = TensorDictModule(policy, ["observation"], ["action", "action_log_prob"])
    collector = RolloutCollector(env, td_policy, num_steps=4, seed=0)
    rollout = collector.collect()
    # the training signal: clipped rewards, an episode end at the life loss
    assert rollout.get(("next", "reward"))[0, :, 0].tolist() == [1, 0, 1, 0]
    assert rollout.get(("next", "terminated"))[0, :, 0].tolist() == [False, True, False, True]
    # the true final frame of the life-loss step (scripted as the step's frame minus 1)
    assert int(rollout.get(("next", "observation"))[0, 1, 0, 0, 0]) == 1
    # the logged returns are the raw whole-game scores (see the script above)
    stats = collector.pop_episode_stats()
    assert (stats.returns, stats.lengths) == ([-2.0, 5.0], [3, 4])


def test_ale_backend_preprocessing_on_a_real_game() -> None:
    venv = make_atari_vector_env("ALE/Breakout-v5", 2)
    obs, info = venv.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert venv.single_action_space.n == 4 and info["lives"].tolist() == [5, 5]
    rng = np.random.default_rng(0)
    life_lost = False
    for _ in range(400):  # random Breakout loses its first ball within a few hundred steps
        obs, reward, term, _, info = venv.step(rng.integers(0, 4, 2))
        assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        if term.any():
            i = int(np.flatnonzero(term)[0])
            assert info["lives"][i] == 4  # a lost life ends the training episode only
            life_lost = True
            break
    assert life_lost
    assert venv.pop_games() == ([], [])
    venv.close()


def test_gymnasium_backend_matches_the_layout() -> None:
    pytest.importorskip("cv2")
    venv = make_atari_vector_env("PongNoFrameskip-v4", 2, backend="gymnasium")
    obs, _ = venv.reset(seed=[0, 1])  # per-env seeds, as GymVecEnv passes them
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    obs, reward, *_ = venv.step(np.zeros(2, np.int64))
    assert reward.dtype == np.float32
    venv.close()


def test_ids_sticky_actions_and_unknown_games() -> None:
    assert atari_game("ALE/Breakout-v5") == ("breakout", 0.25)
    assert atari_game("BreakoutNoFrameskip-v4") == ("breakout", 0.0)
    assert is_atari_id("ALE/Pong-v5") and not is_atari_id("CartPole-v1")
    with pytest.raises(ValueError, match=r"Unknown Atari id 'ALE/Breakot-v5'.*ALE/Breakout-v5"):
        atari_game("ALE/Breakot-v5")
    with pytest.raises(ValueError, match="backend must be 'ale' or 'gymnasium'"):
        make_atari_vector_env("ALE/Pong-v5", 1, backend="envpool")


def test_missing_extra_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ale_py", None)  # import ale_py now fails
    with pytest.raises(ImportError, match=r'pip install "ppokit\[atari\]"'):
        GymVecEnv("ALE/Breakout-v5", 1)
    from ppokit.envs.sources import check_env_id

    with pytest.raises(ImportError, match=r'pip install "ppokit\[atari\]"'):
        check_env_id("BreakoutNoFrameskip-v4")


def test_unsupported_image_layout_names_the_shape() -> None:
    from ppokit.envs.spaces import check_spaces

    with pytest.raises(ValueError, match=r"shape \(20, 20, 20\) is not supported.*uint8"):
        check_spaces(spaces.Box(0, 255, (20, 20, 20), np.uint8), spaces.Discrete(2))
    check_spaces(spaces.Box(0, 255, (84, 84, 3), np.uint8), spaces.Discrete(2))  # HWC: fine


def test_rollout_stores_uint8_frames() -> None:
    from ppokit.train.build import build_actor_critic
    from ppokit.train.collect.collector import RolloutCollector

    env = GymVecEnv("ALE/Breakout-v5", 8)
    actor, critic = build_actor_critic(env)
    collector = RolloutCollector(env, actor, num_steps=128, seed=0, critic=critic)
    rollout = collector.rollout
    obs = rollout.get("observation")
    assert obs.dtype == torch.uint8 and env.obs_dtype == torch.uint8
    # 8 envs x 128 steps x 4 frames x 84 x 84 pixels x 1 byte = 28,901,376 bytes (~29 MB;
    # float32 would be 4x: ~116 MB)
    assert obs.nbytes == 8 * 128 * 4 * 84 * 84 == 28_901_376
    # each frame once: no ("next", "observation") (it was a second 28.9 MB), the values of
    # the bootstrap states instead
    assert ("next", "observation") not in rollout.keys(True)
    # + 1,024 steps x (action 8 + log-prob 4 + reward 4 + 3 flags + 2 values x 4) bytes
    leaves = rollout.values(include_nested=True, leaves_only=True)
    assert sum(leaf.nbytes for leaf in leaves) == 28_901_376 + 1024 * (8 + 4 + 4 + 3 + 8)
    env.close()


def test_short_atari_run_writes_a_summary_and_plots(tmp_path) -> None:
    from ppokit.train.cli.main import main
    from ppokit.train.settings.presets import preset_config, preset_name
    from ppokit.train.trainer import PPOTrainer

    assert preset_name("ALE/Breakout-v5") == "atari"
    cfg = preset_config(
        "ALE/Breakout-v5",
        num_envs=2,
        num_steps=32,
        total_steps=128,
        eval_episodes=0,
        progress=False,
        device="cpu",
    )
    assert (cfg.lr, cfg.clip_epsilon, cfg.entropy_coef, cfg.num_epochs) == (2.5e-4, 0.1, 0.01, 4)
    trainer = PPOTrainer(cfg, run_dir=tmp_path)
    assert not trainer.obs_norm.enabled  # images are never normalised
    assert trainer.collector.rollout.get("observation").dtype == torch.uint8
    result = trainer.train()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["env"] == "ALE/Breakout-v5" and summary["env_steps"] == result.env_steps == 128
    # no whole game of Breakout ends in 64 steps per env: plot a column every row has
    out = str(tmp_path / "curve.png")
    assert main(["plot", str(tmp_path), "--out", out, "--metric", "loss_critic"]) == 0
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_evaluation_plays_whole_games_with_raw_scores() -> None:
    env = GymVecEnv("ALE/Breakout-v5", 1, training=False)
    assert isinstance(env.env, AtariGames) and not env.env.training
    env.close()


def test_video_env_renders_the_raw_screen() -> None:
    pytest.importorskip("cv2")
    from ppokit.train.evaluation.video import video_env, video_fps

    env = video_env("ALE/Pong-v5")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84)
    assert env.render().shape == (210, 160, 3)  # the game's RGB frame, not the network input
    assert video_fps("ALE/Pong-v5", env) == 15
    env.close()


def test_eval_video_of_an_atari_policy(tmp_path, monkeypatch) -> None:
    pytest.importorskip("cv2")
    import imageio.v2 as imageio

    from ppokit.train.build import build_actor_critic
    from ppokit.train.evaluation import evaluate
    from ppokit.train.evaluation.video import video_env

    # a game cut after 400 frames (100 agent steps) keeps the test short
    monkeypatch.setattr(
        evaluate, "video_env", lambda env_id: video_env(env_id, max_num_frames_per_episode=400)
    )
    with GymVecEnv("ALE/Breakout-v5", 1) as env:
        actor, _ = build_actor_critic(env)
    (path,) = evaluate.record_video(actor, "ALE/Breakout-v5", tmp_path, episodes=1)
    frames = imageio.mimread(path)
    assert frames[0].shape == (210, 160, 3)  # raw RGB screens of the game
    assert 50 <= len(frames) <= 102


def test_gae_value_pass_reuses_frames_exactly(tmp_path) -> None:
    from ppokit.train.trainer import PPOTrainer

    trainer = PPOTrainer(
        env="ALE/Breakout-v5",
        run_dir=tmp_path,
        num_envs=2,
        num_steps=64,
        total_steps=128,
        eval_episodes=0,
        progress=False,
        device="cpu",
        recompute_advantage=True,  # the path that keeps the next frames and reruns the critic
    )
    rollout = trainer.collect()
    reuse = trainer.critic.module  # ReuseNextStep around trunk + value head
    frames = []
    reuse.net[0].register_forward_hook(lambda m, args, out: frames.append(args[0].shape[0]))
    fast = trainer.estimate_advantage(rollout.clone())
    # V(s_t) for all 2 x 64 frames, V(s_t+1) only where the next frame is not the next step's
    # observation: after the last step, and at most after each episode end (a life lost
    # mid-game may leave the frame as it is)
    ends = int(rollout.get(("next", "done"))[:, :-1].sum())
    assert 2 * 64 + 2 <= sum(frames) <= 2 * 64 + 2 + ends
    reuse.forward = reuse.net.forward  # the reference: every frame through the network
    slow = trainer.estimate_advantage(rollout.clone())
    for key in ("state_value", ("next", "state_value"), "advantage", "value_target"):
        torch.testing.assert_close(fast.get(key), slow.get(key), rtol=1e-5, atol=1e-6)
    trainer.env.close()


@pytest.mark.slow
def test_an_atari_run_resumes_from_the_command_line(tmp_path) -> None:
    # --resume takes the env id from the checkpoint; a fresh process knows ALE's ids only
    # after importing ale_py, which the resume path must do before building an env
    import subprocess

    from ppokit.train.cli.main import main

    run = str(tmp_path / "run")
    common = ["--num-envs", "2", "--num-steps", "32", "--no-progress"]
    argv = ["train", "--env", "ALE/Breakout-v5", "--total-steps", "64", "--eval-episodes", "0"]
    assert main([*argv, *common, "--device", "cpu", "--run-dir", run]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "ppokit", "train", "--resume", run, "--total-steps", "128"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["env_steps"] == 128
