"""Entropy of plain and composite (multi-head) policies, and per-head entropy coefficients.

Closed form per head where the distribution has a finite one, else a Monte-Carlo estimate from
reparameterised samples; a head's entropy ``[*B, *event]`` is summed over its dims after the
batch, then over heads (the convention of :mod:`ppokit.objectives.composite`, whose module
docstring states the one deliberate difference from TorchRL for per-head coefficients).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from tensordict import TensorDict
from tensordict.nn import CompositeDistribution
from tensordict.utils import NestedKey
from torch import distributions as D

from ppokit.objectives.composite import (
    batched_entry,
    entropy_key,
    head_keys,
    log_prob_key,
    norm_key,
    per_sample,
    sum_heads,
)

__all__ = [
    "EntropyTerms",
    "composite_entropy_td",
    "entropy_loss",
    "entropy_terms",
    "has_closed_form_entropy",
    "resolve_entropy_coeff",
    "sample_and_score",
]


def sample_and_score(
    dist: D.Distribution, n: int, *, reparameterize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` samples ``[n, *B, *event]`` and score them ``[n, *B]`` under ``dist``.

    Prefers the distribution's own ``(r)sample_and_log_prob`` (scoring the pre-squash draw
    keeps a tanh-Gaussian's log-prob finite at the bounds), as TorchRL: seeded runs agree.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x, lp = sample_and_score(D.Normal(torch.zeros(3), 1.0), 2, reparameterize=True)
        >>> x.shape, lp.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """
    shape = torch.Size([n])
    method = "rsample_and_log_prob" if reparameterize else "sample_and_log_prob"
    if callable(getattr(type(dist), method, None)):
        return getattr(dist, method)(shape)
    sample = dist.rsample(shape) if reparameterize else dist.sample(shape)
    return sample, dist.log_prob(sample)


def has_closed_form_entropy(dist: D.Distribution) -> bool:
    """Whether ``dist``'s class implements ``entropy()`` (``Independent``: its base's).

    Example:
        >>> has_closed_form_entropy(D.Independent(D.Normal(torch.zeros(2), 1.0), 1))
        True
        >>> has_closed_form_entropy(D.TransformedDistribution(D.Normal(0.0, 1.0), []))
        False
    """
    if isinstance(dist, CompositeDistribution):
        return False
    if isinstance(dist, D.Independent):
        return has_closed_form_entropy(dist.base_dist)
    return type(dist).entropy is not D.Distribution.entropy


@dataclasses.dataclass(frozen=True)
class EntropyTerms:
    """The policy entropy on a batch.

    Attributes:
        total: composite: ``[*B]`` (heads summed over event dims, then over heads); plain:
            ``dist.entropy()`` as is, ``[*B, *extra]``.
        per_head: composite only (else ``None``): head action key -> ``[*B, *event]``.
        closed_form: whether every head used its closed form (no Monte-Carlo draw).
    """

    total: torch.Tensor
    per_head: dict[NestedKey, torch.Tensor] | None
    closed_form: bool


def _one_entropy(
    dist: D.Distribution, samples_mc: int, *, force_mc: bool, check_finite: bool
) -> tuple[torch.Tensor, bool]:
    """Closed form if there is one (and it is finite), else ``-mean log pi(x)`` over draws."""
    closed = has_closed_form_entropy(dist) and not force_mc
    entropy = dist.entropy() if closed else None
    compiling = torch.compiler.is_compiling()
    # A closed form can overflow (near-degenerate scale): fall back to sampling, as TorchRL;
    # a compiled graph cannot branch on data, so it computes both and picks per element.
    need_mc = (
        entropy is None or compiling or (check_finite and not bool(torch.isfinite(entropy).all()))
    )
    if not need_mc:
        return entropy, True  # type: ignore[return-value]
    _, log_prob = sample_and_score(dist, samples_mc, reparameterize=dist.has_rsample)
    sampled = -log_prob.mean(0)
    if entropy is not None and compiling:
        return torch.where(torch.isfinite(entropy), entropy, sampled), True
    return sampled, False


def entropy_terms(
    dist: D.Distribution,
    *,
    batch_shape: torch.Size,
    samples_mc_entropy: int = 1,
    force_mc: bool = False,
    check_finite: bool = True,
) -> EntropyTerms:
    """Entropy of the policy, per head for a composite, as TorchRL 0.14.1's PPO losses.

    Each head: closed form where its class has one, else ``-mean log pi(x)`` over
    ``samples_mc_entropy`` draws (reparameterised where possible, keeping a gradient). If a
    head has neither, every head is estimated from plain draws (TorchRL's rule). Draws go
    head by head in the composite's order, as TorchRL's, so seeded runs agree.

    Args:
        dist: the current policy's distribution.
        batch_shape: ``[*B]``; every entropy must start with these dims.
        samples_mc_entropy: draws per Monte-Carlo estimate (>= 1).
        force_mc: estimate even where a closed form exists.
        check_finite: replace a non-finite closed form by the estimate (one host sync).

    Returns:
        :class:`EntropyTerms`.

    Example:
        >>> from tensordict import TensorDict
        >>> params = TensorDict({"move": {"loc": torch.zeros(2, 3), "scale": torch.ones(2, 3)},
        ...                      "grip": {"logits": torch.zeros(2, 4)}}, [2])
        >>> dist = CompositeDistribution(params, distribution_map={
        ...     "move": D.Normal, "grip": D.Categorical})
        >>> terms = entropy_terms(dist, batch_shape=torch.Size([2]))
        >>> # 3 * 0.5 * log(2 pi e) = 4.2568 for the Gaussian head, log 4 = 1.3863
        >>> terms.total
        tensor([5.6431, 5.6431])
        >>> terms.per_head["move"].shape
        torch.Size([2, 3])
    """
    if (
        isinstance(samples_mc_entropy, bool)
        or not isinstance(samples_mc_entropy, int)
        or (samples_mc_entropy < 1)
    ):
        raise ValueError(f"samples_mc_entropy must be an integer >= 1, got {samples_mc_entropy!r}.")
    if not isinstance(dist, CompositeDistribution):
        entropy, closed = _one_entropy(
            dist, samples_mc_entropy, force_mc=force_mc, check_finite=check_finite
        )
        return EntropyTerms(
            batched_entry(entropy, batch_shape, f"entropy of {type(dist).__name__}"), None, closed
        )
    heads = dict(zip(head_keys(dist), dist.dists.values()))
    per_head: dict[NestedKey, torch.Tensor] = {}
    own_rule = all(has_closed_form_entropy(h) or h.has_rsample for h in heads.values())
    closed_all = own_rule
    for key, head in heads.items():
        if own_rule:
            per_head[key], closed = _one_entropy(
                head, samples_mc_entropy, force_mc=force_mc, check_finite=check_finite
            )
            closed_all = closed_all and closed
        else:  # a head with neither rule: TorchRL estimates every head from plain draws
            _, log_prob = sample_and_score(
                head, samples_mc_entropy, reparameterize=bool(dist.has_rsample)
            )
            per_head[key] = -log_prob.mean(0)
    total = sum_heads(
        [per_sample(e, batch_shape, f"entropy of head {k!r}") for k, e in per_head.items()]
    )
    return EntropyTerms(total, per_head, closed_all)


def resolve_entropy_coeff(
    coeff: Mapping[NestedKey, float], heads: Sequence[NestedKey]
) -> dict[NestedKey, float]:
    """Map a per-head ``entropy_coeff`` onto the heads, checking it names each head once.

    A head is named by its action key, ``"<head>_entropy"`` (what TorchRL 0.14.1 reads) or
    ``"<head>_log_prob"`` (what TorchRL's docs show).

    Example:
        >>> resolve_entropy_coeff({"grip_entropy": 0.1, ("agents", "action"): 0.2},
        ...                       ["grip", ("agents", "action")])
        {'grip': 0.1, ('agents', 'action'): 0.2}
    """
    names = [norm_key(h) for h in heads]
    spellings: dict[NestedKey, NestedKey] = {}
    for head in names:
        for name in (head, entropy_key(head), log_prob_key(head)):
            spellings[name] = head
    resolved: dict[NestedKey, float] = {}
    for key, value in coeff.items():
        head = spellings.get(norm_key(key))
        if head is None:
            raise KeyError(
                f"entropy_coeff names {key!r}, which is not a head of the composite "
                f"distribution; its heads are {names} (write each as its action "
                f"key, '<head>_entropy' or '<head>_log_prob')."
            )
        if head in resolved:
            raise KeyError(f"entropy_coeff names the head {head!r} twice (as {key!r}).")
        resolved[head] = float(value)
    missing = [h for h in names if h not in resolved]
    if missing:
        raise KeyError(
            f"entropy_coeff has no coefficient for the head(s) {missing}; give one "
            f"for every head of {names} (0.0 to leave a head out)."
        )
    return resolved


def entropy_loss(
    terms: EntropyTerms, entropy_coeff: float | torch.Tensor | Mapping[NestedKey, float]
) -> torch.Tensor:
    """The entropy term of the loss, per sample: ``-coeff * entropy``.

    Args:
        terms: from :func:`entropy_terms`.
        entropy_coeff: a scalar, or for a composite a per-head mapping
            (:func:`resolve_entropy_coeff`).

    Returns:
        ``-coeff * terms.total``, or ``-sum_h coeff_h * H_h`` ``[*B]`` for a mapping (each
        head's entropy summed over its event dims).

    Example:
        >>> terms = EntropyTerms(total=torch.tensor([3.0]), closed_form=True,
        ...                      per_head={"a": torch.tensor([1.0]), "b": torch.tensor([2.0])})
        >>> entropy_loss(terms, {"a": 0.5, "b_entropy": 0.25})  # -(0.5*1 + 0.25*2)
        tensor([-1.])
    """
    if not isinstance(entropy_coeff, Mapping):
        return -entropy_coeff * terms.total
    if terms.per_head is None:
        raise TypeError(
            "entropy_coeff is a per-head mapping but the policy's distribution "
            "is not a CompositeDistribution (one head); give a float instead."
        )
    coeffs = resolve_entropy_coeff(entropy_coeff, list(terms.per_head))
    return sum_heads(
        [
            -coeffs[h] * per_sample(e, terms.total.shape, f"entropy of head {h!r}")
            for h, e in terms.per_head.items()
        ]
    )


def composite_entropy_td(terms: EntropyTerms) -> TensorDict:
    """Per-head entropies to log, laid out as TorchRL's ``"composite_entropy"`` entry.

    Keys ``"<head>_entropy"``; detached values ``[*B, 1, *event]``; batch size ``[*B, 1]``.

    Example:
        >>> terms = EntropyTerms(total=torch.ones(2), closed_form=True,
        ...                      per_head={("agents", "action"): torch.ones(2)})
        >>> composite_entropy_td(terms)["agents", "action_entropy"].shape
        torch.Size([2, 1])
    """
    if terms.per_head is None:
        raise TypeError("composite_entropy_td needs per-head entropies (a composite policy).")
    return TensorDict(
        {entropy_key(h): e.detach().unsqueeze(terms.total.ndim) for h, e in terms.per_head.items()},
        batch_size=(*terms.total.shape, 1),
    )
