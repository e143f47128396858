"""Closed-form ``KL(p || q)`` of the common policy distributions, as pure tensor formulas.

torch's ``kl_divergence`` finds its formula through a cached table keyed by the two types,
which ``torch.compile(fullgraph=True)`` cannot trace (torch 2.13). The formulas below are the
ones torch registers for these pairs (same operations, same order, so the same floats),
written on the distributions' parameters; they are chosen by the Python types, which a trace
sees as constants. The KL-penalty loss calls :func:`closed_form_kl` in every path (eager,
compiled, fused update); a pair not listed here goes to torch's ``kl_divergence``, which
only the eager path can run.

Pairs: two categoricals (torch's ``Categorical`` and its subclasses such as ppokit's
``Categorical`` / ``MaskedCategorical``), two ``Normal``, and two ``Independent`` wrappers
(ppokit's ``IndependentNormal`` included) with the same number of event dims around a
listed pair.
"""

from __future__ import annotations

import math

import torch
from torch import distributions as D

__all__ = ["KLForm", "closed_form_kl", "pure_kl"]

#: how a KL was computed: ppokit's formula (traceable), torch's table (eager only), sampled
KLForm = str


def _categorical_kl(p: D.Categorical, q: D.Categorical) -> torch.Tensor:
    # sum_k p_k (log p_k - log q_k); an action q cannot take costs +inf, one p never takes
    # costs 0 (torch's convention, in torch's order: where() instead of masked writes)
    t = p.probs * (p.logits - q.logits)
    t = torch.where((q.probs == 0).expand_as(t), torch.full_like(t, math.inf), t)
    t = torch.where((p.probs == 0).expand_as(t), torch.zeros_like(t), t)
    return t.sum(-1)


def _normal_kl(p: D.Normal, q: D.Normal) -> torch.Tensor:
    # log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2, in torch's arrangement
    var_ratio = (p.scale / q.scale).pow(2)
    t1 = ((p.loc - q.loc) / q.scale).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


def pure_kl(p: D.Distribution, q: D.Distribution) -> torch.Tensor | None:
    """``KL(p || q)`` by ppokit's formulas, or None when the pair is not one of them.

    Example:
        >>> p = D.Normal(torch.tensor([0.0]), torch.tensor([1.0]))
        >>> q = D.Normal(torch.tensor([1.0]), torch.tensor([2.0]))
        >>> # log 2 + (1 + 1) / 8 - 1/2 = 0.6931 - 0.25
        >>> pure_kl(p, q), D.kl_divergence(p, q)
        (tensor([0.4431]), tensor([0.4431]))
    """
    if isinstance(p, D.Independent) and isinstance(q, D.Independent):
        n = p.reinterpreted_batch_ndims
        if n != q.reinterpreted_batch_ndims:
            return None
        base = pure_kl(p.base_dist, q.base_dist)
        if base is None or n == 0:
            return base
        return base.reshape((*base.shape[:-n], -1)).sum(-1)
    if isinstance(p, D.Categorical) and isinstance(q, D.Categorical):
        return _categorical_kl(p, q)
    if type(p) is D.Normal and type(q) is D.Normal:
        return _normal_kl(p, q)
    return None


def closed_form_kl(p: D.Distribution, q: D.Distribution) -> tuple[torch.Tensor | None, KLForm]:
    """``KL(p || q)`` in closed form and how it was found.

    Returns:
        ``(kl, "pure")`` for the pairs of :func:`pure_kl`; ``(kl, "torch")`` for another
        pair torch's ``kl_divergence`` knows (not traceable); ``(None, "sampled")`` when
        there is no closed form (the caller estimates the KL by sampling).

    Example:
        >>> p = D.Categorical(probs=torch.tensor([0.5, 0.5]))
        >>> closed_form_kl(p, D.Categorical(probs=torch.tensor([0.25, 0.75])))
        (tensor(0.1438), 'pure')
    """
    kl = pure_kl(p, q)
    if kl is not None:
        return kl, "pure"
    try:
        return D.kl_divergence(p, q), "torch"
    except NotImplementedError:  # also raised by Independent/Transformed pairs it cannot do
        return None, "sampled"
