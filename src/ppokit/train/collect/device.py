"""The collector's two optional branches: a policy on another device, and whole-game returns.

Kept out of :mod:`ppokit.train.collect.collector` so its CPU loop stays as it is: the collector asks
:func:`setup_device` once and takes these branches only where they apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ppokit.train.collect.acting import TensorPolicy
from ppokit.train.device import HostToDevice

__all__ = ["policy_on_device", "setup_device"]

Games = Callable[[], tuple[list[float], list[int]]]


def setup_device(
    env: Any, device: torch.device | None
) -> tuple[torch.device | None, HostToDevice | None, Games | None]:
    """``(device, observation mover, game-score source)`` for a collector on ``env``.

    The device and mover are None on the CPU (the collector's own path). The game-score
    source is the vector env's ``pop_games`` where it reports whole games (Atari:
    :class:`ppokit.envs.atari.AtariGames`, whose training episodes end at each lost life).

    Example:
        >>> from types import SimpleNamespace
        >>> env = SimpleNamespace(num_envs=2, obs_shape=(3,), obs_dtype=torch.float32)
        >>> setup_device(env, torch.device("cpu"))
        (None, None, None)
    """
    games = getattr(getattr(env, "env", None), "pop_games", None)
    if device is None or torch.device(device).type == "cpu":
        return None, None, games
    dtype = torch.empty(0, dtype=getattr(env, "obs_dtype", torch.float32)).numpy().dtype
    mover = HostToDevice((env.num_envs, *env.obs_shape), dtype, torch.device(device))
    return torch.device(device), mover, games


def policy_on_device(
    act: TensorPolicy | None,
    obs: torch.Tensor,
    policy: Callable[[Any], Any],
    step_td: Any,
    log_prob_key: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Act on device observations ``obs [N, *obs]``: ``(action, log_prob)``, still on the device.

    Through ``act`` (the fast tensor view of the actor) when there is one, else by calling the
    TensorDict ``policy`` on ``step_td``.

    Example:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> policy = TensorDictModule(lambda o: (o.sum(-1).long(), o.sum(-1)),
        ...                           ["observation"], ["action", "action_log_prob"])
        >>> step_td = TensorDict({}, batch_size=[2])
        >>> policy_on_device(None, torch.ones(2, 3), policy, step_td, "action_log_prob")
        (tensor([3, 3]), tensor([3., 3.]))
    """
    if act is not None:
        return act(obs)
    step_td.set("observation", obs)
    policy(step_td)
    return step_td.get("action"), step_td.get(log_prob_key)
