"""The single env ``ppokit eval --video`` plays and renders, and the frame rate of its mp4.

For most ids that is ``gymnasium.make(id, render_mode="rgb_array")``. An Atari policy reads
preprocessed frames (84x84 grayscale, 4 stacked), so for an Atari id it is one game with that
preprocessing as evaluation plays it (whole games, raw rewards), whose ``render()`` still
returns the game's raw 210x160 RGB screen: the video shows the game, not the network's input.
"""

from __future__ import annotations

from typing import Any

__all__ = ["video_env", "video_fps"]

#: ale-py emulates at 60 frames per second; the preprocessed game shows every 4th frame
_ATARI_FRAME_SKIP = 4


def video_env(env_id: str) -> Any:
    """The env to render ``env_id`` from (``render_mode="rgb_array"``).

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
            env_id, sticky=sticky, training=False, render_mode="rgb_array"
        )
    return gym.make(env_id, render_mode="rgb_array")


def video_fps(env_id: str, env: Any) -> int:
    """Frames per second of the video: the env's ``render_fps``, over the Atari frame skip.

    Example:
        >>> from types import SimpleNamespace
        >>> video_fps("ALE/Pong-v5", SimpleNamespace(metadata={"render_fps": 60}))
        15
    """
    from ppokit.envs.atari_ids import is_atari_id

    fps = int(env.metadata.get("render_fps", 30))
    return max(1, fps // _ATARI_FRAME_SKIP) if is_atari_id(env_id) else fps
