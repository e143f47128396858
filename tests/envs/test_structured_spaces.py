"""Structured spaces: leaves and heads, masks, the TensorDict env adapter, tic-tac-toe."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict

from ppokit.envs.gym import GymVecEnv
from ppokit.envs.masks import check_mask, split_mask
from ppokit.envs.spaces import action_heads, check_spaces, is_flat, observation_leaves
from ppokit.envs.structured import StructuredVecEnv, open_env

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from structured_toys import InfoMaskGame, MatchMultiDiscrete


def test_nested_leaves_and_heads():
    obs = spaces.Dict(
        {
            "arm": spaces.Tuple((spaces.Box(-1, 1, (2, 3)), spaces.Discrete(5))),
            "cam": spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "bits": spaces.MultiBinary(3),
            "action_mask": spaces.MultiBinary(7),
        }
    )
    got = [(leaf.name, leaf.kind, leaf.shape, leaf.sizes) for leaf in observation_leaves(obs)]
    assert got == [
        ("action_mask", "mask", (7,), ()),
        ("arm.0", "vector", (2, 3), ()),
        ("arm.1", "discrete", (), (5,)),
        ("bits", "binary", (3,), ()),
        ("cam", "image", (8, 8, 3), ()),
    ]
    act = spaces.Tuple((spaces.MultiDiscrete([3, 4]), spaces.Box(-1, 1, (2, 2))))
    heads = [(h.name, h.kind, h.shape, h.sizes) for h in action_heads(act)]
    assert heads == [
        ("0.0", "categorical", (), (3,)),
        ("0.1", "categorical", (), (4,)),
        ("1", "normal", (2, 2), ()),
    ]
    assert is_flat(spaces.Box(-1, 1, (3,)), spaces.Discrete(2))
    assert not is_flat(obs, spaces.Discrete(7))


def test_unsupported_leaves_are_named():
    with pytest.raises(ValueError, match=r"observation leaf 'a\.t' is Text"):
        check_spaces(
            spaces.Dict({"a": spaces.Dict({"t": spaces.Text(4)})}), spaces.Discrete(2), env_id="E"
        )
    with pytest.raises(ValueError, match=r"action leaf 'x' is MultiDiscrete"):
        check_spaces(
            spaces.Box(-1, 1, (2,)), spaces.Dict({"x": spaces.MultiDiscrete([[2, 2], [2, 2]])})
        )
    with pytest.raises(ValueError, match="starting at 1"):
        action_heads(spaces.Discrete(3, start=1))


def test_check_mask_errors_and_values():
    ok = check_mask(np.array([[1, 0], [0, 1]], np.int8), num_envs=2, num_actions=2)
    assert ok.dtype == np.bool_ and ok.tolist() == [[True, False], [False, True]]
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*expected \(2, 2\)"):
        check_mask(np.ones((2, 3), bool), num_envs=2, num_actions=2)
    with pytest.raises(ValueError, match="dtype float32"):
        check_mask(np.ones((1, 2), np.float32), num_envs=1, num_actions=2)
    with pytest.raises(ValueError, match=r"holds \[2\]"):
        check_mask(np.array([[1, 2]]), num_envs=1, num_actions=2)
    with pytest.raises(ValueError, match="G: action_mask of env 1 at step 5 allows no action"):
        check_mask(np.array([[1, 0], [0, 0]]), num_envs=2, num_actions=2, env_id="G", step=5)
    with pytest.raises(ValueError, match=r"head 1 .* no legal choice in env 0"):
        split_mask(np.array([[True, True, False, False]]), (2, 2))


def test_open_env_picks_the_adapter():
    with open_env("CartPole-v1", 1) as flat:
        assert isinstance(flat, GymVecEnv) and flat.env_id == "CartPole-v1"
    with open_env(MatchMultiDiscrete, 2) as env:
        assert isinstance(env, StructuredVecEnv)


def test_dict_obs_multidiscrete_action_round_trip():
    with StructuredVecEnv(MatchMultiDiscrete, 3) as env:
        obs = env.reset(seed=0)
        assert obs["target"].dtype == torch.int64 and obs["noise"].dtype == torch.float32
        assert env.obs_shape == (2,)  # only the float leaf is normalised
        target = obs["target"]
        action = TensorDict({"action": {"0": target[:, 0], "1": target[:, 1]}}, [3])
        next_obs, _obs2, reward, terminated, _truncated = env.step(action)
        assert reward.tolist() == [1.0, 1.0, 1.0] and terminated.all()
        # the true final observation is kept: it shows the old target, not the reset one
        assert torch.equal(next_obs["target"], target)


def test_info_mask_is_read_and_checked():
    with StructuredVecEnv(InfoMaskGame, 2) as env:
        assert env.mask_size == 4
        obs = env.reset(seed=1)
        assert obs["obs"].shape == (2, 3) and obs["action_mask"].dtype == torch.bool
        assert obs["action_mask"].sum(-1).tolist() == [2, 2]
    with (
        StructuredVecEnv(lambda: InfoMaskGame(mask_dtype=np.float32), 1) as env,
        pytest.raises(ValueError, match=r"info\['action_mask'\] has dtype float32"),
    ):
        env.reset(seed=0)
    with StructuredVecEnv(lambda: InfoMaskGame(empty_at=1), 2) as env:
        obs = env.reset(seed=0)
        legal = obs["action_mask"].int().argmax(-1)
        with pytest.raises(ValueError, match="env 0 at step 1 allows no action"):
            env.step(TensorDict({"action": legal}, [2]))


def test_mask_with_a_box_action_is_refused():
    def make():
        env = gym.make("Pendulum-v1")
        mask_space = spaces.MultiBinary(1)
        return gym.wrappers.TransformObservation(
            env,
            lambda o: {"o": o, "action_mask": np.ones(1, np.int8)},
            spaces.Dict({"o": env.observation_space, "action_mask": mask_space}),
        )

    with pytest.raises(
        ValueError, match=r"has a Box leaf.*Discrete, MultiDiscrete and MultiBinary actions only"
    ):
        StructuredVecEnv(make, 1)


def test_tictactoe_rules_and_illegal_moves():
    pytest.importorskip("pettingzoo")
    import ppokit.envs.tictactoe  # noqa: F401  (registers the id)

    env = gym.make("ppokit/TicTacToe-v0", agent_first=True)
    obs, _ = env.reset(seed=3)
    obs, reward, terminated, _, info = env.step(0)
    assert not terminated and obs["action_mask"][0] == 0 and obs["action_mask"].sum() == 7
    # square 0 is taken: playing it again is illegal, loses and ends the game
    obs, reward, terminated, _, info = env.step(0)
    assert (reward, terminated, info["illegal"]) == (-1.0, True, True)
    assert env.unwrapped.illegal_moves == 1
    # a whole game of legal moves ends with +1, 0 or -1 and no illegal move
    obs, _ = env.reset(seed=4)
    done = False
    while not done:
        obs, reward, done, _, info = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
    assert reward in (-1.0, 0.0, 1.0) and not info["illegal"]
    env.close()


def test_a_channels_first_image_leaf_is_refused_with_its_name() -> None:
    # the leaf encoder reads (H, W, C): (4, 84, 84) would be read as 84 channels of 4x84
    obs = spaces.Dict({"frames": spaces.Box(0, 255, (4, 84, 84), np.uint8)})
    with pytest.raises(ValueError, match=r"'frames'.*\(4, 84, 84\).*channels last"):
        check_spaces(obs, spaces.MultiDiscrete([2, 2]), env_id="X")
    ok = spaces.Dict({"frames": spaces.Box(0, 255, (84, 84, 4), np.uint8)})
    check_spaces(ok, spaces.MultiDiscrete([2, 2]), env_id="X")
