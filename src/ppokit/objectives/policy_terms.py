"""What a PPO loss takes from its policy's distribution in one call.

:class:`PolicyTerms` is the part of :class:`ppokit.PPOLoss` that turns the distribution into
the inputs of :func:`ppokit.objectives.objective.ppo_objective`: the log-prob of the stored
action (:mod:`ppokit.objectives.scoring`, per head for a composite policy:
:mod:`ppokit.objectives.composite`) and the entropy term, the closed form or a Monte-Carlo
estimate (per head: :mod:`ppokit.objectives.entropy`), weighted by one coefficient or by a
per-head mapping.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import CompositeDistribution
from torch import distributions as D

from ppokit.objectives.composite import action_log_prob
from ppokit.objectives.entropy import (
    EntropyTerms,
    composite_entropy_td,
    entropy_loss,
    entropy_terms,
)
from ppokit.objectives.functional import masked_mean
from ppokit.objectives.scoring import policy_entropy, policy_log_prob

__all__ = ["PolicyTerms"]


class PolicyTerms:
    """Mixin of :class:`~ppokit.PPOLoss`: the log-prob and entropy terms of one call."""

    # provided by PPOLoss
    tensor_keys: Any
    entropy_bonus: bool
    samples_mc_entropy: int
    _entropy_coeff_map: Any
    _closed_form_entropy: bool | None

    def _log_prob(self, dist: D.Distribution, action: Any, batch: torch.Size) -> torch.Tensor:
        """``log pi(a|s)`` of the stored action ``[*B]`` (the one place the loss scores).

        A composite policy scores every head's stored action (``action`` is then a tensor
        for one head, or a TensorDict of the heads' actions) and sums them per sample.
        """
        if not isinstance(dist, CompositeDistribution):
            return policy_log_prob(dist, action, batch)
        key = self.tensor_keys.action
        actions = (
            action
            if isinstance(action, TensorDictBase)
            else TensorDict({key: action}, batch_size=action.shape[: len(batch)])
        )
        log_prob = action_log_prob(dist, actions, key, batch_shape=batch)
        if log_prob.shape != batch:
            raise ValueError(
                f"The composite policy's log-prob has shape {tuple(log_prob.shape)}, expected "
                f"the shape of the stored log-prob {tuple(batch)}."
            )
        return log_prob

    def _entropy(
        self, dist: D.Distribution, batch: torch.Size, *, mc: bool = False
    ) -> tuple[torch.Tensor, bool, EntropyTerms | None]:
        """Per-sample entropy ``[*B]``, whether it is the closed form, and (composite policy
        only) the per-head terms."""
        if not isinstance(dist, CompositeDistribution):
            entropy, closed = policy_entropy(dist, batch, samples_mc=self.samples_mc_entropy, mc=mc)
            return entropy, closed, None
        terms = entropy_terms(
            dist, batch_shape=batch, samples_mc_entropy=self.samples_mc_entropy, force_mc=mc
        )
        return terms.total, terms.closed_form, terms

    def _entropy_term(
        self,
        dist: D.Distribution,
        sample_shape: torch.Size,
        mask: torch.Tensor | None,
        extras: dict[str, Any],
        *,
        mc: bool,
        traced: bool,
    ) -> tuple[torch.Tensor | None, EntropyTerms | None]:
        """The per-sample entropy ``[*S]`` the objective scales by ``entropy_coeff`` (with a
        per-head mapping: the weighted sum, scaled by 1), and the per-head terms.

        Records in ``extras`` whether the entropy is the closed form and, with a mask, the
        sum over every sample (see :meth:`ppokit.PPOLoss.compute`).
        """
        if not self.entropy_bonus:
            return None, None
        entropy, extras["closed_form_entropy"], terms = self._entropy(dist, sample_shape, mc=mc)
        if not traced and not mc:  # what a compiled call will do (compile_loss)
            self._closed_form_entropy = extras["closed_form_entropy"]
        if mask is not None:
            extras["entropy_all"] = entropy.detach().sum()
        coeffs = self._entropy_coeff_map
        if coeffs is not None:
            if terms is None:
                raise TypeError(
                    "entropy_coeff is a per-head mapping but the policy's distribution is "
                    f"{type(dist).__name__}, not a CompositeDistribution; give a float."
                )
            # the objective scales by 1: the coefficients are inside the weighted sum
            extras["entropy_total"], entropy = entropy, -entropy_loss(terms, coeffs)
        return entropy, terms

    @staticmethod
    def _report_heads(
        out: dict[str, torch.Tensor],
        terms: EntropyTerms | None,
        extras: dict[str, Any],
        mask: torch.Tensor | None,
    ) -> None:
        """A composite policy's outputs: each head's entropy and, with per-head weights, the
        entropy itself (not the weighted sum the objective used)."""
        if terms is None or terms.per_head is None:
            return
        if "entropy_total" in extras:
            out["entropy"] = masked_mean(extras["entropy_total"].detach().unsqueeze(-1), mask)
        out["composite_entropy"] = composite_entropy_td(terms)
