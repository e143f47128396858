"""Whether evaluation episodes succeeded: the final ``info["is_success"]`` of each.

Goal-conditioned tasks (Gymnasium-Robotics' Fetch and hand tasks, and others following the
same convention) report ``info["is_success"]`` at every step; an episode succeeded when the
flag is set at its last step. In a same-step-autoreset vector env, an ended episode's own
last info is under ``info["final_info"]`` (the top level then holds the reset's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["EpisodeSuccess", "final_successes"]


def final_successes(info: Mapping[str, Any], num_envs: int) -> tuple[np.ndarray, np.ndarray]:
    """``(is_success, given)``, bool ``[N]``: the ended episodes' final ``info["is_success"]``.

    ``given`` is False where the env reported no flag (or no episode ended).

    Example:
        >>> info = {"final_info": {"is_success": np.array([0.0, 1.0]),
        ...                        "_is_success": np.array([False, True])}}
        >>> final_successes(info, 2)
        (array([False,  True]), array([False,  True]))
    """
    final = info.get("final_info", {})
    if "is_success" not in final:
        return np.zeros(num_envs, dtype=bool), np.zeros(num_envs, dtype=bool)
    given = np.asarray(final.get("_is_success", np.ones(num_envs, dtype=bool)), dtype=bool)
    return np.asarray(final["is_success"]).astype(bool) & given, given


class EpisodeSuccess:
    """Collects one success flag per evaluation episode (one episode per sub-env).

    Example:
        >>> track = EpisodeSuccess(2)
        >>> info = {"final_info": {"is_success": np.array([1.0, 0.0]),
        ...                        "_is_success": np.array([True, False])}}
        >>> track.update(info, ended=np.array([True, False]))
        >>> track.result() is None  # episode 1 has not ended yet
        True
        >>> info = {"final_info": {"is_success": np.array([0.0, 0.0]),
        ...                        "_is_success": np.array([False, True])}}
        >>> track.update(info, ended=np.array([False, True]))
        >>> track.result()
        [True, False]
    """

    def __init__(self, episodes: int) -> None:
        self.success = np.zeros(episodes, dtype=bool)
        self.reported = np.zeros(episodes, dtype=bool)

    def update(self, info: Mapping[str, Any], *, ended: np.ndarray) -> None:
        """Record the flags of the episodes that ended at this step (``ended [N]``)."""
        flags, given = final_successes(info, len(self.success))
        self.success[ended] = flags[ended]
        self.reported[ended] = given[ended]

    def result(self) -> list[bool] | None:
        """Each episode's success, or None unless every episode reported one."""
        return self.success.tolist() if self.reported.all() else None
