"""PPO losses: the unclipped :class:`PPOLoss` base and :class:`ClipPPOLoss`.

Names, keys and outputs follow TorchRL's ``torchrl.objectives`` so that TorchRL users and
modules feel at home; TorchRL 0.14.1 is the numeric reference (see
``tests/objectives/test_parity_torchrl.py``). The math itself lives in
:mod:`ppokit.objectives.functional`; this module reads and checks the data, runs the
networks and assembles the output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase, TensorDictParams
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn

from ppokit.fast.direct import ModulePlan, ParamSlots, TensorReader
from ppokit.modules.distributions import deferred_param_checks
from ppokit.objectives import functional as PF

__all__ = ["ClipPPOLoss", "PPOKeys", "PPOLoss"]

# Looked up in this order when no mask key is set: TorchRL's collector mask and the
# validity mask of its multi-step transforms, so TorchRL data is masked out of the box.
AUTO_MASK_KEYS: tuple[NestedKey, ...] = (("collector", "mask"), "shifted_valid")


@dataclasses.dataclass
class PPOKeys:
    """The TensorDict keys a PPO loss reads; change them with ``loss.set_keys(...)``.

    Attributes:
        advantage: advantage ``[*B, 1]``; computed by the value estimator when absent.
        value_target: critic regression target ``[*B, 1]``.
        value: state value ``[*B, 1]`` written by the critic (the stored one is V_old
            for ``clip_value``).
        sample_log_prob: log-prob of the stored action under the behaviour policy ``[*B]``
            (TorchRL's older pipelines store it as ``"sample_log_prob"``).
        action: the action as sampled, ``[*B, *act]``.
        reward: reward, read under ``"next"`` by the value estimator.
        done: end of a trajectory (terminated or truncated), under ``"next"``.
        terminated: terminal state (no bootstrap), under ``"next"``.
        mask: boolean ``[*B]`` or ``[*B, 1]`` validity mask; ``None`` looks for
            ``("collector", "mask")`` then ``"shifted_valid"``.
    """

    advantage: NestedKey = "advantage"
    value_target: NestedKey = "value_target"
    value: NestedKey = "state_value"
    sample_log_prob: NestedKey = "action_log_prob"
    action: NestedKey = "action"
    reward: NestedKey = "reward"
    done: NestedKey = "done"
    terminated: NestedKey = "terminated"
    mask: NestedKey | None = None


_ESTIMATOR_KEYS = ("advantage", "value_target", "value", "reward", "done", "terminated")


def _key_str(key: NestedKey) -> str:
    return repr(key)


def _resolve_alias(
    name: str, value: Any, alias: str, alias_value: Any, default: Any
) -> Any:
    if value is not None and alias_value is not None and value != alias_value:
        raise TypeError(
            f"Got both {name}={value!r} and {alias}={alias_value!r}; they are two spellings of "
            f"the same option, pass only one."
        )
    chosen = value if value is not None else alias_value
    return default if chosen is None else chosen


class PPOLoss(nn.Module):
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
    SUPPORTED_VALUE_ESTIMATORS = ("gae", "td_lambda", "td0", "td1")

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        critic_network: TensorDictModuleBase | None = None,
        *,
        entropy_bonus: bool = True,
        samples_mc_entropy: int = 1,
        entropy_coef: float | None = None,
        critic_coef: float | None = None,
        loss_critic_type: str = "smooth_l1",
        normalize_advantage: bool = False,
        separate_losses: bool = False,
        advantage_key: NestedKey | None = None,
        value_target_key: NestedKey | None = None,
        value_key: NestedKey | None = None,
        functional: bool = True,
        reduction: str = "mean",
        clip_value: bool | float | None = None,
        entropy_coeff: float | None = None,
        critic_coeff: float | None = None,
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        entropy_coef = _resolve_alias("entropy_coef", entropy_coef, "entropy_coeff",
                                      entropy_coeff, 0.01)
        critic_coef = _resolve_alias("critic_coef", critic_coef, "critic_coeff",
                                     critic_coeff, 1.0)
        self._validate_options(
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
        self.entropy_coef = float(entropy_coef)
        self.critic_coef = float(critic_coef)
        self.loss_critic_type = loss_critic_type
        self.normalize_advantage = bool(normalize_advantage)
        self.separate_losses = bool(separate_losses)
        self.reduction = reduction
        self.clip_value = self._validate_clip_value(clip_value)
        self.check_inputs = bool(check_inputs)
        self._functional = bool(functional)
        self._has_critic = critic_network is not None and self.critic_coef != 0.0

        # The networks are kept out of ``_modules`` in functional mode: the loss owns their
        # parameters through TensorDictParams (same tensor objects), so parameters(),
        # state_dict() and .to() see each tensor once, and swapping those params (meta-RL)
        # changes what the networks run with.
        self._set_network("actor_network", actor_network)
        self._set_network("critic_network", critic_network)
        if self._functional:
            self.actor_network_params = TensorDict.from_module(actor_network, as_module=True)
        else:
            self.actor_network_params = None
        self.critic_network_params: TensorDictParams | None = None
        self._critic_detached_shared: TensorDict | None = None
        # Fast path (see ppokit.fast.direct): run the networks on plain tensors, and
        # skip the to_module swap while the loss's parameters are the modules' own.
        self._actor_plan = ModulePlan.for_actor(actor_network)
        self._critic_plan = (ModulePlan.for_critic(critic_network)
                             if critic_network is not None else None)
        self._actor_slots = (ParamSlots.build(self.actor_network_params, actor_network)
                             if self._functional else None)
        self._critic_slots: ParamSlots | None = None
        self._closed_form_entropy: bool | None = None
        # Parameters both networks hold. With separate_losses the critic sees detached views
        # of them; which of them the policy really uses is settled on the first forward.
        self._overlap = self._shared_leaves(actor_network, critic_network)
        self._overlap_resolved = not (self.separate_losses and self._overlap)
        if critic_network is not None:
            self._build_critic_params(self._overlap if self.separate_losses else set())

        self.tensor_keys = self.default_keys()
        self._value_estimator: nn.Module | None = None
        self._adopt_actor_keys(actor_network)
        self._set_deprecated_keys(
            advantage=advantage_key, value_target=value_target_key, value=value_key
        )

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _validate_options(
        *,
        actor_network: Any,
        critic_network: Any,
        samples_mc_entropy: Any,
        entropy_coef: Any,
        critic_coef: Any,
        loss_critic_type: Any,
        reduction: Any,
    ) -> None:
        if not isinstance(actor_network, nn.Module) or not hasattr(actor_network, "get_dist"):
            raise TypeError(
                "actor_network must be a probabilistic TensorDict module with get_dist() "
                "(ppokit.ProbabilisticActor, tensordict's ProbabilisticTensorDictSequential or a "
                f"TorchRL ProbabilisticActor); got {type(actor_network).__name__}."
            )
        if critic_network is not None and not isinstance(critic_network, nn.Module):
            raise TypeError(
                "critic_network must be a TensorDict module such as ppokit.ValueOperator; got "
                f"{type(critic_network).__name__}."
            )
        if critic_network is None and critic_coef not in (0, 0.0):
            raise TypeError(
                "critic_network is missing: pass a ValueOperator, or critic_coef=0 to train the "
                "actor alone (the advantage must then be in the data)."
            )
        if isinstance(samples_mc_entropy, bool) or not isinstance(samples_mc_entropy, int) or (
            samples_mc_entropy < 1
        ):
            raise ValueError(
                f"samples_mc_entropy must be an integer >= 1, got {samples_mc_entropy!r}."
            )
        for name, value in (("entropy_coef", entropy_coef), ("critic_coef", critic_coef)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        if loss_critic_type not in PF.LOSS_CRITIC_TYPES:
            raise ValueError(
                f"loss_critic_type must be one of {PF.LOSS_CRITIC_TYPES}, got "
                f"{loss_critic_type!r}."
            )
        if reduction not in PF.REDUCTIONS:
            raise ValueError(f"reduction must be one of {PF.REDUCTIONS}, got {reduction!r}.")

    def _validate_clip_value(self, clip_value: bool | float | None) -> float | None:
        if clip_value is None or clip_value is False:
            return None
        if clip_value is True:
            eps = getattr(self, "_clip_epsilon_for_value", None)
            if eps is None:
                raise ValueError(
                    "clip_value=True takes its threshold from clip_epsilon, which PPOLoss does "
                    "not have: pass a float (e.g. clip_value=0.2) or use ClipPPOLoss."
                )
            return eps
        if not isinstance(clip_value, (int, float)) or not clip_value > 0 or not math.isfinite(
            clip_value
        ):
            raise ValueError(
                f"clip_value must be True, False, None or a finite float > 0, got {clip_value!r}."
            )
        return float(clip_value)

    def _set_network(self, name: str, module: nn.Module | None) -> None:
        if self._functional or module is None:
            object.__setattr__(self, name, module)
        else:
            setattr(self, name, module)  # registered: DDP/FSDP wrappers keep working

    def _build_critic_params(self, detach_ids: set[int]) -> None:
        critic_params = TensorDict.from_module(self.critic_network)
        if detach_ids:
            # Same storage, no autograd edge: actor updates are seen, critic loss can't push.
            critic_params = critic_params.apply(
                lambda p: p.detach() if id(p) in detach_ids else p
            )
        if self._functional:
            self.critic_network_params = TensorDictParams(critic_params, no_convert=True)
            self._critic_slots = ParamSlots.build(self.critic_network_params,
                                                  self.critic_network)
        else:
            self._critic_detached_shared = critic_params if detach_ids else None

    def _resolve_overlap(self, log_prob: torch.Tensor) -> None:
        """Keep the critic from training only what the policy really uses.

        A critic may hold parameters of the actor that the policy does not use: in the spec's
        single-call shared-trunk layout the actor is the whole model, value head included.
        Detaching every common parameter would leave that value head untrained, so the
        policy's use is read once from the autograd graph of its log-prob.
        """
        if not log_prob.requires_grad:
            return
        params = self.actor_network_params if self._functional else None
        leaves = (list(params.values(True, True)) if params is not None
                  else list(self.actor_network.parameters()))
        candidates = [p for p in leaves if id(p) in self._overlap and p.requires_grad]
        grads = torch.autograd.grad(log_prob.sum(), candidates, retain_graph=True,
                                    allow_unused=True)
        used = {id(p) for p, g in zip(candidates, grads) if g is not None}
        self._build_critic_params(used)
        self._overlap_resolved = True

    @staticmethod
    def _shared_leaves(actor: nn.Module, critic: nn.Module | None) -> set[int]:
        if critic is None:
            return set()
        actor_ids = {id(p) for p in actor.parameters()} | {id(b) for b in actor.buffers()}
        return {id(p) for p in critic.parameters() if id(p) in actor_ids}

    def _adopt_actor_keys(self, actor: nn.Module) -> None:
        # The loss scores the action and reads the log-prob under the keys the actor writes.
        log_prob_keys = getattr(actor, "log_prob_keys", None)
        sample_keys = getattr(actor, "dist_sample_keys", None)
        if not log_prob_keys or not sample_keys:
            return
        if len(log_prob_keys) > 1 or len(sample_keys) > 1:
            raise ValueError(
                f"The actor writes several actions {list(sample_keys)}: composite action "
                "distributions are not supported by ppokit's PPO loss yet. Use one action head."
            )
        self.tensor_keys.sample_log_prob = log_prob_keys[0]
        self.tensor_keys.action = sample_keys[0]

    def _set_deprecated_keys(self, **keys: NestedKey | None) -> None:
        given = {name: key for name, key in keys.items() if key is not None}
        if not given:
            return
        args = ", ".join(f"{name}_key" for name in given)
        fix = ", ".join(f"{name}={key!r}" for name, key in given.items())
        warnings.warn(
            f"The {args} argument(s) are deprecated; call loss.set_keys({fix}) instead.",
            DeprecationWarning,
            stacklevel=3,
        )
        self.set_keys(**given)

    # ------------------------------------------------------------------ public configuration
    @property
    def functional(self) -> bool:
        """Whether the networks run on the parameters held by the loss (see class doc)."""
        return self._functional

    def set_keys(self, **keys: NestedKey | None) -> PPOLoss:
        """Rename the TensorDict keys the loss reads (see :class:`PPOKeys`).

        A name may be given with or without the ``_key`` suffix (``advantage=`` or
        ``advantage_key=``); ``None`` restores the default. Unknown names raise.

        Example:
            >>> from torch import nn
            >>> from tensordict.nn import TensorDictModule
            >>> from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor, ValueOperator
            >>> actor = ProbabilisticActor(
            ...     TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"]),
            ...     in_keys=["logits"], distribution_class=Categorical)
            >>> loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(3, 1)))
            >>> loss.set_keys(sample_log_prob="sample_log_prob").tensor_keys.sample_log_prob
            'sample_log_prob'
        """
        fields = {f.name for f in dataclasses.fields(self.tensor_keys)}
        resolved: dict[str, NestedKey | None] = {}
        for name, key in keys.items():
            field = name[: -len("_key")] if name.endswith("_key") else name
            if field not in fields:
                raise ValueError(
                    f"set_keys() got an unknown key name {name!r}; accepted names are "
                    f"{sorted(fields)}."
                )
            if key is not None and not isinstance(key, (str, tuple)):
                raise TypeError(
                    f"set_keys({name}=...) expects a key (a str or a tuple of str), got "
                    f"{type(key).__name__}."
                )
            resolved[field] = key
        defaults = self.default_keys()
        for field, key in resolved.items():
            setattr(self.tensor_keys, field, getattr(defaults, field) if key is None else key)
        if self._value_estimator is not None:
            self._forward_keys_to_estimator()
        return self

    def _forward_keys_to_estimator(self) -> None:
        keys = {name: getattr(self.tensor_keys, name) for name in _ESTIMATOR_KEYS}
        self._value_estimator.set_keys(**keys)

    def make_value_estimator(self, value_type: str | Any = "gae", **hyperparams: Any) -> PPOLoss:
        """Choose how the loss computes advantages when the data has none.

        Args:
            value_type: ``"gae"`` (default), ``"td_lambda"``, ``"td0"`` or ``"td1"`` (or a
                :class:`~ppokit.ValueEstimators` member).
            **hyperparams: passed to the estimator, e.g. ``gamma=0.99, lmbda=0.95``.
                GAE and TD(lambda) default to gamma 0.99 and lambda 0.95, TD(0)/TD(1) to
                gamma 0.99.

        Example:
            >>> from torch import nn
            >>> from tensordict.nn import TensorDictModule
            >>> from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor, ValueOperator
            >>> actor = ProbabilisticActor(
            ...     TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"]),
            ...     in_keys=["logits"], distribution_class=Categorical)
            >>> loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(3, 1)))
            >>> type(loss.make_value_estimator("td_lambda", gamma=0.9).value_estimator).__name__
            'TDLambdaEstimate'
        """
        from ppokit.value.estimators import make_value_estimator

        if self.critic_network is None:
            raise ValueError(
                "make_value_estimator() needs a critic_network; this loss was built without one."
            )
        kind = getattr(value_type, "value", value_type)
        if kind in ("gae", "td_lambda"):
            hyperparams.setdefault("lmbda", 0.95)
        hyperparams.setdefault("gamma", 0.99)
        self._value_estimator = make_value_estimator(
            value_type, value_network=self.critic_network, **hyperparams
        )
        self._forward_keys_to_estimator()
        return self

    @property
    def value_estimator(self) -> nn.Module:
        """The advantage estimator run when the data has no advantage (GAE by default)."""
        if self._value_estimator is None:
            self.make_value_estimator()
        return self._value_estimator

    @value_estimator.setter
    def value_estimator(self, estimator: nn.Module) -> None:
        self._value_estimator = estimator

    @property
    def out_keys(self) -> list[str]:
        """Names of the entries :meth:`forward` returns."""
        keys = ["loss_objective", "kl_approx", "ESS", "max_ratio", "mean_ratio"]
        if self._clipped:
            keys.append("clip_fraction")
        if self.entropy_bonus:
            keys += ["entropy", "loss_entropy"]
        if self._has_critic:
            keys += ["loss_critic", "explained_variance"]
            if self.clip_value is not None:
                keys.append("value_clip_fraction")
        return keys

    _clipped = False

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
        inputs = self._read_inputs(tensordict)
        out, extras = self._compute(inputs)
        if not self._outputs_finite(out, extras):
            out = self._explain_non_finite(inputs, out, extras)
        return _output(out)

    # ------------------------------------------------------------------ pieces of forward
    def _read_inputs(self, tensordict: TensorDictBase) -> _Inputs:
        """Read and check everything the loss needs from the data (no network runs here)."""
        if not isinstance(tensordict, TensorDictBase):
            raise TypeError(
                f"{type(self).__name__} expects a TensorDict, got {type(tensordict).__name__}."
            )
        keys = self.tensor_keys
        batch = tensordict.batch_size
        if len(batch) == 0:
            raise ValueError(
                "The input TensorDict has no batch dimension (batch_size=[]); the loss needs "
                "a batch of samples, e.g. TensorDict(..., batch_size=[B])."
            )
        mask = self._get_mask(tensordict, batch)
        # Read everything the user stored BEFORE running any network: a module that samples
        # on its way (a full actor-critic operator as the actor) would overwrite the stored
        # action, log-prob and value in the data it runs on.
        action = self._get(tensordict, keys.action, "action")
        old_log_prob = self._get(tensordict, keys.sample_log_prob, "sample_log_prob")
        self._check_no_grad(action, keys.action)
        self._check_no_grad(old_log_prob, keys.sample_log_prob)
        if old_log_prob.shape != batch:
            raise ValueError(
                f"The log-prob at {_key_str(keys.sample_log_prob)} has shape "
                f"{tuple(old_log_prob.shape)}, expected the batch shape {tuple(batch)}: one "
                "log-prob per sample, summed over the action dims (e.g. use IndependentNormal "
                "rather than Normal, or .sum(-1) the stored log-prob)."
            )

        advantage = tensordict.get(keys.advantage, None)
        fast = self._fast_path_usable()
        # shallow copy: the estimator and tensordict's modules write here, not in the input
        # (the fast path writes into plain dicts and reads the input as it is)
        work = tensordict if fast and advantage is not None else tensordict.copy()
        if advantage is None:
            advantage = self._estimate_advantage(work, keys)
        old_value = None
        if self._has_critic and self.clip_value is not None:
            # V_old is the value in the data, or the one the loss's own estimator just wrote
            # (then clipping has no effect, as the spec notes). Read before the actor runs.
            old_value = self._get(work, keys.value, "value",
                                  hint="clip_value needs the value stored at collection time")
        value_target = None
        if self._has_critic:
            value_target = self._get(work, keys.value_target, "value_target",
                                     hint="a value estimator writes it next to the advantage")
        self._check_target_shape(advantage, keys.advantage, batch)
        if value_target is not None:
            self._check_target_shape(value_target, keys.value_target, batch)
        if old_value is not None:
            self._check_target_shape(old_value, keys.value, batch)
        return _Inputs(work, batch, action, old_log_prob, advantage, value_target, old_value,
                       mask, fast)

    def _compute(self, inp: _Inputs, *, mc_entropy: bool = False, traced: bool = False
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The networks and the math: the output entries, and tensors for the checks.

        The second dict holds the critic's ``value`` and, with a mask, ``entropy_all``
        (the entropy summed over every sample, padding included, which must be finite for
        the closed form to be used, as without a mask).

        ``traced=True`` is the call from :func:`ppokit.compile_loss`, made only after an eager
        call and checks showed that the fast path applies, no parameter swap is needed and
        the interaction type is already set.

        Free of data-dependent Python branches on the fast path, so that it can be traced
        by ``torch.compile`` (see :func:`ppokit.compile_loss`); the checks that need the
        values live in :meth:`_outputs_finite` and :meth:`_explain_non_finite`.
        """
        batch, mask = inp.batch, inp.mask
        advantage = inp.advantage
        if self.normalize_advantage and advantage.numel() > 1:
            advantage = PF.standardize(advantage, mask)

        actor_env: dict[NestedKey, torch.Tensor] = {}
        if traced:
            dist = self._actor_plan.get_dist(TensorReader(actor_env, inp.work), batch,
                                             set_interaction=False)
        elif inp.fast:
            # the distribution's own value checks (a host sync each) are replaced by the probe
            # in _outputs_finite; _explain_non_finite reruns them to name a bad parameter
            with self._run_actor(), deferred_param_checks():
                dist = self._actor_plan.get_dist(TensorReader(actor_env, inp.work), batch)
        else:
            dist = self._get_dist(inp.work)
        log_prob = self._log_prob(dist, inp.action, batch)
        if not self._overlap_resolved and not traced:
            self._resolve_overlap(log_prob)
        log_weight = (log_prob - inp.old_log_prob).unsqueeze(-1)

        out: dict[str, torch.Tensor] = {}
        extras: dict[str, Any] = {}
        out["loss_objective"] = PF.reduce_loss(self._objective(log_weight, advantage),
                                               self.reduction, mask)
        out.update(PF.ratio_diagnostics(log_weight, self._clip_eps_or_none(), mask))
        if self.entropy_bonus:
            entropy, extras["closed_form_entropy"] = self._entropy(dist, batch, mc=mc_entropy)
            if not traced and not mc_entropy:  # what a compiled call will do (compile_loss)
                self._closed_form_entropy = extras["closed_form_entropy"]
            if mask is None and self.reduction == "mean":
                # scale the mean rather than every sample: the same number, fewer ops
                mean_entropy = entropy.mean()
                out["entropy"] = mean_entropy.detach()
                out["loss_entropy"] = mean_entropy * -self.entropy_coef
            else:
                entropy = entropy.unsqueeze(-1)
                out["entropy"] = PF.masked_mean(entropy.detach(), mask)
                out["loss_entropy"] = PF.reduce_loss(-self.entropy_coef * entropy,
                                                     self.reduction, mask)
                if mask is not None:
                    extras["entropy_all"] = entropy.detach().sum()
        if self._has_critic:
            critic_source = TensorReader(actor_env, inp.work) if inp.fast else None
            extras["value"] = self._critic_terms(inp.work, critic_source, inp.value_target,
                                                 inp.old_value, batch, mask, out, swap=not traced)
        return out, extras

    @staticmethod
    def _outputs_finite(out: dict[str, torch.Tensor], extras: dict[str, torch.Tensor]) -> bool:
        """One cheap test that every input and the closed-form entropy were finite.

        A NaN or Inf in the advantage, value target, stored value, log-prob or critic output
        makes ``loss_objective``, ``kl_approx`` or ``loss_critic`` non-finite (NaN
        propagates through every op used, min/max included; masked samples are selected
        away). So one sum and one host sync replace a check per tensor; when it fails,
        :meth:`_explain_non_finite` finds the culprit (or finds none: a huge but finite
        ratio may overflow; the outputs are then returned as they are).
        """
        probe = PPOLoss._probe(out, extras)
        return probe is None or math.isfinite(float(probe))

    @staticmethod
    def _probe(out: dict[str, torch.Tensor], extras: dict[str, torch.Tensor]
               ) -> torch.Tensor | None:
        """Sum of the probed outputs (see :meth:`_outputs_finite`), no host sync: traceable."""
        parts = []
        for key in _PROBED:
            value = out.get(key, extras.get(key))
            if value is not None:
                parts.append(value.detach() if value.dim() == 0 else value.detach().sum())
        return torch.stack(parts).sum() if parts else None

    def _explain_non_finite(self, inp: _Inputs, out: dict[str, torch.Tensor],
                            extras: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keys = self.tensor_keys
        if inp.fast:
            # the checks the fast path deferred (NaN/Inf loc or logits, scale <= 0), first, as
            # they would have run first: the distribution is built before any loss math
            with torch.no_grad(), self._run_actor():
                self._actor_plan.get_dist(TensorReader({}, inp.work), inp.batch)
        if self.check_inputs:
            self._check_finite(
                (inp.advantage, keys.advantage),
                (inp.old_log_prob, keys.sample_log_prob),
                (inp.value_target, keys.value_target),
                (inp.old_value, keys.value),
                mask=inp.mask,
            )
            if extras.get("value") is not None:
                self._check_finite((extras["value"], keys.value), mask=inp.mask)
        entropy = extras.get("entropy_all", out.get("entropy"))
        if (entropy is not None and extras.get("closed_form_entropy")
                and not bool(torch.isfinite(entropy))):
            # No finite closed form (e.g. a distribution whose entropy() is inf): run again
            # with the Monte-Carlo estimate -E[log pi(a)], which keeps a useful gradient.
            out, _ = self._compute(inp, mc_entropy=True)
        return out

    def _clip_eps_or_none(self) -> float | None:
        return None

    def _objective(self, log_weight: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
        return -log_weight.exp() * advantage

    # ------------------------------------------------------------------ pieces of forward
    def _get(
        self, td: TensorDictBase, key: NestedKey, name: str, *, hint: str | None = None
    ) -> torch.Tensor:
        value = td.get(key, None)
        if value is None:
            present = sorted(str(k) for k in td.keys(include_nested=True, leaves_only=True))
            extra = f" ({hint})" if hint else ""
            raise KeyError(
                f"The input TensorDict has no {_key_str(key)} entry (the {name} key){extra}. "
                f"Present keys: {present}. If the data stores it under another name, call "
                f"loss.set_keys({name}=<that key>)."
            )
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"The {_key_str(key)} entry must be a tensor, got {type(value).__name__}."
            )
        return value

    @staticmethod
    def _check_no_grad(value: torch.Tensor, key: NestedKey) -> None:
        if value.requires_grad:
            raise ValueError(
                f"The stored {_key_str(key)} requires grad: data written while acting must be "
                "constant. Collect under torch.no_grad() or store .detach()ed tensors."
            )

    @staticmethod
    def _check_target_shape(value: torch.Tensor, key: NestedKey, batch: torch.Size) -> None:
        expected = (*batch, 1)
        if tuple(value.shape) == expected:
            return
        fix = ""
        if tuple(value.shape) == tuple(batch):
            fix = " Add the trailing dim with .unsqueeze(-1)."
        raise ValueError(
            f"The {_key_str(key)} entry has shape {tuple(value.shape)}, expected {expected} "
            f"(the batch shape {tuple(batch)} plus a trailing dim of 1); a different shape "
            f"would broadcast silently against the other terms.{fix}"
        )

    @staticmethod
    def _check_finite(
        *entries: tuple[torch.Tensor | None, NestedKey], mask: torch.Tensor | None
    ) -> None:
        present = []
        for value, key in entries:
            if value is None:
                continue
            value = value.detach()
            if mask is not None:  # padded samples may hold anything
                m = mask if value.dim() == mask.dim() else mask.squeeze(-1)
                value = torch.where(m, value, torch.zeros_like(value))
            present.append((value, key))
        # One fused check on the happy path; the per-key search only runs on failure.
        if bool(torch.isfinite(torch.cat([v.reshape(-1) for v, _ in present])).all()):
            return
        for value, key in present:
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                raise ValueError(
                    f"The {_key_str(key)} entry holds {int(bad.sum())} non-finite value(s) "
                    "(NaN or Inf). Check the rewards and the networks that produced it; the loss "
                    "would otherwise return NaN and corrupt the parameters."
                )

    def _get_mask(self, td: TensorDictBase, batch: torch.Size) -> torch.Tensor | None:
        keys = (self.tensor_keys.mask,) if self.tensor_keys.mask is not None else AUTO_MASK_KEYS
        for key in keys:
            mask = td.get(key, None)
            if mask is None:
                continue
            if mask.dtype != torch.bool:
                raise ValueError(
                    f"The mask at {_key_str(key)} must be a bool tensor, got {mask.dtype}."
                )
            if tuple(mask.shape) == tuple(batch):
                mask = mask.unsqueeze(-1)
            if tuple(mask.shape) != (*batch, 1):
                raise ValueError(
                    f"The mask at {_key_str(key)} has shape {tuple(mask.shape)}, expected "
                    f"{tuple(batch)} or {(*batch, 1)}."
                )
            return mask
        if self.tensor_keys.mask is not None:
            raise KeyError(
                f"The mask key was set to {_key_str(self.tensor_keys.mask)} but the input has no "
                "such entry; call loss.set_keys(mask=None) to disable masking."
            )
        return None

    def _estimate_advantage(self, work: TensorDictBase, keys: PPOKeys) -> torch.Tensor:
        if self.critic_network is None:
            raise KeyError(
                f"The input has no {_key_str(keys.advantage)} entry and the loss has no critic "
                "to compute it: add the advantage to the data (e.g. with ppokit.GAE)."
            )
        params = self.critic_network_params.detach() if self._functional else None
        try:
            self.value_estimator(work, params=params)
        except KeyError as err:
            raise KeyError(
                f"The input has no {_key_str(keys.advantage)} entry, so the loss ran its value "
                f"estimator, which failed: {err}. If the critic reads features computed by the "
                "actor (a value head on a shared trunk), compute the advantage beforehand with "
                "the full value operator, e.g. GAE(..., value_network=model.get_value_operator())."
            ) from err
        return work.get(keys.advantage)

    def _fast_path_usable(self) -> bool:
        if self._actor_plan is None or not self._actor_plan.usable():
            return False
        if self._has_critic:
            return self._critic_plan is not None and self._critic_plan.usable()
        return True

    def _run_actor(self) -> contextlib.AbstractContextManager:
        if self._functional:
            params = self.actor_network_params
            if self._actor_slots is not None and self._actor_slots.in_place(params):
                return contextlib.nullcontext()  # the module already runs on these tensors
            return params.to_module(self.actor_network)
        return contextlib.nullcontext()

    def _run_critic(self) -> contextlib.AbstractContextManager:
        if self._functional:
            params = self.critic_network_params
            if self._critic_slots is not None and self._critic_slots.in_place(params):
                return contextlib.nullcontext()
            return params.to_module(self.critic_network)
        if self._critic_detached_shared is not None:
            return self._critic_detached_shared.to_module(self.critic_network)
        return contextlib.nullcontext()

    def _get_dist(self, work: TensorDictBase) -> D.Distribution:
        with self._run_actor():
            return self.actor_network.get_dist(work)

    def _log_prob(
        self, dist: D.Distribution, action: torch.Tensor, batch: torch.Size
    ) -> torch.Tensor:
        log_prob = dist.log_prob(action)
        if not isinstance(log_prob, torch.Tensor) or log_prob.shape != batch:
            shape = getattr(log_prob, "shape", None)
            raise ValueError(
                f"The actor's distribution {type(dist).__name__} gives log-probs of shape "
                f"{tuple(shape) if shape is not None else shape} for actions of shape "
                f"{tuple(action.shape)}, expected the batch shape {tuple(batch)}. A "
                "multi-dimensional action needs a distribution that sums over the action dims "
                "(IndependentNormal, TanhNormal with event_dims=1), not a plain Normal."
            )
        return log_prob

    def _entropy(self, dist: D.Distribution, batch: torch.Size, *, mc: bool = False
                 ) -> tuple[torch.Tensor, bool]:
        """Per-sample entropy ``[*B]`` and whether it is the closed form."""
        entropy = None
        if not mc:
            with contextlib.suppress(NotImplementedError):
                entropy = dist.entropy()
        closed_form = entropy is not None
        if entropy is None:
            # No closed form, e.g. a tanh-squashed Gaussian: Monte-Carlo estimate
            # -E[log pi(a)] from reparameterised samples, so the bonus still has a gradient.
            # (A closed form that is not finite is caught after the fact by the output
            # check, which then reruns with mc=True.)
            entropy = self._mc_entropy(dist)
        if entropy.shape != batch:
            raise ValueError(
                f"The actor's distribution {type(dist).__name__} gives an entropy of shape "
                f"{tuple(entropy.shape)}, expected the batch shape {tuple(batch)}."
            )
        return entropy, closed_form

    def _mc_entropy(self, dist: D.Distribution) -> torch.Tensor:
        shape = torch.Size([self.samples_mc_entropy])
        if dist.has_rsample:
            if hasattr(dist, "rsample_and_log_prob"):
                _, log_prob = dist.rsample_and_log_prob(shape)
            else:
                log_prob = dist.log_prob(dist.rsample(shape))
        elif hasattr(dist, "sample_and_log_prob"):
            _, log_prob = dist.sample_and_log_prob(shape)
        else:
            log_prob = dist.log_prob(dist.sample(shape))
        return -log_prob.mean(0)

    def _critic_terms(
        self,
        work: TensorDictBase,
        source: TensorReader | None,
        value_target: torch.Tensor,
        old_value: torch.Tensor | None,
        batch: torch.Size,
        mask: torch.Tensor | None,
        out: dict[str, torch.Tensor],
        *,
        swap: bool = True,
    ) -> torch.Tensor:
        value_key = self.tensor_keys.value
        critic_keys = getattr(self.critic_network, "out_keys", None)
        if critic_keys is not None and value_key not in critic_keys:
            raise KeyError(
                f"The critic does not write {_key_str(value_key)}; it writes "
                f"{list(critic_keys)}. Call loss.set_keys(value=<the critic's output key>)."
            )
        if source is not None:  # fast path: the actor's outputs are in ``source``
            reader = TensorReader({}, source, detach=self.separate_losses)
            with self._run_critic() if swap else contextlib.nullcontext():
                self._critic_plan.run(reader, batch)
            value = reader.env.get(value_key)
            if value is None:
                value = reader.get(value_key)
        else:
            critic_input = work.detach() if self.separate_losses else work
            with self._run_critic():
                critic_out = self.critic_network(critic_input)
            value = critic_out.get(value_key, None)
        if value is None:
            raise KeyError(
                f"The critic did not write {_key_str(self.tensor_keys.value)}; it writes "
                f"{list(getattr(self.critic_network, 'out_keys', []))}. Call "
                "loss.set_keys(value=<the critic's output key>)."
            )
        if tuple(value.shape) != (*batch, 1):
            raise ValueError(
                f"The critic's output {_key_str(self.tensor_keys.value)} has shape "
                f"{tuple(value.shape)}, expected {(*batch, 1)} (one value per sample)."
            )
        if old_value is not None:
            loss, clipped = PF.clipped_value_loss(value_target, value, old_value,
                                                  self.clip_value, self.loss_critic_type)
            out["value_clip_fraction"] = PF.masked_mean(clipped.to(value.dtype), mask)
        else:
            loss = PF.value_distance(value_target, value, self.loss_critic_type)
        if mask is None and self.reduction == "mean":
            out["loss_critic"] = loss.mean() * self.critic_coef
        else:
            out["loss_critic"] = PF.reduce_loss(self.critic_coef * loss, self.reduction, mask)
        out["explained_variance"] = PF.explained_variance(value_target, value, mask)
        return value

    # ------------------------------------------------------------------ misc
    def extra_repr(self) -> str:
        return (
            f"entropy_coef={self.entropy_coef}, critic_coef={self.critic_coef}, "
            f"loss_critic_type={self.loss_critic_type!r}, reduction={self.reduction!r}, "
            f"functional={self._functional}"
        )

    def networks(self) -> Iterator[nn.Module]:
        """The actor and (if any) critic networks, as passed in."""
        yield self.actor_network
        if self.critic_network is not None:
            yield self.critic_network


# Output entries that are non-finite whenever an input is (see PPOLoss._outputs_finite)
_PROBED = ("loss_objective", "kl_approx", "loss_critic", "entropy", "entropy_all")


class _Inputs(NamedTuple):
    """What :meth:`PPOLoss._read_inputs` read and checked, for :meth:`PPOLoss._compute`."""

    work: Any  # the TensorDict the networks read (a dict of tensors in a compiled call)
    batch: torch.Size
    action: torch.Tensor
    old_log_prob: torch.Tensor
    advantage: torch.Tensor
    value_target: torch.Tensor | None
    old_value: torch.Tensor | None
    mask: torch.Tensor | None
    fast: bool


def _output(out: dict[str, torch.Tensor]) -> TensorDict:
    # Every entry is a tensor with no batch dims, so TensorDict's per-entry checks can be
    # skipped (half the cost of building the output).
    new_unsafe = getattr(TensorDict, "_new_unsafe", None)
    if new_unsafe is not None:
        return new_unsafe(out, batch_size=torch.Size([]))
    return TensorDict(out, batch_size=[])


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
        clip_epsilon: ratio clip range ``eps`` in (0, 1). Default 0.2.
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

    _clipped = True

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        critic_network: TensorDictModuleBase | None = None,
        *,
        clip_epsilon: float = 0.2,
        entropy_bonus: bool = True,
        samples_mc_entropy: int = 1,
        entropy_coef: float | None = None,
        critic_coef: float | None = None,
        loss_critic_type: str = "smooth_l1",
        normalize_advantage: bool = False,
        separate_losses: bool = False,
        advantage_key: NestedKey | None = None,
        value_target_key: NestedKey | None = None,
        value_key: NestedKey | None = None,
        functional: bool = True,
        reduction: str = "mean",
        clip_value: bool | float | None = False,
        entropy_coeff: float | None = None,
        critic_coeff: float | None = None,
        check_inputs: bool = True,
    ) -> None:
        if isinstance(clip_epsilon, torch.Tensor):
            clip_epsilon = float(clip_epsilon)
        if (isinstance(clip_epsilon, bool) or not isinstance(clip_epsilon, (int, float))
                or not 0.0 < clip_epsilon < 1.0):
            raise ValueError(
                f"clip_epsilon must be a number in (0, 1), got {clip_epsilon!r}; the ratio is "
                "clipped to [1 - eps, 1 + eps] (0.1 to 0.3 is usual)."
            )
        self._clip_epsilon_for_value = float(clip_epsilon)
        super().__init__(
            actor_network,
            critic_network,
            entropy_bonus=entropy_bonus,
            samples_mc_entropy=samples_mc_entropy,
            entropy_coef=entropy_coef,
            critic_coef=critic_coef,
            loss_critic_type=loss_critic_type,
            normalize_advantage=normalize_advantage,
            separate_losses=separate_losses,
            advantage_key=advantage_key,
            value_target_key=value_target_key,
            value_key=value_key,
            functional=functional,
            reduction=reduction,
            clip_value=clip_value,
            entropy_coeff=entropy_coeff,
            critic_coeff=critic_coeff,
            check_inputs=check_inputs,
        )
        self.clip_epsilon = float(clip_epsilon)

    def _objective(self, log_weight: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
        return PF.clipped_surrogate(log_weight, advantage, self.clip_epsilon)

    def _clip_eps_or_none(self) -> float | None:
        return self.clip_epsilon

    def extra_repr(self) -> str:
        return f"clip_epsilon={self.clip_epsilon}, " + super().extra_repr()
