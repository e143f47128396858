"""How a PPO loss scores its policy: log-probs of the stored actions and the entropy.

Each is one small function, so that other action spaces (tensordict's composite
distributions) can replace exactly this step.
"""

from __future__ import annotations

import contextlib

import torch
from torch import distributions as D

__all__ = ["mc_entropy", "policy_entropy", "policy_log_prob"]


def policy_log_prob(dist: D.Distribution, action: torch.Tensor, batch: torch.Size) -> torch.Tensor:
    """``log pi(a|s)`` of the stored action, one per sample ``[*B]``.

    Example:
        >>> dist = D.Categorical(logits=torch.zeros(2, 4))
        >>> policy_log_prob(dist, torch.tensor([0, 3]), torch.Size([2]))
        tensor([-1.3863, -1.3863])
    """
    log_prob = dist.log_prob(action)
    if not isinstance(log_prob, torch.Tensor) or log_prob.shape != batch:
        shape = getattr(log_prob, "shape", None)
        raise ValueError(
            f"The actor's distribution {type(dist).__name__} gives log-probs of shape "
            f"{tuple(shape) if shape is not None else shape} for actions of shape "
            f"{tuple(action.shape)}, expected the batch shape {tuple(batch)}. A "
            "multi-dimensional action needs a distribution that sums over the action dims "
            "(IndependentNormal, TanhNormal with event_dims=1), not a plain Normal."
        )
    return log_prob


def policy_entropy(
    dist: D.Distribution, batch: torch.Size, *, samples_mc: int = 1, mc: bool = False
) -> tuple[torch.Tensor, bool]:
    """Per-sample entropy ``[*B]`` and whether it is the closed form.

    The closed form when the distribution has one (and ``mc`` is False); otherwise the
    Monte-Carlo estimate of :func:`mc_entropy` with ``samples_mc`` draws.

    Example:
        >>> entropy, closed = policy_entropy(D.Categorical(logits=torch.zeros(1, 4)),
        ...                                  torch.Size([1]))
        >>> entropy, closed  # log 4
        (tensor([1.3863]), True)
    """
    entropy = None
    if not mc:
        with contextlib.suppress(NotImplementedError):
            entropy = dist.entropy()
    closed_form = entropy is not None
    if entropy is None:
        # No closed form, e.g. a tanh-squashed Gaussian: Monte-Carlo estimate
        # -E[log pi(a)] from reparameterised samples, so the bonus still has a gradient.
        # (A closed form that is not finite is caught after the fact by the output
        # check, which then reruns with mc=True.)
        entropy = mc_entropy(dist, samples_mc)
    if entropy.shape != batch:
        raise ValueError(
            f"The actor's distribution {type(dist).__name__} gives an entropy of shape "
            f"{tuple(entropy.shape)}, expected the batch shape {tuple(batch)}."
        )
    return entropy, closed_form


def mc_entropy(dist: D.Distribution, samples: int) -> torch.Tensor:
    """``-mean log pi(a)`` over ``samples`` draws (reparameterised when possible).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> mc_entropy(D.Normal(torch.zeros(1), torch.ones(1)), 4000).round(decimals=1)
        tensor([1.4000])
    """
    shape = torch.Size([samples])
    if dist.has_rsample:
        if hasattr(dist, "rsample_and_log_prob"):
            _, log_prob = dist.rsample_and_log_prob(shape)
        else:
            log_prob = dist.log_prob(dist.rsample(shape))
    elif hasattr(dist, "sample_and_log_prob"):
        _, log_prob = dist.sample_and_log_prob(shape)
    else:
        log_prob = dist.log_prob(dist.sample(shape))
    return -log_prob.mean(0)
