"""Which Gymnasium spaces ppokit's networks take, checked without importing torch.

The command line calls :func:`check_spaces` before any heavy import, so a task it cannot
train is refused in a fraction of a second.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_spaces"]


def check_spaces(observation_space: Any, action_space: Any, *, env_id: str = "env") -> None:
    """Accept a flat ``Box`` or uint8 image observation, a ``Discrete`` or 1-D ``Box`` action.

    Raises:
        ValueError: any other space, naming it.

    Example:
        >>> from gymnasium import spaces
        >>> check_spaces(spaces.Box(-1, 1, (3,)), spaces.MultiDiscrete([2, 2]), env_id="X")
        Traceback (most recent call last):
        ...
        ValueError: X has action space MultiDiscrete([2 2]); ppokit supports Discrete and ...
    """
    from gymnasium import spaces

    from ppokit.envs.images import image_layout, is_image_space

    if is_image_space(observation_space):
        image_layout(observation_space.shape)  # refuses a layout the CNN cannot read
    elif not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(
            f"{env_id} has observation space {observation_space}; ppokit's MLP policies need a "
            "flat Box observation, its CNN a uint8 image (C, H, W) or (H, W, C). Wrap the env "
            "(e.g. gymnasium.wrappers.FlattenObservation)."
        )
    if isinstance(action_space, spaces.Discrete):
        if action_space.start != 0:
            raise ValueError(
                f"{env_id} has Discrete action space starting at {action_space.start}; "
                "ppokit supports Discrete(n) starting at 0."
            )
        return
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return
    raise ValueError(
        f"{env_id} has action space {action_space}; ppokit supports Discrete and 1-D Box "
        "action spaces."
    )
