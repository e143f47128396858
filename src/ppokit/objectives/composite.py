"""Scoring stored actions and entropies, for plain and composite (multi-head) policies.

A composite policy (tensordict's :class:`~tensordict.nn.CompositeDistribution`) has one
head per action entry, e.g. ``("agents", "action")``. As in TorchRL 0.14.1's PPO losses, a
head's log-prob or entropy ``[*B, *event]`` is summed over its dims after the batch ``[*B]``,
then over heads; behaviour log-probs are stored as ``"<head>_log_prob"`` (or summed under one
key). A plain distribution's log-prob and entropy keep any trailing (per-token) dims.

Deliberate difference from TorchRL: with a per-head ``entropy_coeff`` TorchRL adds the heads'
weighted entropies without summing their event dims, so a ``[*B, 2]`` head broadcasts against
a ``[*B]`` one and the mean averages the 2 dims instead of summing them. ppokit sums each
head's event dims first, as the scalar-coefficient path of both libraries does; both agree
whenever each head's entropy is one value per sample.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import CompositeDistribution
from tensordict.utils import NestedKey, unravel_key
from torch import distributions as D

__all__ = [
    "EntropyTerms",
    "action_log_prob",
    "composite_entropy_td",
    "entropy_key",
    "entropy_loss",
    "entropy_terms",
    "has_closed_form_entropy",
    "log_prob_key",
    "policy_keys",
    "resolve_entropy_coeff",
    "sample_and_score",
    "stored_log_prob",
]

Keys: TypeAlias = NestedKey | Sequence[NestedKey]  # one key, or one per head


_norm = unravel_key  # one spelling per key: ("a",) -> "a", ("a", ("b",)) -> ("a", "b")


def _suffix(key: NestedKey, suffix: str) -> NestedKey:
    key = _norm(key)
    return key + suffix if isinstance(key, str) else (*key[:-1], key[-1] + suffix)


def log_prob_key(head: NestedKey) -> NestedKey:
    """Where tensordict stores a head's log-prob: ``("a", "x")`` -> ``("a", "x_log_prob")``."""
    return _suffix(head, "_log_prob")


def entropy_key(head: NestedKey) -> NestedKey:
    """Where a head's entropy is logged (TorchRL's names): ``entropy_key("x") == "x_entropy"``."""
    return _suffix(head, "_entropy")


def _head_keys(dist: CompositeDistribution) -> list[NestedKey]:  # in the composite's order
    return [_norm(k) for k in dist.dists]


def policy_keys(actor: Any) -> tuple[Keys, Keys] | None:
    """The (action key(s), log-prob key(s)) an actor writes, as TorchRL's losses adopt them.

    From the public ``dist_sample_keys`` / ``log_prob_keys`` of a tensordict probabilistic
    module: single keys for one head, lists for several (TorchRL's ``set_keys`` convention);
    ``None`` when the actor does not expose them.

    Example:
        >>> from tensordict.nn import ProbabilisticTensorDictModule as Prob
        >>> policy_keys(Prob(["logits"], ["action"], distribution_class=D.Categorical))
        ('action', 'action_log_prob')
    """
    try:
        actions = list(actor.dist_sample_keys)
        log_probs = list(actor.log_prob_keys)
    except (AttributeError, TypeError):
        return None
    if not actions or len(actions) != len(log_probs):
        return None
    if len(actions) == 1:
        return _norm(actions[0]), _norm(log_probs[0])
    return [_norm(k) for k in actions], [_norm(k) for k in log_probs]


def _get(tensordict: TensorDictBase, key: NestedKey, what: str) -> torch.Tensor:
    value = tensordict.get(key, None)
    if value is None:
        present = sorted(map(repr, tensordict.keys(include_nested=True, leaves_only=True)))
        raise KeyError(
            f"The {what} {key!r} is missing from the data; it holds "
            f"{', '.join(present)}. Store it or point the loss at it with set_keys()."
        )
    if value.requires_grad:
        raise RuntimeError(
            f"The stored {what} {key!r} requires grad; rollout data must be "
            f"detached (collect under torch.no_grad())."
        )
    return value


def _batched(value: torch.Tensor, batch_shape: torch.Size, what: str) -> torch.Tensor:
    """``value`` itself, after checking it is ``[*B, *extra]`` (never a silent broadcast)."""
    if value.shape[: len(batch_shape)] != batch_shape:
        raise ValueError(
            f"The {what} has shape {tuple(value.shape)}, expected the batch shape "
            f"{tuple(batch_shape)} optionally followed by event or per-token dims."
        )
    return value


def _per_sample(value: torch.Tensor, batch_shape: torch.Size, what: str) -> torch.Tensor:
    """Sum ``[*B, *extra]`` over ``extra``: one value per sample ``[*B]``."""
    value, n = _batched(value, batch_shape, what), len(batch_shape)
    return value.flatten(n).sum(-1) if value.ndim > n else value


def _sum(parts: list[torch.Tensor]) -> torch.Tensor:  # per-head terms, in head order
    return functools.reduce(operator.add, parts)


def _as_key_list(keys: Keys) -> list[NestedKey]:
    return [_norm(keys)] if isinstance(keys, (str, tuple)) else [_norm(k) for k in keys]


def action_log_prob(
    dist: D.Distribution, tensordict: TensorDictBase, action_key: Keys, *, batch_shape: torch.Size
) -> torch.Tensor:
    """Log-prob of the stored action(s) under ``dist`` (the current policy).

    Args:
        dist: the policy's distribution on this batch, plain or composite.
        tensordict: the data, holding the stored action(s).
        action_key: the action key, or the heads' action keys (composite).
        batch_shape: ``[*B]``, the batch the loss works on (the advantage's leading dims).

    Returns:
        Plain: ``dist.log_prob(action)`` ``[*B, *extra]`` (``extra`` kept: per-token).
        Composite: ``[*B]``, the heads' log-probs summed over their dims after ``[*B]``.

    Example:
        >>> from tensordict import TensorDict
        >>> params = TensorDict({"move": {"loc": torch.zeros(2, 3), "scale": torch.ones(2, 3)},
        ...                      "grip": {"logits": torch.zeros(2, 4)}}, [2])
        >>> dist = CompositeDistribution(params, distribution_map={
        ...     "move": D.Normal, "grip": D.Categorical})
        >>> data = TensorDict({"move": torch.zeros(2, 3), "grip": torch.zeros(2)}, [2])
        >>> lp = action_log_prob(dist, data, ["move", "grip"], batch_shape=torch.Size([2]))
        >>> # 3 standard-normal dims at 0 (-0.9189 each) + uniform over 4 (-1.3863)
        >>> lp
        tensor([-4.1431, -4.1431])
    """
    if not isinstance(dist, CompositeDistribution):
        if not isinstance(action_key, (str, tuple)):
            keys = list(action_key)
            if len(keys) != 1:
                raise ValueError(
                    f"Got the action keys {keys} but {type(dist).__name__} is not a "
                    f"CompositeDistribution; pass one key."
                )
            action_key = keys[0]
        return _batched(
            dist.log_prob(_get(tensordict, action_key, "action")),
            batch_shape,
            f"{type(dist).__name__}.log_prob of the action {action_key!r}",
        )
    heads = _head_keys(dist)
    asked = _as_key_list(action_key)
    if set(asked) != set(heads):
        raise KeyError(
            f"The composite distribution has heads {heads} but the loss's action "
            f"keys are {asked}; set them with loss.set_keys(action={heads})."
        )
    return _sum(
        [
            _per_sample(
                sub.log_prob(_get(tensordict, head, "action of head")),
                batch_shape,
                f"log-prob of head {head!r}",
            )
            for head, sub in zip(heads, dist.dists.values())
        ]
    )


def stored_log_prob(
    tensordict: TensorDictBase, log_prob_key: Keys, *, batch_shape: torch.Size
) -> torch.Tensor:
    """The behaviour log-prob stored in the data, to compare with :func:`action_log_prob`.

    Args:
        tensordict: the data.
        log_prob_key: one key (plain policy, or a composite's log-prob stored summed) or the
            heads' keys (``[log_prob_key(h) for h in heads]``).
        batch_shape: ``[*B]``.

    Returns:
        One key: the stored ``[*B, *extra]`` as is. Several: ``[*B]``, summed as above.

    Example:
        >>> from tensordict import TensorDict
        >>> data = TensorDict({"move_log_prob": torch.tensor([[-1.0, -2.0]]),
        ...                    "grip_log_prob": torch.tensor([-0.5])}, [1])
        >>> stored_log_prob(data, ["move_log_prob", "grip_log_prob"],
        ...                 batch_shape=torch.Size([1]))
        tensor([-3.5000])
    """
    values = [(k, _get(tensordict, k, "behaviour log-prob")) for k in _as_key_list(log_prob_key)]
    if len(values) == 1:
        return _batched(values[0][1], batch_shape, f"log-prob at {values[0][0]!r}")
    return _sum([_per_sample(v, batch_shape, f"log-prob at {k!r}") for k, v in values])


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
            _batched(entropy, batch_shape, f"entropy of {type(dist).__name__}"), None, closed
        )
    heads = dict(zip(_head_keys(dist), dist.dists.values()))
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
    total = _sum(
        [_per_sample(e, batch_shape, f"entropy of head {k!r}") for k, e in per_head.items()]
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
    names = [_norm(h) for h in heads]
    spellings: dict[NestedKey, NestedKey] = {}
    for head in names:
        for name in (head, entropy_key(head), log_prob_key(head)):
            spellings[name] = head
    resolved: dict[NestedKey, float] = {}
    for key, value in coeff.items():
        head = spellings.get(_norm(key))
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
    return _sum(
        [
            -coeffs[h] * _per_sample(e, terms.total.shape, f"entropy of head {h!r}")
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
