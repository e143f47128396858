"""One Atari game preprocessed by Gymnasium's wrappers (the ``"gymnasium"`` backend).

Gymnasium's ``AtariPreprocessing`` does the no-ops, the frame skip with max-pooling and the 84x84
grayscale frames, ``FrameStackObservation`` the 4-frame stack. Two parts of the standard recipe
have no Gymnasium wrapper and are :class:`LifeEpisodes` here: the life-loss episode end that
does not restart the game (DeepMind's ``EpisodicLifeEnv``) and FIRE after each (re)start.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["LifeEpisodes", "make_preprocessed_game"]


class LifeEpisodes(gym.Wrapper):
    """FIRE after each start; with ``episodic_life``, a lost life ends the episode.

    After such an end, ``reset`` does not restart the game while lives remain: it plays on
    with a no-op step (and FIRE) so the next episode starts where the last life was lost.
    ``info["lives"]`` is passed through (the vector wrapper tells life losses from game overs
    by it).

    Example:
        >>> import ale_py
        >>> gym.register_envs(ale_py)
        >>> env = LifeEpisodes(gym.make("ALE/Breakout-v5"), episodic_life=True)
        >>> _, info = env.reset(seed=0)
        >>> info["lives"]
        5
        >>> env.close()
    """

    def __init__(self, env: gym.Env, *, episodic_life: bool) -> None:
        super().__init__(env)
        self.episodic_life = episodic_life
        meanings = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]
        self._fire = meanings.index("FIRE") if "FIRE" in meanings else None
        self._game_over = True
        self._lives = 0

    def _ale_lives(self) -> int:
        return int(self.env.unwrapped.ale.lives())  # type: ignore[attr-defined]

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = bool(terminated or truncated)
        lives = self._ale_lives()
        if self.episodic_life and 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        if self._game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # a life was lost: play on from here
            obs, _, _, _, info = self.env.step(0)
        if self._fire is not None:
            obs, _, terminated, truncated, info = self.env.step(self._fire)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self._game_over = False
        self._lives = self._ale_lives()
        return obs, info


def make_preprocessed_game(env_id: str, *, sticky: float, training: bool, **kwargs: Any) -> gym.Env:
    """One game of ``env_id`` with the standard preprocessing (``uint8 [4, 84, 84]``).

    Example:
        >>> env = make_preprocessed_game("ALE/Pong-v5", sticky=0.25, training=True)
        >>> env.reset(seed=0)[0].shape
        (4, 84, 84)
        >>> env.close()
    """
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    options: dict[str, Any] = {"frameskip": 1, "repeat_action_probability": sticky}
    options.update(kwargs)
    env = gym.make(env_id, **options)
    env = AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
    env = LifeEpisodes(env, episodic_life=training)
    return FrameStackObservation(env, 4)
