"""One call of a PPO loss around its computation: read, compute, check, output.

:class:`LossRunner` is the part of :class:`ppokit.PPOLoss` every way of evaluating the loss
goes through (``loss(td)``, :func:`ppokit.compile_loss`, :class:`ppokit.FusedPPOUpdate`):
the data is read and checked here, the evaluation itself (the loss's ``compute`` or a
compiled graph reproducing it) is handed in, and a non-finite result is traced back to the
input that caused it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDictBase

from ppokit.internals.direct import TensorReader
from ppokit.objectives.inputs import LossInputs, check_finite, read_inputs
from ppokit.objectives.objective import outputs_finite, to_output

__all__ = ["Compute", "LossRunner"]

#: ``compute(inputs) -> (out, extras)``: how :meth:`LossRunner.run` evaluates read inputs
Compute = Callable[[LossInputs], tuple[dict[str, torch.Tensor], dict[str, Any]]]


class LossRunner:
    """Mixin of :class:`~ppokit.PPOLoss`: the call cycle around ``compute``.

    It relies on the loss's keys, options and networks (the other parts of ``PPOLoss``).
    """

    # provided by the other parts of PPOLoss
    tensor_keys: Any
    check_inputs: bool
    clip_value: Any
    _has_critic: bool
    _choose_path: Callable[[], bool]
    _estimate_advantage: Callable[[TensorDictBase], torch.Tensor]
    _run_actor: Callable[[], Any]
    actor_plan: Callable[[], Any]
    compute: Callable[..., tuple[dict[str, torch.Tensor], dict[str, Any]]]

    def run(self, tensordict: TensorDictBase, compute: Compute) -> TensorDictBase:
        """The loss's call with a given evaluation of the read inputs (a compiled one).

        Reads and checks the data, calls ``compute(inputs)`` (the loss's ``compute`` or a
        graph that reproduces it), checks the outputs are finite (else names the culprit),
        builds the output TensorDict and lets the loss update its state
        (:meth:`after_call`).
        """
        inputs = self.read_inputs(tensordict)
        out, extras = compute(inputs)
        if not outputs_finite(out, extras):
            out = self._explain_non_finite(inputs, out, extras)
        result = to_output(out)
        self.after_call(result)
        return result

    def after_call(self, out: TensorDictBase) -> None:
        """State updated from a call's output, after the loss is built (KLPEN's beta);
        every way of running the loss (eager, compiled, fused update) calls it once."""

    def compile_ready(self) -> bool:
        """Whether the eager calls so far showed that a compiled graph reproduces the loss
        (``ppokit.fast``; KLPEN: its KL has a traceable form)."""
        return True

    def read_inputs(self, tensordict: TensorDictBase) -> LossInputs:
        """Read and check everything the loss needs from the data (no network runs here)."""
        return read_inputs(
            tensordict,
            self.tensor_keys,
            loss_name=type(self).__name__,
            direct=self._choose_path(),
            needs_value_target=self._has_critic,
            clip_value=self.clip_value if self._has_critic else None,
            estimate_advantage=self._estimate_advantage,
        )

    def _explain_non_finite(
        self, inp: LossInputs, out: dict[str, torch.Tensor], extras: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Raise naming the input behind a non-finite output, or recompute with the
        Monte-Carlo entropy when only the closed-form entropy was not finite."""
        keys = self.tensor_keys
        if inp.fast:
            # the checks the direct path deferred (NaN/Inf loc or logits, scale <= 0), first,
            # as they would have run first: the distribution is built before any loss math
            with torch.no_grad(), self._run_actor():
                self.actor_plan().get_dist(TensorReader({}, inp.work), inp.batch)
        if self.check_inputs:
            check_finite(
                (inp.advantage, keys.advantage),
                (inp.old_log_prob, keys.sample_log_prob),
                (inp.value_target, keys.value_target),
                (inp.old_value, keys.value),
                mask=inp.mask,
            )
            if extras.get("value") is not None:
                check_finite((extras["value"], keys.value), mask=inp.mask)
        entropy = extras.get("entropy_all", out.get("entropy"))
        if (
            entropy is not None
            and extras.get("closed_form_entropy")
            and not bool(torch.isfinite(entropy))
        ):
            # No finite closed form (e.g. a distribution whose entropy() is inf): run again
            # with the Monte-Carlo estimate -E[log pi(a)], which keeps a useful gradient.
            out, _ = self.compute(inp, mc_entropy=True)
        return out
