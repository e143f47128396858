"""ppokit.objectives.kl: the traceable closed-form KLs equal torch's kl_divergence exactly.

torch's registered formulas are the independent reference: same inputs, bit-identical
outputs (the same operations in the same order), including the +inf / 0 conventions of
categoricals with impossible actions.
"""

from __future__ import annotations

import torch
from torch import distributions as D

from ppokit import Categorical, IndependentNormal, MaskedCategorical, TanhNormal
from ppokit.objectives.kl import closed_form_kl, pure_kl


def _pairs():
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    mask_p = torch.tensor([[True, True, False, True], [True, False, True, True]])
    mask_q = torch.tensor([[True, True, False, True], [True, True, True, False]])
    return [
        (D.Categorical(logits=r(2, 5)), D.Categorical(logits=r(2, 5))),
        (Categorical(logits=r(3, 4)), Categorical(logits=r(3, 4))),
        # impossible actions: 0 where p never acts, +inf where q cannot act but p can
        (
            MaskedCategorical(logits=r(2, 4), mask=mask_p),
            MaskedCategorical(logits=r(2, 4), mask=mask_q),
        ),
        (D.Normal(r(3, 2), r(3, 2).exp()), D.Normal(r(3, 2), r(3, 2).exp())),
        (
            D.Independent(D.Normal(r(3, 2, 4), r(3, 2, 4).exp()), 2),
            D.Independent(D.Normal(r(3, 2, 4), r(3, 2, 4).exp()), 2),
        ),
        (IndependentNormal(r(6, 3), r(6, 3).exp()), IndependentNormal(r(6, 3), r(6, 3).exp())),
    ]


def test_pure_kl_is_torchs_formula_bit_for_bit():
    for p, q in _pairs():
        ours, form = closed_form_kl(p, q)
        assert form == "pure"
        assert torch.equal(ours, D.kl_divergence(p, q)), type(p).__name__
    p, q = _pairs()[2]
    kl = pure_kl(p, q)
    assert torch.isinf(kl[1]) and torch.isfinite(kl[0])  # q cannot take an action p takes


def test_other_pairs_go_to_torch_or_to_sampling():
    g = torch.Generator().manual_seed(1)
    beta = D.Beta(torch.rand(4, generator=g) + 0.5, torch.rand(4, generator=g) + 0.5)
    other = D.Beta(torch.rand(4, generator=g) + 0.5, torch.rand(4, generator=g) + 0.5)
    kl, form = closed_form_kl(beta, other)
    assert form == "torch" and torch.equal(kl, D.kl_divergence(beta, other))
    # Independent wrappers of different event dims: no formula anywhere
    p = D.Independent(D.Normal(torch.zeros(2, 3), torch.ones(2, 3)), 1)
    q = D.Independent(D.Normal(torch.zeros(2, 3), torch.ones(2, 3)), 0)
    assert pure_kl(p, q) is None
    tanh = TanhNormal(torch.zeros(2, 3), torch.ones(2, 3))
    assert closed_form_kl(tanh, tanh) == (None, "sampled")
