"""The single env ``ppokit eval --video`` plays and renders, and the frame rate of its mp4.

For most ids that is ``gymnasium.make(id, render_mode="rgb_array")``. An Atari policy reads
preprocessed frames (84x84 grayscale, 4 stacked), so for an Atari id it is one game with that
preprocessing as evaluation plays it (whole games, raw rewards), whose ``render()`` still
returns the game's raw 210x160 RGB screen: the video shows the game, not the network's input.
"""

from __future__ import annotations

from typing import Any

__all__ = ["video_env", "video_fps"]

#: the Atari 2600 draws 60 frames per second (NTSC); the preprocessed game shows every 4th
_ATARI_HZ, _ATARI_FRAME_SKIP = 60, 4


def video_env(env_id: str, **kwargs: Any) -> Any:
    """The env to render ``env_id`` from (``render_mode="rgb_array"``; ``kwargs`` for the game).

    Example:
        >>> env = video_env("CartPole-v1")
        >>> env.render_mode
        'rgb_array'
        >>> env.close()
    """
    import gymnasium as gym

    from ppokit.envs.atari_ids import is_atari_id

    if is_atari_id(env_id):
        from ppokit.envs.atari import atari_game
        from ppokit.envs.atari_wrappers import make_preprocessed_game

        _, sticky = atari_game(env_id)
        return make_preprocessed_game(
            env_id, sticky=sticky, training=False, render_mode="rgb_array", **kwargs
        )
    return gym.make(env_id, render_mode="rgb_array", **kwargs)


def video_fps(env_id: str, env: Any) -> int:
    """Frames per second of the video: the env's ``render_fps``; for Atari, the console's 60 Hz
    over the frame skip (real time).

    Example:
        >>> from types import SimpleNamespace
        >>> video_fps("ALE/Pong-v5", SimpleNamespace(metadata={"render_fps": 60}))
        15
    """
    from ppokit.envs.atari_ids import is_atari_id

    if is_atari_id(env_id):
        return _ATARI_HZ // _ATARI_FRAME_SKIP
    return int(env.metadata.get("render_fps", 30))
