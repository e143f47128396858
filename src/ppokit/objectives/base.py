"""The PPO loss base class :class:`PPOLoss` (unclipped surrogate); clipped PPO is in ``ppo.py``.

Names, keys and outputs follow TorchRL's ``torchrl.objectives`` so that TorchRL users and
modules feel at home; TorchRL 0.14.1 is the numeric reference (see
``tests/objectives/test_loss_parity_torchrl.py``). A call (:mod:`ppokit.objectives.running`)
is: read and check the data (:mod:`ppokit.objectives.inputs`), run the networks
(:mod:`ppokit.objectives.networks`), score the policy (:mod:`ppokit.objectives.policy_terms`), then
the one pure function :func:`ppokit.objectives.objective.ppo_objective`; the class itself
holds the options and :meth:`PPOLoss.compute`, which wires those parts together.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

from ppokit.objectives.advantage import AdvantageEstimation
from ppokit.objectives.coefficients import ScheduledCoefficients
from ppokit.objectives.critic import CriticLoss
from ppokit.objectives.inputs import LossInputs
from ppokit.objectives.keys import LossKeys, PPOKeys
from ppokit.objectives.keywords import LossKeywords
from ppokit.objectives.networks import LossNetworks
from ppokit.objectives.objective import objective_keys, ppo_objective
from ppokit.objectives.options import (
    check_clip_value,
    check_exclude_dims,
    check_options,
    check_unsupported,
    default_device,
    resolve_alias,
    resolve_coefficients,
)
from ppokit.objectives.policy_terms import PolicyTerms
from ppokit.objectives.protocol import LossProtocol
from ppokit.objectives.running import Compute, LossRunner

__all__ = ["Compute", "PPOKeys", "PPOLoss"]


class PPOLoss(
    LossRunner,
    PolicyTerms,
    LossProtocol,
    CriticLoss,
    LossNetworks,
    ScheduledCoefficients,
    LossKeywords,
    AdvantageEstimation,
    LossKeys,
):
    """Unclipped PPO loss: ``-ratio * advantage`` plus critic and entropy terms.

    This is the base of :class:`ClipPPOLoss` and takes the same arguments but
    ``clip_epsilon``; see that class for the full description.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import NormalParamExtractor, TensorDictModule
        >>> from ppokit import IndependentNormal, PPOLoss, ProbabilisticActor, ValueOperator
        >>> actor = ProbabilisticActor(
        ...     TensorDictModule(nn.Sequential(nn.Linear(3, 4), NormalParamExtractor()),
        ...                      in_keys=["observation"], out_keys=["loc", "scale"]),
        ...     in_keys=["loc", "scale"], distribution_class=IndependentNormal)
        >>> critic = ValueOperator(nn.Linear(3, 1), in_keys=["observation"])
        >>> data = TensorDict({"observation": torch.randn(5, 3), "action": torch.randn(5, 2),
        ...     "action_log_prob": torch.randn(5), "advantage": torch.randn(5, 1),
        ...     "value_target": torch.randn(5, 1)}, batch_size=[5])
        >>> sorted(k for k in PPOLoss(actor, critic)(data).keys() if k.startswith("loss_"))
        ['loss_critic', 'loss_entropy', 'loss_objective']
    """

    default_keys = PPOKeys
    #: value estimators the loss can build with :meth:`make_value_estimator`
    SUPPORTED_VALUE_ESTIMATORS = ("gae", "td_lambda", "td0", "td1", "magae", "vtrace")
    _clip_epsilon_for_value: float | None = None

    def __init__(
        self,
        actor_network: TensorDictModuleBase | None = None,
        critic_network: TensorDictModuleBase | None = None,
        *,
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
        clip_value: bool | float | torch.Tensor | None = None,
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
        super().__init__()
        actor_network = resolve_alias("actor_network", actor_network, "actor", actor, None)
        critic_network = resolve_alias("critic_network", critic_network, "critic", critic, None)
        check_unsupported(gamma=gamma)
        entropy_coef, self._entropy_coeff_map, critic_coef = resolve_coefficients(
            (entropy_coef, entropy_coeff),
            (critic_coef, critic_coeff),
            actor_network,
            critic_network,
        )
        reduction = "mean" if reduction is None else reduction
        check_options(
            actor_network=actor_network,
            critic_network=critic_network,
            samples_mc_entropy=samples_mc_entropy,
            entropy_coef=entropy_coef,
            critic_coef=critic_coef,
            loss_critic_type=loss_critic_type,
            reduction=reduction,
        )
        self.entropy_bonus = bool(entropy_bonus)
        self.samples_mc_entropy = int(samples_mc_entropy)
        device = (
            torch.device(device)
            if device is not None
            else default_device(actor_network, critic_network)
        )
        self.register_coefficient("entropy_coeff", entropy_coef, device=device)
        self.register_coefficient("critic_coeff", critic_coef, device=device)
        self.loss_critic_type = loss_critic_type
        self.normalize_advantage = bool(normalize_advantage)
        self.normalize_advantage_exclude_dims = check_exclude_dims(normalize_advantage_exclude_dims)
        self.log_explained_variance = bool(log_explained_variance)
        self.separate_losses = bool(separate_losses)
        self.reduction = reduction
        clip_value = check_clip_value(
            clip_value,
            self._clip_epsilon_for_value,
            asymmetric=getattr(self, "_asymmetric_clip", False),
        )
        for name, value in (
            ("clip_value", clip_value),
            ("max_importance_ratio", max_importance_ratio),
        ):
            self.register_optional_coefficient(name, value, device=device)  # off when None
        self.check_inputs = bool(check_inputs)
        self._has_critic = critic_network is not None and float(critic_coef) != 0.0
        self._init_networks(actor_network, critic_network, functional=bool(functional))
        self._init_keywords(
            advantage_norm=advantage_norm,
            delay_actor=delay_actor,
            normalize_advantage=self.normalize_advantage,
            functional=bool(functional),
        )
        self.tensor_keys = self.default_keys()
        self._value_estimator: nn.Module | None = None
        self._adopt_actor_keys(actor_network)
        self._set_deprecated_keys(
            advantage=advantage_key, value_target=value_target_key, value=value_key
        )

    def _optional_keyword_keys(self) -> list[NestedKey]:
        # a keyword call may bring the advantage and targets (then no estimator runs)
        keys = self.tensor_keys
        return [keys.advantage, keys.value_target, keys.value]

    def _all_out_keys(self) -> list[str]:
        """Names of the entries :meth:`forward` returns with the current options."""
        return objective_keys(
            clipped=self._clip_epsilon() is not None,
            entropy=self.entropy_bonus,
            critic=self._has_critic,
            explained_variance=self.log_explained_variance,
            value_clip=self.clip_value is not None,
        )

    # ------------------------------------------------------------------ the loss
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Compute the losses on a batch of transitions.

        Args:
            tensordict: batch ``[*B]`` with the observation(s) the networks read, the action,
                its behaviour log-prob ``[*B]`` and, unless the value estimator should
                compute them, ``advantage`` and ``value_target`` ``[*B, 1]``.

        Returns:
            A TensorDict with no batch dims: ``loss_*`` scalars (``[*B]`` with
            ``reduction="none"``) and detached diagnostics.
        """
        return self.run(tensordict, self.compute)

    def compute(
        self, inp: LossInputs, *, mc_entropy: bool = False, traced: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The networks, then :func:`~ppokit.objectives.objective.ppo_objective`.

        Returns the output entries and, for the checks, ``extras``: the critic's ``value``,
        whether the entropy is the closed form and, with a mask, ``entropy_all`` (the entropy
        summed over every sample, padding included, which must be finite for the closed form
        to be used, as without a mask).

        ``traced=True`` is the call inside a compiled graph (``ppokit.fast``), made only
        after an eager call and checks showed that the direct path applies, no parameter
        swap is needed and the interaction type is already set. Free of data-dependent
        Python branches on the direct path, so that ``torch.compile`` can trace it.
        """
        actor_env: dict = {}
        before = self._before_actor(inp, traced=traced)  # KLPEN: pi_old, before the actor
        dist = self._policy_dist(inp, actor_env, traced=traced)
        # one log-prob per sample [*B], or per token [*B, T] (see inputs.read_inputs)
        sample_shape = inp.old_log_prob.shape
        log_prob = self._log_prob(dist, inp.action, sample_shape)
        if not self._overlap_resolved and not traced:
            self._resolve_overlap(log_prob)
        extras: dict[str, Any] = {}
        # the penalty's draws (a sampled KL) come before the entropy's, as in TorchRL
        penalty = self._penalty(before, dist, sample_shape, extras)
        entropy, terms = self._entropy_term(
            dist, sample_shape, inp.mask, extras, mc=mc_entropy, traced=traced
        )
        prox = self._proximal_dist(inp.work)  # delay_actor: the proximal policy (no grad)
        prox_log_prob = None if prox is None else self._log_prob(prox, inp.action, sample_shape)
        value = None
        if self._has_critic:
            value = extras["value"] = self._critic_value(
                inp, actor_env, self.tensor_keys.value, traced=traced
            )
        out = ppo_objective(
            log_prob,
            inp.old_log_prob,
            inp.advantage,
            entropy=entropy,
            value=value,
            value_target=inp.value_target,
            old_value=inp.old_value,
            mask=inp.mask,
            clip_epsilon=self._clip_epsilon(traced=traced),
            penalty=penalty,
            max_importance_ratio=self._coefficient("max_importance_ratio", traced=traced),
            prox_log_prob=prox_log_prob,
            advantage_scale=self._advantage_scale(),
            entropy_coeff=(
                1.0
                if self._entropy_coeff_map is not None
                else self._coefficient("entropy_coeff", traced=traced)
            ),
            critic_coeff=self._coefficient("critic_coeff", traced=traced),
            clip_value=self._coefficient("clip_value", traced=traced),
            loss_critic_type=self.loss_critic_type,
            reduction=self.reduction,
            normalize_advantage=self.normalize_advantage,
            normalize_advantage_exclude_dims=self.normalize_advantage_exclude_dims,
            log_explained_variance=self.log_explained_variance,
            batch_ndim=len(inp.batch),
        )
        self._report_heads(out, terms, extras, inp.mask)
        return out, extras

    def _clip_epsilon(self, *, traced: bool = False) -> Any:
        """The ratio clip range of the surrogate term; None for plain PPO."""
        return None

    def _before_actor(self, inp: LossInputs, *, traced: bool) -> Any:
        """What the penalty needs from the data before the actor runs (none here)."""
        return None

    def _penalty(
        self, before: Any, dist: Any, sample_shape: torch.Size, extras: dict[str, Any]
    ) -> torch.Tensor | None:
        """A per-sample term ``[*B, 1]`` added to the surrogate (KLPEN's); None here."""
        return None

    # ------------------------------------------------------------------ misc
    def extra_repr(self) -> str:
        entropy = (
            self._entropy_coeff_map if self._entropy_coeff_map is not None else self.entropy_coef
        )
        return (
            f"entropy_coef={entropy}, critic_coef={self.critic_coef}, "
            f"loss_critic_type={self.loss_critic_type!r}, reduction={self.reduction!r}, "
            f"functional={self._functional}"
        )
