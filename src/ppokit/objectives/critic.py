"""The critic term on its own: TorchRL's public ``loss_critic(tensordict)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase, is_tensor_collection

from ppokit.objectives.diagnostics import explained_variance
from ppokit.objectives.inputs import read_critic_inputs, read_old_value
from ppokit.objectives.keys import key_str
from ppokit.objectives.objective import critic_term

__all__ = ["CriticLoss"]

#: what ``loss_critic`` returns: the weighted loss, the clip fraction, the explained variance
CriticTerms = tuple[Any, Any, Any]


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
    _critic_output: Callable[[TensorDictBase], TensorDictBase]

    def loss_critic(self, tensordict: TensorDictBase) -> CriticTerms:
        """The critic term alone, as TorchRL's ``loss_critic``.

        Args:
            tensordict: batch ``[*B]`` with what the critic reads, ``value_target``
                ``[*B, 1]`` and, with ``clip_value``, the stored value ``[*B, 1]``. For a
                critic with several value heads (it writes ``("state_value", head)``
                entries), ``value_target`` and the stored value are TensorDicts holding one
                entry per head, each of the shape of the critic's output for that head.

        Returns:
            ``critic_coeff *`` the per-sample critic loss ``[*B, 1]`` (not reduced), the
            fraction of clipped values (None without ``clip_value``) and the explained
            variance (None with ``log_explained_variance=False``); for several value heads,
            each is a TensorDict with one entry per head (TorchRL's layout).

        Example:
            >>> from torch import nn
            >>> from tensordict.nn import TensorDictModule
            >>> from ppokit import Categorical, PPOLoss, ProbabilisticActor
            >>> actor = ProbabilisticActor(
            ...     TensorDictModule(nn.Linear(1, 2), ["state"], ["logits"]),
            ...     in_keys=["logits"], distribution_class=Categorical)
            >>> critic = TensorDictModule(lambda s: (0 * s, 0 * s), ["state"],
            ...     [("state_value", "a"), ("state_value", "b")])
            >>> loss = PPOLoss(actor, critic, loss_critic_type="l2")
            >>> td = TensorDict({"state": torch.zeros(1, 1), "value_target": TensorDict(
            ...     a=torch.full((1, 1), 2.0), b=torch.ones(1, 1), batch_size=[1])}, [1])
            >>> terms, _, _ = loss.loss_critic(td)
            >>> terms["a"], terms["b"]  # (2 - 0)^2, (1 - 0)^2
            (tensor([[4.]]), tensor([[1.]]))
        """
        if self.critic_network is None:
            raise ValueError("loss_critic() needs a critic: this loss was built without one.")
        keys = self.tensor_keys
        clip_value = self._coefficient("clip_value", traced=False)
        if is_tensor_collection(tensordict.get(keys.value_target, None)):
            return self._loss_critic_heads(tensordict, clip_value)
        inp = read_critic_inputs(tensordict, keys, clip_value=clip_value)
        value = self._critic_value(inp, {}, keys.value, traced=False)
        return self._critic_terms(value, inp.value_target, inp.old_value, clip_value)

    def _critic_terms(
        self,
        value: torch.Tensor,
        target: torch.Tensor,
        old_value: torch.Tensor | None,
        clip_value: Any,
    ) -> CriticTerms:
        """The weighted per-sample loss, clip fraction and explained variance of one head."""
        loss, clipped = critic_term(value, target, old_value, clip_value, self.loss_critic_type)
        fraction = None if clipped is None else clipped.to(value.dtype).mean()
        variance = (
            explained_variance(target, value.detach()) if self.log_explained_variance else None
        )
        coeff = self._coefficient("critic_coeff", traced=False) if self._has_critic else 1.0
        return coeff * loss, fraction, variance

    def _loss_critic_heads(self, tensordict: TensorDictBase, clip_value: Any) -> CriticTerms:
        """:meth:`loss_critic` for a critic with several value heads: each head's term is
        the one of a single critic, with the head's value, target and stored value (whose
        shapes must be equal: nothing is broadcast)."""
        keys = self.tensor_keys
        targets = tensordict.get(keys.value_target)
        old_values: Any = read_old_value(tensordict, keys.value, clip_value)
        values = self._critic_output(tensordict.copy()).get(keys.value, None)
        if not is_tensor_collection(values):
            raise TypeError(
                f"The value target {key_str(keys.value_target)} is a TensorDict (one entry "
                f"per value head) but the critic's output at {key_str(keys.value)} is "
                f"{type(values).__name__}; a critic with several heads writes "
                f"({key_str(keys.value)}, <head>) entries."
            )
        terms: list[dict[Any, Any]] = [{}, {}, {}]
        for head in targets.keys(include_nested=True, leaves_only=True):
            target = targets.get(head)
            value = _head_entry(values, head, target, "the critic's output")
            old = None if old_values is None else _head_entry(old_values, head, target, "V_old")
            for store, part in zip(terms, self._critic_terms(value, target, old, clip_value)):
                if part is not None:
                    store[head] = part
        return tuple(  # type: ignore[return-value]
            TensorDict(parts, batch_size=tensordict.batch_size if i == 0 else []) if parts else None
            for i, parts in enumerate(terms)
        )


def _head_entry(entries: Any, head: Any, target: torch.Tensor, what: str) -> torch.Tensor:
    """One value head's entry of ``entries``, of the target's shape (never broadcast)."""
    entry = entries.get(head, None)
    if entry is None or entry.shape != target.shape:
        shape = None if entry is None else tuple(entry.shape)
        raise ValueError(
            f"Value head {head!r}: the value target has shape {tuple(target.shape)} but "
            f"{what} has {'no such entry' if shape is None else shape}; each head's value, "
            "target and stored value must have one shape."
        )
    return entry
