"""Values recorded while collecting: each frame stored once, no separate value pass for GAE.

An image rollout's biggest leaves are its frames. The next observation of step ``t`` is the
observation of step ``t + 1`` unless an episode ended at ``t``, so instead of a second frame
buffer ``("next", "observation")`` the collector keeps what GAE needs from it: the critic's
value of every bootstrap state. :class:`RolloutValues` writes ``state_value [N, T, 1]`` (the
critic run on each step's observations beside the actor, with the same parameters GAE would
use: no update happens between collecting and estimating) and ``("next", "state_value")``
(``V(s_{t+1})``: the next step's value within an episode, the critic on the true final
observation where one ended, and on the observation after the last step). A value estimator
then reads both instead of running the critic (``skip_existing``), and gets the numbers the
full value pass gives, up to the float rounding of a different batch size.

With a shared CNN trunk (:class:`~ppokit.modules.cnn.SharedTrunk`) the actor and the critic
run the trunk once per step (:func:`~ppokit.modules.cnn.one_trunk_pass`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

__all__ = ["RolloutValues"]

VALUE_KEY = "state_value"


class RolloutValues:
    """The critic's values of a ``[N, T]`` rollout, written while it is collected.

    Args:
        critic: a TensorDict module reading ``"observation"`` and writing
            ``"state_value" [B, 1]``.
        rollout: the collector's rollout; ``state_value`` and ``("next", "state_value")``
            ``[N, T, 1]`` are added to it.
        device: where the critic runs (observations are moved there; values come back).

    Example:
        >>> from ppokit import ValueOperator
        >>> from torch import nn
        >>> rollout = TensorDict({"next": TensorDict({}, [2, 3])}, [2, 3])
        >>> values = RolloutValues(ValueOperator(nn.Linear(1, 1), in_keys=["observation"]),
        ...                        rollout)
        >>> rollout["state_value"].shape, rollout["next", "state_value"].shape
        (torch.Size([2, 3, 1]), torch.Size([2, 3, 1]))
    """

    def __init__(
        self,
        critic: Callable[[TensorDictBase], TensorDictBase],
        rollout: TensorDict,
        device: torch.device | None = None,
    ) -> None:
        self.critic = critic
        self.device = device
        n, t = rollout.batch_size
        self.value = torch.zeros(n, t, 1)
        self.next_value = torch.zeros(n, t, 1)
        rollout.set(VALUE_KEY, self.value)
        rollout.set(("next", VALUE_KEY), self.next_value)

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """``V(obs)``: ``obs [B, *obs]`` -> ``[B, 1]`` on the CPU (no gradient)."""
        if self.device is not None:
            obs = obs.to(self.device)
        with torch.no_grad():
            td = TensorDict({"observation": obs}, batch_size=obs.shape[:1], device=obs.device)
            return self.critic(td).get(VALUE_KEY).detach().cpu()

    def record(self, t: int, obs: torch.Tensor) -> None:
        """Store ``V(s_t)`` of step ``t``'s observations ``obs [N, *obs]``."""
        self.value[:, t] = self(obs)

    def at_ends(self, t: int, final_obs: torch.Tensor, ended: np.ndarray) -> None:
        """``V`` of the true final observations ``final_obs [k, *obs]`` of envs ``ended``."""
        self.next_value[torch.from_numpy(ended), t] = self(final_obs)

    def finish(self, last_obs: torch.Tensor, done: torch.Tensor) -> None:
        """Fill ``V(s_{t+1})`` where no episode ended; ``last_obs``: after the last step.

        Args:
            last_obs: ``[N, *obs]``, the observations the next rollout starts from.
            done: ``[N, T, 1]`` bool, the rollout's ``("next", "done")``.
        """
        nxt = self.next_value
        # within an episode the next state is the next step's state: its value is already here
        nxt[:, :-1] = torch.where(done[:, :-1], nxt[:, :-1], self.value[:, 1:])
        nxt[:, -1] = torch.where(done[:, -1], nxt[:, -1], self(last_obs))
