"""Checks on what the environment returned, before the trainer learns from it.

A NaN or infinite reward or observation from the environment would otherwise surface later
as an error about a tensor key deep in the advantage estimate, naming neither the environment
nor when it happened. :func:`check_rollout_finite` runs on each rollout the collector returns,
before GAE, and names the environment, the iteration, the rollout step, the global env step
and the sub-environment index.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

__all__ = ["EnvironmentOutputError", "check_rollout_finite"]

_CHECKED = (("next", "reward"), ("next", "observation"), "observation")


class EnvironmentOutputError(ValueError):
    """The environment produced a non-finite reward or observation; nothing was trained on it."""


def check_rollout_finite(
    rollout: TensorDictBase, *, env: str, iteration: int, first_env_step: int, world_size: int = 1
) -> None:
    """Raise :class:`EnvironmentOutputError` if ``rollout`` holds a NaN/Inf reward or
    observation, saying which environment produced it, when, and in which sub-environment.

    Args:
        rollout: ``[num_envs, num_steps]`` as the collector writes it (rewards
            ``[num_envs, num_steps, 1]``).
        env: the environment's label, for the message.
        iteration: the 1-based iteration that collected ``rollout``.
        first_env_step: global env steps done before this rollout (all ranks).
        world_size: ranks collecting in parallel (global steps advance by that many
            ``num_envs`` per rollout step).

    Example:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"observation": torch.zeros(2, 3, 1),
        ...                  "next": {"observation": torch.zeros(2, 3, 1),
        ...                           "reward": torch.zeros(2, 3, 1)}}, [2, 3])
        >>> td["next", "reward"][1, 2] = float("nan")
        >>> check_rollout_finite(td, env="Toy-v0", iteration=4, first_env_step=18)
        Traceback (most recent call last):
        ...
        ppokit.train.guards.EnvironmentOutputError: The environment Toy-v0 produced a NaN ...
    """
    num_envs = rollout.batch_size[0]
    for key in _leaf_keys(rollout):
        value = rollout.get(key, None)
        # integer observations (image bytes) cannot be NaN/Inf: not scanned
        if value is None or not value.is_floating_point() or torch.isfinite(value).all():
            continue
        bad = ~torch.isfinite(value.reshape(*rollout.batch_size, -1)).all(-1)  # [N, T]
        first = torch.nonzero(bad.t())[0]  # earliest step first, then lowest env index
        step, index = int(first[0]), int(first[1])
        entry = float(
            value[index, step].reshape(-1)[~torch.isfinite(value[index, step].reshape(-1))][0]
        )
        what = "reward" if key == ("next", "reward") else "observation"
        global_step = first_env_step + (step + 1) * num_envs * world_size
        raise EnvironmentOutputError(
            f"The environment {env} produced a {_name(entry)} {what} at iteration {iteration}, "
            f"rollout step {step} (about env step {global_step:,}), sub-environment index "
            f"{index} ({int(bad.sum())} bad steps in this rollout). ppokit stopped before "
            "training on it; the last checkpoint is intact. Fix the environment (or wrap it "
            "to replace non-finite values), then continue with --resume."
        )


def _leaf_keys(rollout: TensorDictBase) -> Iterator[NestedKey]:
    """The checked keys; a structured observation's leaves one by one."""
    for key in _CHECKED:
        value = rollout.get(key, None)
        if not isinstance(value, TensorDictBase):
            yield key
            continue
        base = (key,) if isinstance(key, str) else tuple(key)
        for sub in value.keys(include_nested=True, leaves_only=True):
            yield (*base, *((sub,) if isinstance(sub, str) else sub))


def _name(value: float) -> str:
    return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
