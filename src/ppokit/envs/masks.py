"""Action masks from the environment, checked before the policy sees them.

Gymnasium and PettingZoo environments publish the legal actions as a 0/1 vector, either as
the observation entry ``"action_mask"`` (PettingZoo's classic games) or as
``info["action_mask"]``. :func:`check_mask` turns one vector step's masks into a bool array
and refuses what would otherwise become a silent broadcast or a NaN in the policy: the wrong
shape, a non-integer dtype, values other than 0/1, or a state without any legal action
(named by environment index and step).
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_mask", "split_mask"]


def check_mask(
    mask: object,
    *,
    num_envs: int,
    num_actions: int,
    env_id: str = "env",
    step: int | None = None,
    where: str = "action_mask",
) -> np.ndarray:
    """``mask`` as a ``[num_envs, num_actions]`` bool array, after checking it.

    Args:
        mask: the env's mask for one vector step: bool or integer 0/1, ``[num_envs, A]``.
        num_envs: ``N``.
        num_actions: ``A``, one flag per action (MultiDiscrete: the heads' flags concatenated).
        env_id: named in the errors.
        step: the vector step count, named in the errors.
        where: where the mask came from (``"observation['action_mask']"``), for the errors.

    Raises:
        ValueError: wrong shape or dtype, values other than 0/1, or a row without a legal action.

    Example:
        >>> check_mask(np.array([[1, 0, 1]], dtype=np.int8), num_envs=1, num_actions=3)
        array([[ True, False,  True]])
        >>> check_mask(np.array([[0, 0]]), num_envs=1, num_actions=2, env_id="Game", step=7)
        Traceback (most recent call last):
        ...
        ValueError: Game: action_mask of env 0 at step 7 allows no action (all 0) ...
    """
    arr = np.asarray(mask)
    at = f"{env_id}: {where}"
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{at} has dtype {arr.dtype}; expected bool or integer 0/1 flags (1 = legal). "
            "Convert it in the env, e.g. mask.astype(np.int8)."
        )
    if arr.shape != (num_envs, num_actions):
        raise ValueError(
            f"{at} has shape {arr.shape} for {num_envs} env(s); expected "
            f"({num_envs}, {num_actions}): one flag per action (for MultiDiscrete, the heads' "
            "flags concatenated)."
        )
    if arr.dtype != np.bool_:
        if ((arr != 0) & (arr != 1)).any():
            bad = sorted(set(np.unique(arr).tolist()) - {0, 1})
            raise ValueError(f"{at} holds {bad[:5]}; expected only 0 and 1 (1 = legal).")
        arr = arr.astype(bool)
    empty = ~arr.any(-1)
    if empty.any():
        env = int(np.flatnonzero(empty)[0])
        when = f" at step {step}" if step is not None else ""
        raise ValueError(
            f"{at.split(': ', 1)[0]}: {where} of env {env}{when} allows no action (all 0) "
            f"({int(empty.sum())} env(s) so). Every state the policy acts in needs a legal "
            "action; end the episode instead."
        )
    return arr


def split_mask(
    mask: np.ndarray,
    sizes: tuple[int, ...],
    *,
    labels: tuple[str, ...] | None = None,
    env_id: str = "env",
    step: int | None = None,
) -> list[np.ndarray]:
    """Per-choice masks from the concatenated ``[N, sum(sizes)]`` (one part per
    MultiDiscrete entry, and per MultiBinary flag: its (allow 0, allow 1) pair).

    Args:
        labels: each part's name in the errors (default ``"head i"``).
        env_id, step: named in the errors.

    Raises:
        ValueError: a part with no legal choice in some env.

    Example:
        >>> [m.tolist() for m in split_mask(np.array([[True, False, True, True, False]]), (2, 3))]
        [[[True, False]], [[True, True, False]]]
    """
    parts = np.split(mask, np.cumsum(sizes)[:-1], axis=-1)
    for i, part in enumerate(parts):
        if not part.any(-1).all():
            env = int(np.flatnonzero(~part.any(-1))[0])
            label = labels[i] if labels is not None else f"head {i}"
            when = f" at step {step}" if step is not None else ""
            raise ValueError(
                f"{env_id}: action_mask: {label} has no legal choice in env {env}{when}; each "
                f"needs at least one 1 among its {sizes[i]} flags (a MultiDiscrete entry: one "
                "per choice; a MultiBinary flag: allow 0, allow 1)."
            )
    return parts
