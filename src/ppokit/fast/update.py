"""One PPO minibatch update: loss, gradient, global-norm clip, Adam step.

:class:`FusedPPOUpdate` runs the whole update as a single ``torch.compile`` graph per
minibatch: the loss's networks and math, their gradient (``torch.func.grad``), the clip
and Adam's update rule. Between the kernels of an eager update sit the autograd engine,
the optimizer's Python and one dispatch per op; on small networks they take most of the
time (``benchmarks/bench_update_step.py``: the fused update takes ~0.4x the eager
trainer's time per minibatch at 64x64 networks, minibatch 64).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import set_interaction_type
from torch import nn

from ppokit.fast.compile import (
    check_compilable,
    network_keys,
    traceable,
    traced_args,
    with_own_code,
)
from ppokit.objectives.base import PPOLoss
from ppokit.objectives.inputs import LossInputs
from ppokit.objectives.objective import probe, to_output
from ppokit.objectives.step import UpdateResult, eager_update

__all__ = ["EagerStep", "FusedPPOUpdate"]


#: ``step(loss, params, optimizer, minibatch, *, max_grad_norm, target_kl) -> UpdateResult``
EagerStep = Callable[..., UpdateResult]


def _verdict(out: dict, kl: torch.Tensor, kl_limit: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Whether the loss came out finite, and whether the update applies: only if the eager
    loop would apply it (finite outputs, else its rerun raises; a KL within the target, else
    the loop stops)."""
    total = probe(out)
    finite = torch.isfinite(total) if total is not None else torch.tensor(True)
    return finite, finite & (kl <= kl_limit)


class _Networks(nn.Module):
    """The loss's actor and critic as the only submodules, for ``torch.func.functional_call``.

    The loss itself also holds the critic through its value estimator; a module tree in
    which one parameter has two names makes the compiled ``torch.func.grad`` fail in
    AOTAutograd ("Cannot access storage of TensorWrapper", torch 2.13), so the loss is kept
    out of the tree (a plain attribute) and only the networks it runs are registered.
    """

    def __init__(self, loss: PPOLoss) -> None:
        super().__init__()
        self.actor = loss.actor_network
        self.critic = loss.critic_network if loss._has_critic else None
        object.__setattr__(self, "loss", loss)

    def forward(
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
    ) -> dict[str, torch.Tensor]:
        inp = LossInputs(
            tensors, batch, action, old_log_prob, advantage, value_target, old_value, mask, True
        )
        loss: PPOLoss = self.__dict__["loss"]
        out, extras = loss.compute(inp, mc_entropy=mc_entropy, traced=True)
        if "entropy_all" in extras:
            out["entropy_all"] = extras["entropy_all"]
        return out


class FusedPPOUpdate:
    """A PPO minibatch update as one compiled graph; same numbers as the eager update.

    ``update(minibatch)`` does what the eager loop does: ``out = loss(minibatch)``, backward
    of the sum of the ``loss_*`` entries, torch's ``clip_grad_norm_``, ``optimizer.step()``. The
    parameters and Adam's state tensors (``exp_avg``, ``exp_avg_sq``, ``step``) are updated
    in place, so ``optimizer.state_dict()``, checkpoints and the eager path stay
    interchangeable; ``.grad`` is not written. Float results agree with the eager update up
    to rounding (inductor fuses and reorders float ops).

    A call runs the eager update instead when the compiled graph would not reproduce it: the
    first call (which settles what the graph may take as known, and creates Adam's state),
    and every call :func:`ppokit.compile_loss` would also run eagerly. When the loss comes
    out non-finite the graph leaves everything untouched and the eager update reruns the
    minibatch, so the loss's own checks say which input is to blame, as without fusion.

    Args:
        loss: a ppokit ``ClipPPOLoss`` / ``PPOLoss`` / ``KLPENPPOLoss`` with a single-head
            policy; the actor and the critic may share parameters (a shared trunk, stepped
            once with the sum of both heads' gradients).
        optimizer: a ``torch.optim.Adam`` over exactly the parameters those networks use, in
            one parameter group, without ``amsgrad``, ``maximize``, ``weight_decay`` or
            ``differentiable``.

    Keyword Args:
        max_grad_norm: clip the global L2 norm of the gradients to this (None: no clip).
        dynamic: passed to ``torch.compile``.
        backend: ``torch.compile`` backend (default ``"inductor"``).
        eager_step: the eager update run when the graph cannot be (default
            :func:`ppokit.objectives.step.eager_update`; a trainer may pass its own, with the
            same signature).
        grad_sync: averages a list of gradient tensors over ranks, in place
            (:meth:`ppokit.distributed.GradientAverager.average_`): the update then runs as
            two graphs, the gradients and then clip + Adam, with this one collective between
            them (data-parallel training under ``torchrun``; DDP's hooks cannot be traced).
        kl_mean: how ``kl_approx`` is averaged (over ranks) before the ``target_kl`` test, so
            every rank takes the same decision; used with ``grad_sync``.

    Raises:
        TypeError / ValueError: an unsupported loss, optimizer or setting (the message says
            which; use the eager update or ``compile_loss`` then).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from tensordict import TensorDict
        >>> from ppokit import Categorical, ClipPPOLoss, ProbabilisticActor, ValueOperator
        >>> actor = ProbabilisticActor(nn.Linear(4, 2), in_keys=["observation"],
        ...     out_keys=["logits"], distribution_class=Categorical, return_log_prob=True)
        >>> loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(4, 1), in_keys=["observation"]))
        >>> opt = torch.optim.Adam(loss.parameters(), lr=1e-3)
        >>> update = FusedPPOUpdate(loss, opt, max_grad_norm=0.5, backend="eager")
        >>> data = TensorDict({"observation": torch.randn(8, 4)}, batch_size=[8])
        >>> with torch.no_grad():
        ...     data = actor(data)
        >>> data["advantage"], data["value_target"] = torch.randn(8, 1), torch.randn(8, 1)
        >>> results = [update(data) for _ in range(3)]  # the first call is eager
        >>> update.eager_calls, update.fused_calls, results[-1].applied
        (1, 2, True)
    """

    def __init__(
        self,
        loss: PPOLoss,
        optimizer: torch.optim.Optimizer,
        *,
        max_grad_norm: float | None = None,
        dynamic: bool | None = None,
        backend: str = "inductor",
        eager_step: EagerStep = eager_update,
        grad_sync: Callable[[list[torch.Tensor]], None] | None = None,
        kl_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        check_compilable(loss, "FusedPPOUpdate")
        if type(optimizer) is not torch.optim.Adam:
            raise TypeError(
                f"FusedPPOUpdate runs Adam's update rule in its graph, so it needs "
                f"a torch.optim.Adam, got {type(optimizer).__name__}."
            )
        if len(optimizer.param_groups) != 1:
            raise ValueError(
                f"FusedPPOUpdate needs one Adam parameter group, got "
                f"{len(optimizer.param_groups)}; give every parameter the same "
                "options, or use the eager update."
            )
        group = optimizer.param_groups[0]
        unsupported = [
            name
            for name in ("amsgrad", "maximize", "differentiable", "capturable")
            if group.get(name)
        ] + (["weight_decay"] if group["weight_decay"] else [])
        if unsupported:
            raise ValueError(
                f"FusedPPOUpdate implements plain Adam; the optimizer sets "
                f"{unsupported}. Use the eager update for these."
            )
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm!r}.")
        self.networks = _Networks(loss)
        # a parameter shared by the actor and the critic (a shared trunk) under its first name:
        # functional_call ties the other names to it
        unique = list(self.networks.named_parameters())
        self._names = [name for name, _ in unique]
        self.params = [p for _, p in unique]
        if {id(p) for p in group["params"]} != {id(p) for p in self.params} or len(
            group["params"]
        ) != len(self.params):
            raise ValueError(
                f"The optimizer must hold exactly the {len(self.params)} parameters of the "
                f"loss's actor and critic; it holds {len(group['params'])} (other or "
                "missing tensors)."
            )
        self.loss, self.optimizer = loss, optimizer
        self.max_grad_norm = max_grad_norm
        self._eager_step = eager_step
        self.eager_calls = 0  #: minibatches updated eagerly (first call, fallbacks)
        self.fused_calls = 0  #: minibatches updated by the compiled graph
        self._warm = False
        self._keys: list | None = None
        self._lr = torch.zeros(())  # a tensor input: the annealed lr must not recompile
        self._max_norm = torch.tensor(math.inf if max_grad_norm is None else max_grad_norm)
        self._grad_sync = grad_sync
        self._kl_mean: Callable[[torch.Tensor], torch.Tensor] = kl_mean or (lambda kl: kl)

        def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
            return torch.compile(
                with_own_code(fn), fullgraph=True, dynamic=dynamic, backend=backend
            )

        # one process: the whole update is one graph. With grad_sync (a collective cannot
        # sit inside a fullgraph graph on gloo): the gradients and clip + Adam are two
        # graphs, and _update runs eagerly between them with the one all-reduce.
        self._gradients_step: Callable[..., Any] = self._gradients
        self._adam_step: Callable[..., Any] = self._adam
        if grad_sync is None:
            self._graph = compiled(self._update)
        else:
            self._gradients_step = compiled(self._gradients)
            self._adam_step = compiled(self._adam)
            self._graph = self._update

    # ------------------------------------------------------------------ the compiled step
    def _gradients(self, params: list[torch.Tensor], args: tuple) -> tuple[Any, dict]:
        """The gradient of the sum of the loss's ``loss_*`` terms, and its (detached) output."""
        names, networks = self._names, self.networks

        def total_loss(ps: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
            # one name per parameter, and no tying: a module reached twice (a shared trunk)
            # is one object, swapped once (tying would swap it, and restore it, twice)
            out = torch.func.functional_call(
                networks, dict(zip(names, ps)), args, tie_weights=False
            )
            total = sum(v for k, v in out.items() if k.startswith("loss_"))
            return total, {k: v.detach() for k, v in out.items()}

        return torch.func.grad(total_loss, has_aux=True)(params)

    @staticmethod
    def _adam(
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        exp_avg: list[torch.Tensor],
        exp_avg_sq: list[torch.Tensor],
        steps: list[torch.Tensor],
        lr: torch.Tensor,
        max_norm: torch.Tensor,
        apply: torch.Tensor,
        betas: tuple[float, float],
        eps: float,
    ) -> torch.Tensor:
        """Clip ``grads`` to ``max_norm`` and take Adam's step where ``apply``; the norm."""
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        beta1, beta2 = betas
        for p, g, m, v, s in zip(params, grads, exp_avg, exp_avg_sq, steps):
            # torch.optim.Adam's rule (Kingma & Ba 2015, eps outside the square root)
            g = g * coef
            m1 = m.lerp(g, 1 - beta1)
            v1 = v * beta2 + (1 - beta2) * g * g
            s1 = s + 1
            step_size = lr / (1 - beta1**s1)
            denom = v1.sqrt() / (1 - beta2**s1).sqrt() + eps
            p1 = p - step_size * m1 / denom
            # written into the inputs (the parameters and the optimizer's state tensors): the
            # graph's epilogue stores them, with no new tensors and no copies afterwards
            for kept, moved in ((p, p1), (m, m1), (v, v1), (s, s1)):
                kept.copy_(torch.where(apply, moved, kept))
        return norm

    def _update(
        self,
        params: list[torch.Tensor],
        exp_avg: list[torch.Tensor],
        exp_avg_sq: list[torch.Tensor],
        steps: list[torch.Tensor],
        lr: torch.Tensor,
        max_norm: torch.Tensor,
        kl_limit: torch.Tensor,
        args: tuple,
        betas: tuple[float, float],
        eps: float,
    ) -> tuple[Any, ...]:
        grads, out = self._gradients_step(params, args)
        kl = out["kl_approx"]
        if self._grad_sync is not None:  # every rank tests the same (averaged) KL
            kl = self._kl_mean(kl)
        finite, apply = _verdict(out, kl, kl_limit)
        if self._grad_sync is not None and bool(finite):
            self._grad_sync(grads)  # (a rank whose loss is not finite reruns eagerly and raises)
        norm = self._adam_step(
            params, grads, exp_avg, exp_avg_sq, steps, lr, max_norm, apply, betas, eps
        )
        return out, norm, finite, apply

    # ------------------------------------------------------------------ a call
    def __call__(
        self, tensordict: TensorDictBase, *, target_kl: float | None = None
    ) -> UpdateResult:
        """Update on one minibatch.

        Args:
            tensordict: the minibatch the loss reads (``[B]``).
            target_kl: skip the update when the minibatch's ``kl_approx`` exceeds this
                (SB3's early stop: the minibatch whose policy drifted too far is not used).

        Returns:
            :class:`UpdateResult`: the loss's (detached) output, the gradient norm before
            clipping (None when the update was skipped for the KL) and whether the update
            was applied.
        """
        loss = self.loss
        inp = loss.read_inputs(tensordict)
        state = self.optimizer.state
        if not (
            self._warm
            and traceable(loss, inp)
            and all("exp_avg" in state.get(p, ()) for p in self.params)
        ):
            # no Adam state yet (a parameter eager Adam has not stepped, as its grad was None):
            # the eager step creates it exactly as torch does
            return self._eager(tensordict, target_kl)
        if self._keys is None:
            self._keys = network_keys(loss)
        group = self.optimizer.param_groups[0]
        if float(self._lr) != group["lr"]:
            self._lr.fill_(group["lr"])
        states = [self.optimizer.state[p] for p in self.params]
        current = (
            [p.detach() for p in self.params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
        )
        kl_limit = torch.tensor(math.inf if target_kl is None else float(target_kl))
        args = traced_args(loss, inp, self._keys)
        with torch.no_grad(), set_interaction_type(loss.actor_plan().interaction()):
            out, norm, finite, apply = self._graph(
                *current,
                self._lr,
                self._max_norm,
                kl_limit,
                args,
                tuple(group["betas"]),
                group["eps"],
            )
        if not bool(finite):
            return self._eager(tensordict, target_kl)  # the loss's checks name the culprit
        self.fused_calls += 1
        out.pop("entropy_all", None)
        result = to_output(out)
        loss.after_call(result)  # as the eager loss's call does (KLPEN: beta's update)
        if bool(apply):
            return UpdateResult(result, norm, True)
        return UpdateResult(result, None, False)  # KL over target: nothing applied

    def _eager(self, tensordict: TensorDictBase, target_kl: float | None) -> UpdateResult:
        self._warm = True
        self.eager_calls += 1
        out, norm, applied = self._eager_step(
            self.loss,
            self.params,
            self.optimizer,
            tensordict,
            max_grad_norm=self.max_grad_norm,
            target_kl=target_kl,
        )
        for p in self.params:
            p.grad = None  # as after a fused call
        return UpdateResult(out.detach(), norm, applied)
