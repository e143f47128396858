"""PPO losses: :class:`ClipPPOLoss` (and the unclipped base :class:`PPOLoss`).

Names, keys and outputs follow TorchRL's ``torchrl.objectives``; TorchRL 0.14.1 is the
numeric reference (``tests/objectives/test_loss_parity_torchrl.py``). The losses differ only
in their surrogate term; everything else is :class:`ppokit.objectives.base.PPOLoss`.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from ppokit.objectives.base import PPOLoss
from ppokit.objectives.keys import PPOKeys
from ppokit.objectives.options import check_clip_epsilon

__all__ = ["ClipPPOLoss", "PPOKeys", "PPOLoss"]

_CLIP_NAMES = ("clip_epsilon", "clip_epsilon_low", "clip_epsilon_high")


class ClipPPOLoss(PPOLoss):
    """Clipped PPO loss (Schulman et al. 2017, "Proximal Policy Optimization Algorithms").

    ``loss_objective = -min(r * A, clip(r, 1 - eps, 1 + eps) * A)`` with the importance
    ratio ``r = pi(a|s) / pi_old(a|s)``, plus a critic loss and an entropy bonus. Add up the
    ``loss_*`` entries of the output and backpropagate.

    Args:
        actor_network: probabilistic policy with ``get_dist()``: :class:`ppokit.ProbabilisticActor`,
            tensordict's ``ProbabilisticTensorDictSequential`` or TorchRL's actor.
        critic_network: state-value operator writing ``"state_value"`` ``[*B, 1]``
            (:class:`ppokit.ValueOperator`). May be ``None`` with ``critic_coef=0``.

    Keyword Args:
        clip_epsilon: ratio clip range ``eps`` in (0, 1), or ``(eps_low, eps_high)`` with
            ``0 < eps_low <= eps_high < 1`` for the range ``[1 - eps_low, 1 + eps_high]``
            (DAPO's clip-higher; then schedule ``clip_epsilon_low`` / ``clip_epsilon_high``).
            Default 0.2.
        entropy_bonus: add ``loss_entropy = -entropy_coef * H[pi]``. Default True.
        samples_mc_entropy: samples of the Monte-Carlo entropy estimate, used when the
            distribution has no finite closed form (e.g. TanhNormal). Default 1.
        entropy_coef: entropy multiplier (``entropy_coeff`` accepted). Default 0.01.
        critic_coef: critic-loss multiplier (``critic_coeff`` accepted). Default 1.0.
        loss_critic_type: ``"l1"``, ``"l2"`` or ``"smooth_l1"``. Default ``"smooth_l1"``.
        normalize_advantage: standardise the advantage over the batch (unbiased std,
            clamped at 1e-6) before use. Default False.
        separate_losses: parameters the actor uses get no gradient from the critic loss
            (shared trunks are trained by the policy loss only). Default False.
        advantage_key, value_target_key, value_key: deprecated; use :meth:`set_keys`.
        functional: run the networks on parameters held by the loss as ``TensorDictParams``
            (sharing storage with the modules), so the loss can be evaluated on other
            parameters (meta-RL). ``False`` calls the modules as they are, which DDP/FSDP
            wrappers need. Default True.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-sample losses ``[*B]``).
        clip_value: clip the value prediction to within this distance of the stored value
            (``True``: use ``clip_epsilon``) and take the worse of the clipped and plain
            losses. Default False.
        check_inputs: check stored tensors for NaN/Inf (a few microseconds). Default True.

    Output keys: ``loss_objective``, ``loss_critic``, ``loss_entropy`` and the detached
    diagnostics ``entropy``, ``clip_fraction``, ``kl_approx`` (mean ``log pi_old - log pi``),
    ``ESS`` (normalised effective sample size), ``explained_variance``, ``max_ratio``,
    ``mean_ratio`` and, with ``clip_value``, ``value_clip_fraction``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor, ValueOperator
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> actor = ProbabilisticActor(
        ...     TensorDictModule(nn.Linear(4, 2), in_keys=["observation"], out_keys=["logits"]),
        ...     in_keys=["logits"], distribution_class=Categorical, return_log_prob=True)
        >>> critic = ValueOperator(nn.Linear(4, 1), in_keys=["observation"])
        >>> data = TensorDict({"observation": torch.randn(8, 4)}, batch_size=[8])
        >>> with torch.no_grad():
        ...     data = actor(data)
        >>> data["advantage"] = torch.randn(8, 1)
        >>> data["value_target"] = torch.randn(8, 1)
        >>> loss = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_coef=0.01)
        >>> losses = loss(data)
        >>> total = sum(v for k, v in losses.items() if k.startswith("loss_"))
        >>> total.backward()
        >>> float(losses["clip_fraction"])  # the policy has not moved yet
        0.0
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase | None = None,
        critic_network: TensorDictModuleBase | None = None,
        *,
        clip_epsilon: float | torch.Tensor | tuple[float, float] = 0.2,
        entropy_bonus: bool = True,
        samples_mc_entropy: int = 1,
        entropy_coef: float | torch.Tensor | None = None,
        critic_coef: float | torch.Tensor | None = None,
        loss_critic_type: str = "smooth_l1",
        normalize_advantage: bool = False,
        normalize_advantage_exclude_dims: tuple[int, ...] = (),
        separate_losses: bool = False,
        advantage_key: NestedKey | None = None,
        value_target_key: NestedKey | None = None,
        value_key: NestedKey | None = None,
        functional: bool = True,
        reduction: str | None = None,
        clip_value: bool | float | torch.Tensor | None = False,
        entropy_coeff: float | torch.Tensor | None = None,
        critic_coeff: float | torch.Tensor | None = None,
        log_explained_variance: bool = True,
        check_inputs: bool = True,
        actor: TensorDictModuleBase | None = None,
        critic: TensorDictModuleBase | None = None,
        device: torch.device | str | None = None,
        gamma: float | None = None,
        advantage_norm: Any = None,
        delay_actor: bool = False,
        max_importance_ratio: float | None = None,
    ) -> None:
        low, high = check_clip_epsilon(clip_epsilon)
        self._asymmetric_clip = isinstance(clip_epsilon, (tuple, list))
        # clip_value=True clips the value with the (lower) ratio clip range
        self._clip_epsilon_for_value = low
        super().__init__(
            actor_network,
            critic_network,
            entropy_bonus=entropy_bonus,
            samples_mc_entropy=samples_mc_entropy,
            entropy_coef=entropy_coef,
            critic_coef=critic_coef,
            loss_critic_type=loss_critic_type,
            normalize_advantage=normalize_advantage,
            normalize_advantage_exclude_dims=normalize_advantage_exclude_dims,
            separate_losses=separate_losses,
            advantage_key=advantage_key,
            value_target_key=value_target_key,
            value_key=value_key,
            functional=functional,
            reduction=reduction,
            clip_value=clip_value,
            entropy_coeff=entropy_coeff,
            critic_coeff=critic_coeff,
            log_explained_variance=log_explained_variance,
            check_inputs=check_inputs,
            actor=actor,
            critic=critic,
            device=device,
            gamma=gamma,
            advantage_norm=advantage_norm,
            delay_actor=delay_actor,
            max_importance_ratio=max_importance_ratio,
        )
        device = self.entropy_coeff.device
        if self._asymmetric_clip:
            self.register_coefficient("clip_epsilon_low", low, device=device)
            self.register_coefficient("clip_epsilon_high", high, device=device)
        else:
            self.register_coefficient("clip_epsilon", low, device=device)

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            name in _CLIP_NAMES
            and name not in self.__dict__.get("_buffers", {})
            and any(n in self.__dict__.get("_buffers", {}) for n in _CLIP_NAMES)
        ):
            # scheduling the other flavour would only add an unused attribute
            use = (
                "'clip_epsilon_low' / 'clip_epsilon_high'"
                if self._asymmetric_clip
                else "'clip_epsilon'"
            )
            raise AttributeError(
                f"Cannot set {name!r}: this loss was built with "
                f"{'an asymmetric' if self._asymmetric_clip else 'a symmetric'} clip_epsilon; "
                f"schedule {use} instead."
            )
        super().__setattr__(name, value)

    def _clip_epsilon(self, *, traced: bool = False) -> Any:
        if self._asymmetric_clip:
            return (
                self._coefficient("clip_epsilon_low", traced=traced),
                self._coefficient("clip_epsilon_high", traced=traced),
            )
        return self._coefficient("clip_epsilon", traced=traced)

    def extra_repr(self) -> str:
        eps = self._clip_epsilon()
        return f"clip_epsilon={eps}, " + super().extra_repr()
