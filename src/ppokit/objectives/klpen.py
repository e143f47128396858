"""The adaptive KL-penalty PPO loss :class:`KLPENPPOLoss` (Schulman et al. 2017, sec. 4).

The same loss as :class:`ppokit.PPOLoss` with one more term: the surrogate ``-r * A`` gets
``+ beta * KL(pi_old || pi_theta)``, and ``beta`` adapts after each call. The pieces (KL,
penalty, beta rule, option checks) are :mod:`ppokit.objectives.klpen_math`; this class only
wires them into :meth:`ppokit.PPOLoss.compute`.

Deliberate difference from TorchRL 0.14.1: TorchRL rescales ``beta`` in place after using
it, so ``backward()`` differentiates the KL term with the *new* beta while the loss it
returned used the old one. Here the gradient is that of the returned loss; the new beta is
used from the next call on (see ``docs/torchrl-compat.md``).
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey

from ppokit.internals.direct import TensorReader
from ppokit.objectives.base import PPOLoss
from ppokit.objectives.inputs import LossInputs
from ppokit.objectives.klpen_math import (
    kl_penalty,
    kl_with_form,
    next_beta,
    previous_distribution,
    validate_klpen_options,
)

__all__ = ["KLPENPPOLoss"]


class KLPENPPOLoss(PPOLoss):
    """PPO with an adaptive KL penalty instead of ratio clipping.

    ``loss_objective = -(r * A - beta * KL(pi_old || pi_theta))`` per sample, with
    ``pi_old`` rebuilt from the distribution parameters stored in the data (the in_keys of
    the actor's distribution module, e.g. ``loc``/``scale`` or ``logits``). The KL is the
    closed form where torch has one for the pair, else ``mean log pi_old(x) - log pi(x)``
    over ``samples_mc_kl`` draws ``x ~ pi_old``. After each call ``beta *= increment`` when
    the batch's mean KL is above ``1.5 * dtarg`` and ``beta *= decrement`` when it is below
    ``dtarg / 1.5``; ``beta`` is a buffer (state_dict, assignable).

    Args:
        actor_network: probabilistic policy (see :class:`ppokit.ClipPPOLoss`) whose
            distribution can be rebuilt from stored parameters (``build_dist_from_params``).
        critic_network: state-value operator, or ``None`` (actor only).

    Keyword Args:
        dtarg: target KL per update (> 0). Default 0.01.
        beta: initial penalty weight (>= 0). Default 1.0.
        increment: factor (>= 1) applied to beta when the KL is too high. Default 2.
        decrement: factor in (0, 1] applied to beta when the KL is too low. Default 0.5.
        samples_mc_kl: draws of the sampled KL (>= 1). Default 1.
        **kwargs: every keyword of :class:`ppokit.PPOLoss` (entropy, critic, reduction,
            keys, ``clip_value`` as a float...).

    Output keys: those of :class:`ppokit.PPOLoss` plus ``kl``, the detached per-sample KL
    ``[*B, 1]`` (TorchRL's layout; not reduced).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from ppokit import Categorical, KLPENPPOLoss, ProbabilisticActor, ValueOperator
        >>> _ = torch.manual_seed(0)
        >>> actor = ProbabilisticActor(
        ...     TensorDictModule(nn.Linear(4, 2), in_keys=["observation"], out_keys=["logits"]),
        ...     in_keys=["logits"], distribution_class=Categorical, return_log_prob=True)
        >>> data = TensorDict({"observation": torch.randn(8, 4)}, batch_size=[8])
        >>> with torch.no_grad():
        ...     data = actor(data)  # stores the action, its log-prob and the logits
        >>> data["advantage"] = torch.randn(8, 1)
        >>> loss = KLPENPPOLoss(actor, None, beta=1.0, dtarg=0.01)
        >>> out = loss(data)
        >>> out["kl"].abs().max().item()  # the policy has not moved: no KL
        0.0
        >>> float(loss.beta)  # mean KL 0 < dtarg / 1.5: beta shrinks by decrement
        0.5
    """

    beta: torch.Tensor
    _kl_form: str | None = None  # how the last eager call found the KL (kl_with_form)

    def __init__(
        self,
        actor_network: TensorDictModuleBase | None = None,
        critic_network: TensorDictModuleBase | None = None,
        *,
        dtarg: float = 0.01,
        beta: float | torch.Tensor = 1.0,
        increment: float = 2.0,
        decrement: float = 0.5,
        samples_mc_kl: int = 1,
        **kwargs: Any,
    ) -> None:
        validate_klpen_options(
            dtarg=dtarg,
            beta=beta,
            increment=increment,
            decrement=decrement,
            samples_mc_kl=samples_mc_kl,
        )
        super().__init__(actor_network, critic_network, **kwargs)
        self.dtarg = float(dtarg)
        self.increment = float(increment)
        self.decrement = float(decrement)
        self.samples_mc_kl = int(samples_mc_kl)
        self.register_buffer(
            "beta",
            torch.tensor(
                float(beta), dtype=torch.get_default_dtype(), device=self.entropy_coeff.device
            ),
        )

    def after_call(self, out: TensorDictBase) -> None:
        """Beta's update from the call's mean KL (after the loss was built).

        The buffer is replaced, not written in place: the beta the returned loss used stays
        as it was for its backward pass, also when a compiled graph saved it (the gradient
        is that of the returned loss, see the module docstring).
        """
        with torch.no_grad():
            self.beta = next_beta(
                self.beta,
                out["kl"].mean(),
                dtarg=self.dtarg,
                increment=self.increment,
                decrement=self.decrement,
            )

    def compile_ready(self) -> bool:
        # torch's kl_divergence (a pair without ppokit's formula) cannot be traced
        return self._kl_form in ("pure", "sampled")

    def compute(
        self, inp: LossInputs, *, mc_entropy: bool = False, traced: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """:meth:`ppokit.PPOLoss.compute` with the KL penalty; adds ``kl`` ``[*B, 1]``."""
        out, extras = super().compute(inp, mc_entropy=mc_entropy, traced=traced)
        out["kl"] = extras["kl"].detach().unsqueeze(-1)
        if not traced:  # what a compiled call will do
            self._kl_form = extras["kl_form"]
        return out, extras

    def _before_actor(self, inp: LossInputs, *, traced: bool) -> Any:
        if self.delay_actor:
            # the penalty pulls towards the proximal policy (the target copy of the actor),
            # not towards the behaviour policy whose parameters the data stores (TorchRL)
            return self._proximal_dist(inp.work)
        if traced:  # the stored parameters, as a plain dict (checked by the eager call)
            return self.actor_plan().build_dist(TensorReader({}, inp.work))
        # pi_old from the stored parameters, before the actor writes its new ones there
        return previous_distribution(self.actor_network, inp.work)

    def _penalty(
        self, before: Any, dist: Any, sample_shape: torch.Size, extras: dict[str, Any]
    ) -> torch.Tensor:
        kl, extras["kl_form"] = kl_with_form(
            before, dist, samples_mc_kl=self.samples_mc_kl, batch_shape=sample_shape
        )
        extras["kl"] = kl
        return kl_penalty(kl, self.beta)

    def _all_out_keys(self) -> list[str]:
        keys = super()._all_out_keys()
        return [keys[0], "kl", *keys[1:]]

    def _extra_in_keys(self) -> list[NestedKey]:
        # the stored distribution parameters pi_old is rebuilt from
        return [
            k
            for m in self.actor_network.modules()
            if isinstance(m, ProbabilisticTensorDictModule)
            for k in m.in_keys
        ]

    def extra_repr(self) -> str:
        return (
            f"dtarg={self.dtarg}, beta={float(self.beta)}, increment={self.increment}, "
            f"decrement={self.decrement}, " + super().extra_repr()
        )
