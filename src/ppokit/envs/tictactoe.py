"""Tic-tac-toe against a uniformly random opponent, as a single-agent Gymnasium env.

PettingZoo's ``tictactoe_v3`` (classic suite) is a two-player AEC game; this adapter plays
the other side with a uniformly random legal move, so a single-agent learner sees one
decision per turn. The observation is PettingZoo's own: ``"observation"`` ``(3, 3, 2)`` int8
(channel 0 the learner's marks, channel 1 the opponent's) and ``"action_mask"`` ``(9,)``
int8 (1 = empty square). Rewards: +1 win, 0 draw, -1 loss. An illegal move (an occupied
square) loses and ends the episode, and is counted in ``illegal_moves``: without action
masking a policy must learn the rules from that signal alone.

Registered as ``ppokit/TicTacToe-v0`` (needs ``pip install ppokit[classic]``).

Example:
    >>> import gymnasium as gym
    >>> env = gym.make("ppokit/TicTacToe-v0", agent_first=True)
    >>> obs, _ = env.reset(seed=0)
    >>> obs["action_mask"].tolist()
    [1, 1, 1, 1, 1, 1, 1, 1, 1]
    >>> obs, reward, terminated, _, _ = env.step(4)
    >>> int(obs["action_mask"].sum()), terminated   # the learner and the opponent moved
    (7, False)
    >>> env.close()
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["TicTacToeEnv"]

ENV_ID = "ppokit/TicTacToe-v0"


class TicTacToeEnv(gym.Env[dict[str, np.ndarray], int]):
    """Tic-tac-toe vs a uniformly random opponent (see the module docstring).

    Keyword Args:
        agent_first: the learner moves first (True), second (False), or a fair coin per
            episode (None, the default).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (Gymnasium declares it so)

    def __init__(self, *, agent_first: bool | None = None) -> None:
        try:
            from pettingzoo.classic.tictactoe.tictactoe import raw_env
        except ImportError as err:
            raise gym.error.DependencyNotInstalled(
                f"{ENV_ID} needs PettingZoo's classic games: pip install 'ppokit[classic]'"
            ) from err
        self._game = raw_env()  # tictactoe_v3 without wrappers
        self.agent_first = agent_first
        self.observation_space: spaces.Space[Any] = spaces.Dict(
            {
                "action_mask": spaces.Box(0, 1, (9,), np.int8),
                "observation": spaces.Box(0, 1, (3, 3, 2), np.int8),
            }
        )
        self.action_space: spaces.Space[Any] = spaces.Discrete(9)
        self.illegal_moves = 0
        self._me = "player_1"

    def _obs(self) -> dict[str, np.ndarray]:
        raw = self._game.observe(self._me)
        return {"action_mask": raw["action_mask"].copy(), "observation": raw["observation"]}

    def _over(self) -> bool:
        return any(self._game.terminations.values()) or any(self._game.truncations.values())

    def _opponent_moves(self) -> None:
        mask = self._game.observe(self._game.agent_selection)["action_mask"]
        self._game.step(int(self.np_random.choice(np.flatnonzero(mask))))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._game.reset(seed=seed)
        first = self.agent_first
        if first is None:
            first = bool(self.np_random.integers(2))
        self._me = "player_1" if first else "player_2"
        if not first:
            self._opponent_moves()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = int(action)
        if not 0 <= action < 9:
            raise ValueError(f"{ENV_ID}: action must be a square 0..8, got {action}.")
        if not self._obs()["action_mask"][action]:
            self.illegal_moves += 1
            return self._obs(), -1.0, True, False, {"illegal": True}
        self._game.step(action)
        if not self._over():
            self._opponent_moves()
        reward = float(self._game.rewards[self._me]) if self._over() else 0.0
        return self._obs(), reward, self._over(), False, {"illegal": False}


gym.register(ENV_ID, entry_point="ppokit.envs.tictactoe:TicTacToeEnv", max_episode_steps=9)
