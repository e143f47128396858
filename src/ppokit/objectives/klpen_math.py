"""The adaptive KL-penalty PPO objective (Schulman et al. 2017, sec. 4), as pure pieces.

TorchRL 0.14.1's ``KLPENPPOLoss`` maximises ``ratio * A - beta * KL(pi_old || pi)`` and then
adapts ``beta``: ``beta *= increment`` when the batch's mean KL exceeds ``1.5 * dtarg``,
``beta *= decrement`` when it is below ``dtarg / 1.5``. The KL is analytic where torch has a
closed form for the pair, else a Monte-Carlo estimate from ``samples_mc_kl`` draws of
``pi_old``. This module holds those pieces on tensors; a loss class wires them as::

    kl = kl_term(previous_dist, current_dist, samples_mc_kl=n, batch_shape=batch)  # [*B]
    loss_objective = klpen_objective(log_weight, advantage, kl, self.beta)        # [*B, 1]
    self.beta.copy_(next_beta(self.beta, kl.detach().mean(), dtarg=..., ...))     # next call

Deliberate difference from TorchRL: TorchRL rescales ``beta`` in place (``beta.data *= ...``)
after building the loss, so autograd's saved ``beta`` changes and ``backward()`` yields the
gradient of a loss computed with the *new* beta while the returned value used the old one.
:func:`klpen_objective` multiplies by a private copy of ``beta``, so the gradient is the
gradient of the returned loss, and the caller updates ``beta`` afterwards for the next call.
The returned loss values agree with TorchRL's; the gradients of the KL term differ by the
factor ``beta_new / beta_old`` when beta changed.

Random draws: TorchRL computes the KL before the entropy bonus, so a seeded run agrees when
the caller calls :func:`kl_term` before :func:`ppokit.objectives.entropy.entropy_terms`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import CompositeDistribution, ProbabilisticTensorDictModule
from torch import distributions as D

from ppokit.objectives.entropy import sample_and_score
from ppokit.objectives.kl import KLForm, closed_form_kl

__all__ = [
    "kl_penalty",
    "kl_term",
    "kl_with_form",
    "klpen_objective",
    "next_beta",
    "previous_distribution",
    "validate_klpen_options",
]


def _number(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, torch.Tensor))
        or (isinstance(value, torch.Tensor) and value.numel() != 1)
    ):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}.")
    return number


def _check_samples(samples_mc_kl: Any) -> None:
    if isinstance(samples_mc_kl, bool) or not isinstance(samples_mc_kl, int) or samples_mc_kl < 1:
        raise ValueError(f"samples_mc_kl must be an integer >= 1, got {samples_mc_kl!r}.")


def validate_klpen_options(
    *,
    dtarg: float,
    beta: float | torch.Tensor,
    increment: float,
    decrement: float,
    samples_mc_kl: int,
) -> None:
    """Check the KL-penalty options; raise a message saying what to pass instead.

    Ranges: ``dtarg > 0`` (the target KL), ``beta >= 0`` (the initial penalty),
    ``increment >= 1`` and ``0 < decrement <= 1`` (TorchRL's bounds; 1 keeps beta fixed in
    that direction), ``samples_mc_kl`` an integer ``>= 1``.

    Example:
        >>> validate_klpen_options(dtarg=0.01, beta=1.0, increment=2, decrement=0.5,
        ...                        samples_mc_kl=1)
        >>> validate_klpen_options(dtarg=0.01, beta=1.0, increment=0.5, decrement=0.5,
        ...                        samples_mc_kl=1)
        Traceback (most recent call last):
        ...
        ValueError: increment must be >= 1 (beta grows by this factor ...), got 0.5.
    """
    if _number("dtarg", dtarg) <= 0:
        raise ValueError(f"dtarg must be > 0 (the target KL per update), got {dtarg}.")
    if _number("beta", beta) < 0:
        raise ValueError(f"beta must be >= 0 (the initial KL penalty weight), got {float(beta)}.")
    if _number("increment", increment) < 1:
        raise ValueError(
            f"increment must be >= 1 (beta grows by this factor when the KL is "
            f"above 1.5 * dtarg), got {increment}."
        )
    if not 0 < _number("decrement", decrement) <= 1:
        raise ValueError(
            f"decrement must be in (0, 1] (beta shrinks by this factor when the "
            f"KL is below dtarg / 1.5), got {decrement}."
        )
    _check_samples(samples_mc_kl)


def previous_distribution(actor: Any, tensordict: TensorDictBase) -> D.Distribution:
    """``pi_old``: the actor's distribution rebuilt from the parameters stored at collection.

    Uses the public ``build_dist_from_params`` of a tensordict probabilistic actor; the
    stored parameters are the in_keys of its distribution module (``loc``/``scale``,
    ``logits``, ...). Build it before running the actor on the same tensordict: the actor
    writes its new parameters over the stored ones.

    Example:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import ProbabilisticTensorDictModule as Prob
        >>> from tensordict.nn import ProbabilisticTensorDictSequential as Seq
        >>> actor = Seq(Prob(["logits"], ["action"], distribution_class=D.Categorical))
        >>> data = TensorDict({"logits": torch.zeros(2, 3)}, [2])
        >>> previous_distribution(actor, data).probs[0]
        tensor([0.3333, 0.3333, 0.3333])
    """
    build = getattr(actor, "build_dist_from_params", None)
    if build is None:
        raise TypeError(
            f"The KL penalty needs an actor that can rebuild pi_old from stored "
            f"parameters (a ProbabilisticTensorDictSequential); got "
            f"{type(actor).__name__}."
        )
    needed = [
        k
        for m in actor.modules()
        if isinstance(m, ProbabilisticTensorDictModule)
        for k in m.in_keys
    ]
    missing = [k for k in needed if tensordict.get(k, None) is None]
    if missing:
        present = sorted(map(repr, tensordict.keys(include_nested=True, leaves_only=True)))
        raise KeyError(
            f"The distribution parameters {missing} pi_old is rebuilt from are "
            f"missing from the data; it holds {', '.join(present)}. Store the "
            f"actor's distribution parameters at collection time."
        )
    return build(tensordict)


def kl_term(
    previous: D.Distribution,
    current: D.Distribution,
    *,
    samples_mc_kl: int = 1,
    batch_shape: torch.Size,
) -> torch.Tensor:
    """``KL(pi_old || pi_theta)`` per sample, closed form or Monte-Carlo, as TorchRL 0.14.1.

    The Monte-Carlo estimate is ``mean_i [log pi_old(x_i) - log pi_theta(x_i)]`` over
    ``samples_mc_kl`` draws ``x_i ~ pi_old`` (plain draws, as TorchRL's); a composite's heads
    are drawn in the composite's order and each head's log-probs are summed over its event
    dims, then over heads. The closed form is :func:`ppokit.objectives.kl.closed_form_kl`
    (ppokit's traceable formulas for categorical and Gaussian pairs, else torch's
    ``kl_divergence``).

    Args:
        previous: ``pi_old`` (:func:`previous_distribution`), no gradient needed.
        current: ``pi_theta`` on the same batch.
        samples_mc_kl: draws for the Monte-Carlo estimate.
        batch_shape: ``[*B]``; the KL must start with these dims.

    Returns:
        ``[*B]`` (a plain distribution's KL keeps any trailing per-token dims).

    Example:
        >>> p = D.Categorical(probs=torch.tensor([[0.5, 0.5]]))
        >>> q = D.Categorical(probs=torch.tensor([[0.25, 0.75]]))
        >>> # 0.5 log(0.5/0.25) + 0.5 log(0.5/0.75) = 0.5 (0.6931 - 0.4055) = 0.1438
        >>> kl_term(p, q, batch_shape=torch.Size([1]))
        tensor([0.1438])
    """
    return kl_with_form(previous, current, samples_mc_kl=samples_mc_kl, batch_shape=batch_shape)[0]


def kl_with_form(
    previous: D.Distribution,
    current: D.Distribution,
    *,
    samples_mc_kl: int = 1,
    batch_shape: torch.Size,
) -> tuple[torch.Tensor, KLForm]:
    """:func:`kl_term` and how the KL was found: ``"pure"`` (ppokit's closed form, which a
    compiled graph can run), ``"torch"`` (torch's ``kl_divergence``: eager only) or
    ``"sampled"``.

    Example:
        >>> p = D.Normal(torch.zeros(2), torch.ones(2))
        >>> kl_with_form(p, p, batch_shape=torch.Size([2]))
        (tensor([0., 0.]), 'pure')
    """
    kl, form = closed_form_kl(previous, current)
    if kl is None:
        kl = _sampled_kl(previous, current, samples_mc_kl, batch_shape)
    if kl.shape[: len(batch_shape)] != batch_shape:
        raise ValueError(
            f"The KL of {type(previous).__name__} pairs has shape "
            f"{tuple(kl.shape)}, expected the batch shape {tuple(batch_shape)}."
        )
    return kl, form


def _sampled_kl(
    previous: D.Distribution, current: D.Distribution, n: int, batch_shape: torch.Size
) -> torch.Tensor:
    _check_samples(n)
    if not isinstance(previous, CompositeDistribution):
        x, log_p = sample_and_score(previous, n, reparameterize=False)
        return (log_p - current.log_prob(x)).mean(0)
    if not isinstance(current, CompositeDistribution) or set(previous.dists) != set(current.dists):
        raise ValueError(
            "pi_old and pi_theta must be composite distributions with the same "
            "heads for the KL penalty."
        )
    keep = 1 + len(batch_shape)  # the draw dim and the batch dims; the rest are event dims
    diff: torch.Tensor | None = None
    draws = [
        (key, *sample_and_score(head, n, reparameterize=False))
        for key, head in previous.dists.items()
    ]  # all draws first, as TorchRL
    for key, x, log_p in draws:
        term = log_p - current.dists[key].log_prob(x)
        if term.shape[1:keep] != batch_shape:
            raise ValueError(
                f"The log-prob of head {key!r} has shape {tuple(term.shape)}, "
                f"expected [samples_mc_kl, *{tuple(batch_shape)}, ...]."
            )
        term = term.flatten(keep).sum(-1) if term.ndim > keep else term
        diff = term if diff is None else diff + term
    return diff.mean(0)  # type: ignore[union-attr]


def klpen_objective(
    log_weight: torch.Tensor, advantage: torch.Tensor, kl: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """Per-sample KL-penalised loss ``-(exp(log_weight) * A - beta * KL)``.

    ``beta`` is copied (detached) here, so updating the caller's beta buffer in place after
    this call cannot change the gradient of the value returned (TorchRL's bug, see the
    module docstring).

    Args:
        log_weight: ``log pi_theta(a) - log pi_old(a)``, ``[*B, 1]``.
        advantage: ``[*B, 1]``.
        kl: from :func:`kl_term`, ``[*B]``.
        beta: the current penalty weight (0-d).

    Returns:
        ``[*B, 1]``, to be reduced by the caller (mean, or a masked mean).

    Example:
        >>> lw = torch.log(torch.tensor([[1.5]]))
        >>> klpen_objective(lw, torch.tensor([[2.0]]), torch.tensor([0.1]), torch.tensor(0.5))
        tensor([[-2.9500]])
    """
    if log_weight.shape != advantage.shape:
        raise ValueError(
            f"log_weight {tuple(log_weight.shape)} and advantage "
            f"{tuple(advantage.shape)} must have the same shape [*B, 1]."
        )
    kl = kl.unsqueeze(-1)
    if kl.shape != log_weight.shape:
        raise ValueError(
            f"The KL has shape {tuple(kl.shape[:-1])}, expected "
            f"{tuple(log_weight.shape[:-1])} (one value per sample)."
        )
    return -log_weight.exp() * advantage + kl_penalty(kl.squeeze(-1), beta)


def kl_penalty(kl: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """The penalty ``beta * KL`` per sample ``[*B, 1]`` from the KL ``[*B]``.

    ``beta`` is copied (detached), so rescaling the caller's beta buffer in place after this
    call leaves the gradient that of the value returned (see the module docstring).

    Example:
        >>> kl_penalty(torch.tensor([0.5]), torch.tensor(2.0))
        tensor([[1.]])
    """
    beta_used = torch.as_tensor(beta, dtype=kl.dtype, device=kl.device).detach().clone()
    return beta_used * kl.unsqueeze(-1)


def next_beta(
    beta: torch.Tensor, kl_mean: torch.Tensor, *, dtarg: float, increment: float, decrement: float
) -> torch.Tensor:
    """The penalty weight for the next call (no host sync): TorchRL's adaptive rule.

    ``beta * increment`` if ``kl_mean > 1.5 * dtarg``, ``beta * decrement`` if
    ``kl_mean < dtarg / 1.5``, else ``beta``. Call it after the loss is built, on the
    detached mean KL of the batch.

    Example:
        >>> beta = torch.tensor(1.0)
        >>> next_beta(beta, torch.tensor(0.1), dtarg=0.01, increment=2.0, decrement=0.5)
        tensor(2.)
        >>> next_beta(beta, torch.tensor(0.001), dtarg=0.01, increment=2.0, decrement=0.5)
        tensor(0.5000)
        >>> next_beta(beta, torch.tensor(0.01), dtarg=0.01, increment=2.0, decrement=0.5)
        tensor(1.)
    """
    kl_mean = kl_mean.detach()
    beta = beta.detach()
    return torch.where(
        kl_mean > dtarg * 1.5,
        beta * increment,
        torch.where(kl_mean < dtarg / 1.5, beta * decrement, beta),
    )
