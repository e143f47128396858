"""The critic term on its own: TorchRL's public ``loss_critic(tensordict)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDictBase

from ppokit.objectives.functional import explained_variance
from ppokit.objectives.inputs import read_critic_inputs
from ppokit.objectives.objective import critic_term

__all__ = ["CriticLoss"]


class CriticLoss:
    """Mixin of :class:`~ppokit.PPOLoss`: ``loss_critic(td)``, the critic term it also uses.

    It relies on the loss's keys, coefficients and critic runner (the other mixins of
    ``PPOLoss``); the term itself is :func:`ppokit.objectives.objective.critic_term`, the one
    the full objective computes.
    """

    # provided by the other mixins of PPOLoss
    critic_network: Any
    tensor_keys: Any
    loss_critic_type: str
    log_explained_variance: bool
    _has_critic: bool
    _coefficient: Callable[..., Any]
    _critic_value: Callable[..., torch.Tensor]

    def loss_critic(
        self, tensordict: TensorDictBase
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The critic term alone, as TorchRL's ``loss_critic``.

        Args:
            tensordict: batch ``[*B]`` with what the critic reads, ``value_target``
                ``[*B, 1]`` and, with ``clip_value``, the stored value ``[*B, 1]``.

        Returns:
            ``critic_coeff *`` the per-sample critic loss ``[*B, 1]`` (not reduced), the
            fraction of clipped values (None without ``clip_value``) and the explained
            variance (None with ``log_explained_variance=False``).
        """
        if self.critic_network is None:
            raise ValueError("loss_critic() needs a critic: this loss was built without one.")
        keys = self.tensor_keys
        clip_value = self._coefficient("clip_value", traced=False)
        inp = read_critic_inputs(tensordict, keys, clip_value=clip_value)
        value = self._critic_value(inp, {}, keys.value, traced=False)
        loss, clipped = critic_term(
            value, inp.value_target, inp.old_value, clip_value, self.loss_critic_type
        )
        fraction = None if clipped is None else clipped.to(value.dtype).mean()
        variance = (
            explained_variance(inp.value_target, value.detach())
            if self.log_explained_variance
            else None
        )
        coeff = self._coefficient("critic_coeff", traced=False) if self._has_critic else 1.0
        return coeff * loss, fraction, variance
