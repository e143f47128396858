"""Which env ids are Atari games, told without importing Gymnasium, torch or ale-py.

The command line and the presets ask this for every id, so it must stay cheap.
"""

from __future__ import annotations

import re
import sys

__all__ = ["ATARI_INSTALL_HINT", "is_atari_id"]

ATARI_INSTALL_HINT = 'pip install "ppokit[atari]"'
#: ids that name an Atari game even where ale-py is not installed (then: the install hint)
_ATARI_PATTERN = re.compile(r"^ALE/|NoFrameskip-v[04]$|Deterministic-v[04]$")


def is_atari_id(env_id: object) -> bool:
    """True for a Gymnasium id of an ale-py game (``ALE/Pong-v5``, ``PongNoFrameskip-v4``).

    Ids that look like Atari ones (``ALE/...``, ``...NoFrameskip-v4``) count without importing
    ale-py (so that building them without it says how to install it); other ale-py ids
    (``Breakout-v4``) once ale-py has been imported. Nothing is imported for other ids.

    Example:
        >>> is_atari_id("ALE/Breakout-v5"), is_atari_id("PongNoFrameskip-v4")
        (True, True)
        >>> is_atari_id("CartPole-v1")
        False
    """
    if not isinstance(env_id, str):
        return False
    if _ATARI_PATTERN.search(env_id):
        return True
    if "ale_py" not in sys.modules or "gymnasium" not in sys.modules:
        return False
    import gymnasium as gym

    spec = gym.envs.registry.get(env_id)
    return spec is not None and "ale_py" in str(spec.entry_point)
