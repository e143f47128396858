"""How a PPO loss holds and runs its actor and critic.

:class:`LossNetworks` is the part of :class:`ppokit.PPOLoss` that owns the networks: their
parameters (held by the loss as ``TensorDictParams`` in functional mode), the shared-trunk
bookkeeping of ``separate_losses``, the choice between the direct path
(:mod:`ppokit.internals.direct`) and tensordict's own calls, and the three things the loss
asks of the networks: the policy's distribution, log-probs/entropies, and the critic's value.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import tensordict
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase, TensorDictParams
from torch import distributions as D
from torch import nn

from ppokit.internals.direct import ModulePlan, TensorReader
from ppokit.internals.slots import ParamSlots
from ppokit.internals.versions import direct_path_supported
from ppokit.modules.distributions import deferred_param_checks
from ppokit.objectives.inputs import CriticInputs, LossInputs
from ppokit.objectives.keys import PPOKeys, key_str
from ppokit.objectives.network_inputs import explain_input_error

__all__ = ["EXECUTION_PATHS", "LossNetworks"]

logger = logging.getLogger("ppokit.objectives")

#: the values of ``loss.execution_path``
EXECUTION_PATHS = ("direct", "tensordict")


class LossNetworks(nn.Module):
    """Actor and critic of a PPO loss (a base of :class:`ppokit.PPOLoss`; not used alone).

    The networks are kept out of ``_modules`` in functional mode: the loss owns their
    parameters through ``TensorDictParams`` (same tensor objects), so ``parameters()``,
    ``state_dict()`` and ``.to()`` see each tensor once, and swapping those params (meta-RL)
    changes what the networks run with.
    """

    actor_network: TensorDictModuleBase
    critic_network: TensorDictModuleBase | None
    samples_mc_entropy: int
    separate_losses: bool
    _has_critic: bool  # set by the loss: a critic is run and trained
    tensor_keys: PPOKeys

    def _init_networks(
        self, actor: TensorDictModuleBase, critic: TensorDictModuleBase | None, *, functional: bool
    ) -> None:
        self._functional = functional
        self._set_network("actor_network", actor)
        self._set_network("critic_network", critic)
        self.actor_network_params = (
            TensorDict.from_module(actor, as_module=True) if functional else None
        )
        self.critic_network_params: TensorDictParams | None = None
        self._critic_detached_shared: TensorDict | None = None
        # Direct path: run the networks on plain tensors, and skip the to_module swap while
        # the loss's parameters are the modules' own.
        self._actor_plan = ModulePlan.for_actor(actor)
        self._critic_plan = ModulePlan.for_critic(critic) if critic is not None else None
        self._actor_slots = (
            ParamSlots.build(self.actor_network_params, actor) if functional else None
        )
        self._critic_slots: ParamSlots | None = None
        self._closed_form_entropy: bool | None = None
        self._last_path: str | None = None
        # Parameters both networks hold. With separate_losses the critic sees detached views
        # of them; which of them the policy really uses is settled on the first forward.
        self._overlap = self._shared_leaves(actor, critic)
        self._overlap_resolved = not (self.separate_losses and self._overlap)
        if critic is not None:
            self._build_critic_params(self._overlap if self.separate_losses else set())

    @property
    def functional(self) -> bool:
        """Whether the networks run on the parameters held by the loss."""
        return self._functional

    @property
    def execution_path(self) -> str:
        """How the next call runs the networks: ``"direct"`` or ``"tensordict"``.

        ``"direct"`` calls the wrapped ``nn.Module``\\ s on plain tensors
        (:mod:`ppokit.internals.direct`; same modules, same tensors, same numbers) and is
        taken only for plain chains of TensorDict modules, on a supported tensordict
        release, with no hooks on the wrappers and no ``set_skip_existing`` active.
        Everything else runs through tensordict. Each change is logged at DEBUG level on
        the ``"ppokit.objectives"`` logger.
        """
        return "direct" if self._direct_usable() else "tensordict"

    def execution_path_reason(self) -> str:
        """Why :attr:`execution_path` is what it is, in words (for logs and debugging)."""
        if not direct_path_supported():
            return (
                f"tensordict {tensordict.__version__} is not a release the direct path was "
                "checked on"
            )
        for name, plan in (("actor", self._actor_plan), ("critic", self._critic_plan)):
            if name == "critic" and not self._has_critic:
                continue
            if plan is None:
                return f"the {name} is not a plain chain of TensorDict modules"
            if not plan.usable():
                return f"a hook, set_skip_existing or a swapped network is active on the {name}"
        return "plain TensorDict modules, no hooks"

    def _direct_usable(self) -> bool:
        if self._actor_plan is None or not self._actor_plan.usable():
            return False
        if self._has_critic:
            return self._critic_plan is not None and self._critic_plan.usable()
        return True

    def actor_plan(self) -> ModulePlan:
        """The actor's direct-path plan (only called where :attr:`execution_path` is direct)."""
        if self._actor_plan is None:
            raise RuntimeError("The direct path was taken for an actor that has no plan.")
        return self._actor_plan

    def critic_plan(self) -> ModulePlan:
        """The critic's direct-path plan (as :meth:`actor_plan`)."""
        if self._critic_plan is None:
            raise RuntimeError("The direct path was taken for a critic that has no plan.")
        return self._critic_plan

    def _choose_path(self) -> bool:
        """Whether this call takes the direct path; logs the choice when it changes."""
        direct = self._direct_usable()
        path = EXECUTION_PATHS[0] if direct else EXECUTION_PATHS[1]
        if path != self._last_path:
            self._last_path = path
            logger.debug(
                "%s runs its networks on the %s path (%s)",
                type(self).__name__,
                path,
                self.execution_path_reason(),
            )
        return direct

    # ------------------------------------------------------------------ construction
    def _set_network(self, name: str, module: nn.Module | None) -> None:
        if self._functional or module is None:
            object.__setattr__(self, name, module)
        else:
            setattr(self, name, module)  # registered: DDP/FSDP wrappers keep working

    def _build_critic_params(self, detach_ids: set[int]) -> None:
        critic = self.critic_network
        if critic is None:
            return
        critic_params = TensorDict.from_module(critic)
        if detach_ids:
            # Same storage, no autograd edge: actor updates are seen, critic loss can't push.
            critic_params = critic_params.apply(lambda p: p.detach() if id(p) in detach_ids else p)
        if self._functional:
            self.critic_network_params = TensorDictParams(critic_params, no_convert=True)
            self._critic_slots = ParamSlots.build(self.critic_network_params, critic)
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
        leaves = (
            list(params.values(True, True))
            if params is not None
            else list(self.actor_network.parameters())
        )
        candidates = [p for p in leaves if id(p) in self._overlap and p.requires_grad]
        grads = torch.autograd.grad(
            log_prob.sum(), candidates, retain_graph=True, allow_unused=True
        )
        used = {id(p) for p, g in zip(candidates, grads) if g is not None}
        self._build_critic_params(used)
        self._overlap_resolved = True

    @staticmethod
    def _shared_leaves(actor: nn.Module, critic: nn.Module | None) -> set[int]:
        if critic is None:
            return set()
        actor_ids = {id(p) for p in actor.parameters()} | {id(b) for b in actor.buffers()}
        return {id(p) for p in critic.parameters() if id(p) in actor_ids}

    # ------------------------------------------------------------------ running
    def _run_actor(self) -> contextlib.AbstractContextManager:
        params: Any = self.actor_network_params
        if params is not None:
            if self._actor_slots is not None and self._actor_slots.in_place(params):
                return contextlib.nullcontext()  # the module already runs on these tensors
            return params.to_module(self.actor_network)
        return contextlib.nullcontext()

    def _run_critic(self) -> contextlib.AbstractContextManager:
        params: Any = self.critic_network_params
        if params is not None:
            if self._critic_slots is not None and self._critic_slots.in_place(params):
                return contextlib.nullcontext()
            return params.to_module(self.critic_network)
        if self._critic_detached_shared is not None:
            return self._critic_detached_shared.to_module(self.critic_network)
        return contextlib.nullcontext()

    def _policy_dist(self, inp: LossInputs, actor_env: dict, *, traced: bool) -> D.Distribution:
        """The policy's distribution on ``inp.work``; the actor's outputs go to ``actor_env``.

        ``traced``: inside a compiled graph, which runs only where the parameters need no
        swap and the interaction type is already set (see ``ppokit.fast.compile``).
        """
        if traced:
            return self.actor_plan().get_dist(
                TensorReader(actor_env, inp.work), inp.batch, set_interaction=False
            )
        try:
            if inp.fast:
                # the distribution's own value checks (a host sync each) are replaced by the
                # finiteness probe of the output; a non-finite output reruns them to name the
                # bad parameter (PPOLoss._explain_non_finite)
                with self._run_actor(), deferred_param_checks():
                    return self.actor_plan().get_dist(TensorReader(actor_env, inp.work), inp.batch)
            with self._run_actor():
                return self.actor_network.get_dist(inp.work)
        except (RuntimeError, TypeError) as error:  # diagnosed only on failure: free otherwise
            explain_input_error(self.actor_network, inp.work, role="actor", error=error)
            raise

    def networks(self) -> Iterator[nn.Module]:
        """The actor and (if any) critic networks, as passed in."""
        yield self.actor_network
        if self.critic_network is not None:
            yield self.critic_network

    def _critic_output(self, work: TensorDictBase) -> TensorDictBase:
        """The critic run through tensordict on ``work`` (its own parameters, detached
        input with ``separate_losses``); returns what it wrote."""
        critic: Any = self.critic_network
        with self._run_critic():
            return critic(work.detach() if self.separate_losses else work)

    def _critic_value(
        self, inp: LossInputs | CriticInputs, actor_env: dict, value_key: object, *, traced: bool
    ) -> torch.Tensor:
        """The critic's prediction ``[*B, 1]`` at ``value_key``."""
        critic_keys = getattr(self.critic_network, "out_keys", None)
        if critic_keys is not None and value_key not in critic_keys:
            raise KeyError(
                f"The critic does not write {key_str(value_key)}; it writes "
                f"{list(critic_keys)}. Call loss.set_keys(value=<the critic's output key>)."
            )
        try:
            if inp.fast:  # direct path: the actor's outputs are in actor_env
                reader = TensorReader(
                    {}, TensorReader(actor_env, inp.work), detach=self.separate_losses
                )
                with contextlib.nullcontext() if traced else self._run_critic():
                    self.critic_plan().run(reader, inp.batch)
                value = reader.env.get(value_key)
                if value is None:
                    value = reader.get(value_key)
            else:
                value = self._critic_output(inp.work).get(value_key, None)
        except (RuntimeError, TypeError) as error:  # diagnosed only on failure
            explain_input_error(self.critic_network, inp.work, role="critic", error=error)
            raise
        if value is None:
            raise KeyError(
                f"The critic did not write {key_str(value_key)}; it writes "
                f"{list(getattr(self.critic_network, 'out_keys', []))}. Call "
                "loss.set_keys(value=<the critic's output key>)."
            )
        # one value per sample: [*B, 1], or the value target's [*B, *T, 1] (per agent/token)
        target = inp.value_target
        expected = (*inp.batch, 1) if target is None else tuple(target.shape)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"The critic's output {key_str(value_key)} has shape {tuple(value.shape)}, "
                f"expected {expected} (one value per sample, the value target's shape)."
            )
        return value
