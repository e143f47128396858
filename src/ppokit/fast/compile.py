"""Opt-in ``torch.compile`` of a PPO loss: :func:`compile_loss`.

The loss's own :meth:`~ppokit.PPOLoss.run` does the call: reading and checking the
TensorDict (keys, shapes, stored tensors without grad) stays eager Python; the networks and
the math (``PPOLoss.compute(..., traced=True)`` on plain tensors, ending in
:func:`ppokit.objectives.objective.ppo_objective`) are compiled as one graph with
``fullgraph=True``; the one data-dependent check (are the outputs finite? if not, which
input is to blame) runs eagerly on the result. The numbers are those of the eager loss up
to float rounding (inductor fuses and reorders the float ops).

A call runs eagerly, exactly as ``loss(td)``, when the compiled graph would not reproduce
it: on the first call (which settles the entropy form and, with ``separate_losses``, which
parameters the policy uses), when the networks are not a plain chain of TensorDict modules
(see :mod:`ppokit.internals.direct`), and while the loss runs on parameters other than its
modules' own (``with params.to_module(loss): ...``, meta-RL).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import set_interaction_type
from torch import nn

from ppokit.objectives.base import PPOLoss
from ppokit.objectives.inputs import LossInputs

__all__ = [
    "CompiledLoss",
    "check_compilable",
    "compile_loss",
    "network_keys",
    "traceable",
    "traced_args",
    "with_own_code",
]


class CompiledLoss(nn.Module):
    """A PPO loss whose networks and math run as one ``torch.compile`` graph.

    Built by :func:`compile_loss`; called like the loss, ``compiled(td)``, with the same
    output. ``compiled.loss`` is the wrapped loss (its parameters are this module's).

    Args:
        loss: a ppokit ``PPOLoss`` / ``ClipPPOLoss`` / ``KLPENPPOLoss`` (single-head
            policy; see :func:`check_compilable`).

    Keyword Args:
        fullgraph: fail rather than split the graph (default True: the loss has no
            graph breaks).
        dynamic: passed to ``torch.compile`` (None: recompile once for a new batch size,
            then treat sizes as dynamic).
        mode: ``torch.compile`` mode, e.g. ``"max-autotune-no-cudagraphs"``.
        backend: ``torch.compile`` backend (default ``"inductor"``).
    """

    def __init__(
        self,
        loss: PPOLoss,
        *,
        fullgraph: bool = True,
        dynamic: bool | None = None,
        mode: str | None = None,
        backend: str = "inductor",
    ) -> None:
        super().__init__()
        check_compilable(loss, "compile_loss")
        self.loss = loss
        self._warm = False
        self.eager_calls = 0  #: calls that ran eagerly (first call, fallbacks)
        self.compiled_calls = 0  #: calls that ran the compiled graph
        self._core = torch.compile(
            with_own_code(self._core_impl),
            fullgraph=fullgraph,
            dynamic=dynamic,
            mode=mode,
            backend=backend,
        )
        self._external_keys: list | None = None

    def _core_impl(
        self,
        tensors: dict,
        batch: torch.Size,
        action: torch.Tensor,
        old_log_prob: torch.Tensor,
        advantage: torch.Tensor,
        value_target: torch.Tensor | None,
        old_value: torch.Tensor | None,
        mask: torch.Tensor | None,
        mc_entropy: bool,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        inp = LossInputs(
            tensors, batch, action, old_log_prob, advantage, value_target, old_value, mask, True
        )
        out, extras = self.loss.compute(inp, mc_entropy=mc_entropy, traced=True)
        return out, extras.get("value"), extras.get("entropy_all")

    def _can_compile(self, inp: LossInputs) -> bool:
        return self._warm and traceable(self.loss, inp)

    def _network_keys(self) -> list:
        if self._external_keys is None:
            self._external_keys = network_keys(self.loss)
        return self._external_keys

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Same as ``loss(tensordict)``."""
        return self.loss.run(tensordict, self._compute)

    def _compute(self, inp: LossInputs) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``loss.compute(inp)``, through the compiled graph when it reproduces the call."""
        loss = self.loss
        if not self._can_compile(inp):
            self._warm = True
            self.eager_calls += 1
            return loss.compute(inp)
        args = traced_args(loss, inp, self._network_keys())
        mc = args[-1]
        with set_interaction_type(loss.actor_plan().interaction()):
            out, value, entropy_all = self._core(*args)
        self.compiled_calls += 1
        extras: dict[str, Any] = {"value": value, "closed_form_entropy": not mc}
        if entropy_all is not None:
            extras["entropy_all"] = entropy_all
        return out, extras


def check_compilable(loss: object, caller: str) -> None:
    """Refuse, with the reason, a loss ``ppokit.fast`` cannot run as a graph.

    A composite (multi-head) policy builds tensordict's ``CompositeDistribution`` from a
    sub-TensorDict of parameters, which the direct path (:mod:`ppokit.internals.direct`)
    that the graph is traced through does not reproduce: such a loss would only ever run
    eagerly, so it is refused here rather than slowed down by a compiler that never runs.
    """
    if not isinstance(loss, PPOLoss):
        raise TypeError(
            f"{caller} expects a ppokit PPOLoss/ClipPPOLoss/KLPENPPOLoss, got "
            f"{type(loss).__name__}."
        )
    action = loss.tensor_keys.action
    if isinstance(action, list):
        raise TypeError(
            f"{caller} cannot compile a loss whose policy has several action heads "
            f"({action}, a CompositeDistribution): its distribution is built from a "
            "sub-TensorDict of parameters, which the compiled path does not trace. Use the "
            "eager loss (loss(td)) and the eager update for composite actions."
        )


def with_own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a function or bound method) with a code object of its own, for ``torch.compile``.

    Dynamo keeps its compiled graphs per code object, at most
    ``torch._dynamo.config.recompile_limit`` (8) of them, and every instance of a class whose
    method is compiled adds one (its guards see another ``self``). With ``fullgraph=True`` the
    ninth instance in a process (a hyperparameter sweep, a test suite) fails with
    ``FailOnRecompileLimitHit``. An equal copy of the code object gives each instance its own
    cache; it is freed with the instance.

    Example:
        >>> def f(x):
        ...     return x + 1
        >>> g = with_own_code(f)
        >>> g(1), g.__code__ is f.__code__, g.__code__ == f.__code__
        (2, False, True)
    """
    if isinstance(fn, types.MethodType):
        return types.MethodType(with_own_code(fn.__func__), fn.__self__)
    copy = types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    return copy


def traceable(loss: PPOLoss, inp: LossInputs) -> bool:
    """Whether ``loss.compute(inp, traced=True)`` reproduces the eager call on ``inp``.

    It does once an eager call has settled what the traced path takes as known (which
    parameters the policy uses, the entropy form), on the fast path (plain chains of
    TensorDict modules), and while the networks run on their own parameters.
    """
    if not (inp.fast and loss._overlap_resolved and loss.compile_ready()):
        return False
    if loss.entropy_bonus and loss._closed_form_entropy is None:
        return False
    if loss.functional:
        for slots, params in (
            (loss._actor_slots, loss.actor_network_params),
            (loss._critic_slots, loss.critic_network_params),
        ):
            if params is None:
                continue
            if slots is None or not slots.in_place(params):
                return False  # other parameters are swapped in: run eagerly
    elif loss._critic_detached_shared is not None:
        return False  # separate_losses with shared parameters needs a swap
    return True


def traced_args(loss: PPOLoss, inp: LossInputs, keys: list) -> tuple:
    """The arguments of a traced ``compute`` call, in the order of ``LossInputs``.

    ``(tensors, batch, action, old_log_prob, advantage, value_target, old_value, mask,
    mc_entropy)``: ``tensors`` holds the data the networks read (``keys``, from
    :func:`network_keys`); ``mc_entropy`` repeats the eager call's choice of the Monte-Carlo
    entropy (no closed form, e.g. TanhNormal), whose draws then come from inductor's
    generator.
    """
    work = inp.work
    tensors = {}
    for key in keys:
        value = work.get(key, None)
        if value is not None:
            tensors[key] = value
    mc = bool(loss.entropy_bonus and not loss._closed_form_entropy)
    return (
        tensors,
        inp.batch,
        inp.action,
        inp.old_log_prob,
        inp.advantage,
        inp.value_target,
        inp.old_value,
        inp.mask,
        mc,
    )


def network_keys(loss: PPOLoss) -> list:
    """The data keys the loss's networks read (the tensors a traced call is given), and
    those it reads beyond them (KLPEN: the stored distribution parameters)."""
    keys = loss.actor_plan().external_keys()
    if loss._has_critic:
        produced = loss.actor_plan().written_keys()
        keys += [k for k in loss.critic_plan().external_keys(produced) if k not in keys]
    return keys + [k for k in loss._extra_in_keys() if k not in keys]


def compile_loss(
    loss: PPOLoss,
    *,
    fullgraph: bool = True,
    dynamic: bool | None = None,
    mode: str | None = None,
    backend: str = "inductor",
) -> CompiledLoss:
    """Compile a ppokit PPO loss with ``torch.compile`` (opt-in; eager is the default).

    The returned module is called like the loss and returns the same entries with the same
    numbers (up to float rounding). The first call runs eagerly; compiling happens on the
    second (expect tens of seconds on a small CPU), and again for a new batch size. Monte-Carlo
    entropy (TanhNormal) draws from inductor's random stream, which differs from eager's;
    set ``torch._inductor.config.fallback_random = True`` for identical draws.

    Args:
        loss: a ``ClipPPOLoss`` (or ``PPOLoss``).

    Keyword Args:
        fullgraph: see :class:`CompiledLoss`.
        dynamic: see :class:`CompiledLoss`.
        mode: see :class:`CompiledLoss`.
        backend: see :class:`CompiledLoss`.

    Returns:
        A :class:`CompiledLoss`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor, ValueOperator
        >>> actor = ProbabilisticActor(
        ...     TensorDictModule(nn.Linear(4, 2), ["observation"], ["logits"]),
        ...     in_keys=["logits"], distribution_class=Categorical, return_log_prob=True)
        >>> loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(4, 1)))
        >>> compiled = compile_loss(loss, backend="eager")  # "inductor" (default) for speed
        >>> data = TensorDict({"observation": torch.randn(8, 4)}, batch_size=[8])
        >>> with torch.no_grad():
        ...     data = actor(data)
        >>> data["advantage"], data["value_target"] = torch.randn(8, 1), torch.randn(8, 1)
        >>> out = [compiled(data) for _ in range(2)]  # the first call is eager
        >>> expected = loss(data)["loss_objective"]
        >>> compiled.compiled_calls, torch.allclose(out[1]["loss_objective"], expected)
        (1, True)
    """
    return CompiledLoss(loss, fullgraph=fullgraph, dynamic=dynamic, mode=mode, backend=backend)
