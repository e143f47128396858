"""The PPO objective as one pure function on tensors: :func:`ppo_objective`.

Every way of evaluating a ppokit PPO loss ends here: the eager ``loss(td)``, the compiled
graph of :func:`ppokit.compile_loss` and the fused update of :class:`ppokit.FusedPPOUpdate`.
The loss classes only read the data and run the networks; plain, clipped and KL-penalised
PPO differ only in the surrogate term (:func:`surrogate_term`).

Shapes: a batch ``[*B]``; per-sample scalars carry a trailing dim of 1 (``[*B, 1]``).
"""

from __future__ import annotations

import math

import torch

from ppokit.internals.tensordicts import scalar_tensordict
from ppokit.objectives import diagnostics as PD
from ppokit.objectives import functional as PF
from ppokit.objectives.degenerate import check_not_empty, nan_without_samples

__all__ = [
    "PROBED_KEYS",
    "capped_surrogate_term",
    "critic_term",
    "objective_keys",
    "outputs_finite",
    "ppo_objective",
    "probe",
    "surrogate_term",
    "to_output",
]

to_output = scalar_tensordict  # the loss's output: a TensorDict with no batch dims

# Output entries that are non-finite whenever an input is (see outputs_finite)
PROBED_KEYS = ("loss_objective", "kl_approx", "loss_critic", "entropy", "entropy_all")


def surrogate_term(
    log_weight: torch.Tensor,
    advantage: torch.Tensor,
    clip_epsilon: PF.ClipRange | None,
) -> torch.Tensor:
    """Per-sample policy loss ``[*B, 1]``: clipped (``clip_epsilon``) or plain (None).

    Plain PPO is ``-r * A`` with ``r = exp(log_weight)``; the clipped form is
    :func:`ppokit.objectives.functional.clipped_surrogate`.

    Example:
        >>> surrogate_term(torch.tensor([[0.0]]), torch.tensor([[2.0]]), None)
        tensor([[-2.]])
    """
    if clip_epsilon is None:
        return -log_weight.exp() * advantage
    return PF.clipped_surrogate(log_weight, advantage, clip_epsilon)


def capped_surrogate_term(
    log_weight: torch.Tensor,
    advantage: torch.Tensor,
    clip_epsilon: PF.ClipRange | None,
    max_importance_ratio: float | torch.Tensor | None,
    mask: torch.Tensor | None,
    log_is_weight: torch.Tensor | None = None,
    *,
    batch_ndim: int | None = None,
) -> tuple[torch.Tensor, dict]:
    """:func:`surrogate_term` with a gradient-free correction of the ratio weighting the
    advantage, and its diagnostics.

    ``log_weight`` is the ratio the trust region acts on; the advantage is weighted by
    ``exp(log_weight + c)``. ``log_is_weight`` (PPO-EWMA's ``log pi_prox - log pi_behav``,
    ``[*B, 1]``, default 0) turns the proximal ratio into the behaviour ratio;
    ``max_importance_ratio`` (TorchRL's keyword, after the PPO-EWMA reference code) caps
    that weight with ``c = min(log_is_weight, log(max_ratio) - log_weight)``, lifting the
    behaviour log-prob where it is exceeded: the weight is capped yet keeps a rescaled
    gradient (a clamp of the ratio would zero it). Clipping acts on ``log_weight``
    (``clip_fraction``, ``kl_approx``); ``ESS``, ``max_ratio`` and ``mean_ratio`` describe the
    corrected weight.

    Example:
        >>> # r = e^1 > 2: the weight is capped at 2 (A = 1), unclipped loss -2
        >>> loss, diag = capped_surrogate_term(torch.tensor([[1.0]]), torch.tensor([[1.0]]),
        ...                                    None, 2.0, None)
        >>> loss, diag["max_ratio"]
        (tensor([[-2.]]), tensor(2.))
    """
    correction = torch.zeros_like(log_weight) if log_is_weight is None else log_is_weight.detach()
    if max_importance_ratio is not None:
        cap = torch.as_tensor(
            max_importance_ratio, dtype=log_weight.dtype, device=log_weight.device
        ).log()
        correction = torch.minimum(correction, cap - log_weight.detach())
    capped = log_weight + correction
    if clip_epsilon is None:
        loss = -capped.exp() * advantage
    else:
        low, high = (
            clip_epsilon if isinstance(clip_epsilon, tuple) else (clip_epsilon, clip_epsilon)
        )
        bounds = [
            torch.as_tensor(b, dtype=log_weight.dtype, device=log_weight.device)
            for b in (-low, high)
        ]
        clipped = log_weight.clamp(bounds[0].log1p(), bounds[1].log1p()) + correction
        loss = -torch.minimum(capped.exp() * advantage, clipped.exp() * advantage)
    diagnostics = PD.ratio_diagnostics(log_weight, clip_epsilon, mask, batch_ndim=batch_ndim)
    weighted = PD.ratio_diagnostics(capped, None, mask, batch_ndim=batch_ndim)
    for key in ("ESS", "max_ratio", "mean_ratio"):
        diagnostics[key] = weighted[key]
    return loss, diagnostics


def critic_term(
    value: torch.Tensor,
    value_target: torch.Tensor,
    old_value: torch.Tensor | None,
    clip_value: float | torch.Tensor | None,
    loss_critic_type: str,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-sample critic loss ``[*B, 1]`` and, when clipped, which samples were clipped.

    With ``old_value`` and ``clip_value``: the worse of the plain and the clipped loss
    (:func:`ppokit.objectives.functional.clipped_value_loss`); else the plain distance.

    Example:
        >>> critic_term(torch.tensor([[1.0]]), torch.tensor([[3.0]]), None, None, "l2")
        (tensor([[4.]]), None)
    """
    if old_value is not None and clip_value is not None:
        return PF.clipped_value_loss(value_target, value, old_value, clip_value, loss_critic_type)
    return PF.value_distance(value_target, value, loss_critic_type), None


def ppo_objective(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantage: torch.Tensor,
    *,
    entropy: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
    value_target: torch.Tensor | None = None,
    old_value: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    clip_epsilon: PF.ClipRange | None = None,
    penalty: torch.Tensor | None = None,
    max_importance_ratio: float | torch.Tensor | None = None,
    prox_log_prob: torch.Tensor | None = None,
    advantage_scale: torch.Tensor | None = None,
    entropy_coeff: float | torch.Tensor = 0.01,
    critic_coeff: float | torch.Tensor = 1.0,
    loss_critic_type: str = "smooth_l1",
    clip_value: float | torch.Tensor | None = None,
    reduction: str = "mean",
    normalize_advantage: bool = False,
    normalize_advantage_exclude_dims: tuple[int, ...] = (),
    log_explained_variance: bool = True,
    batch_ndim: int | None = None,
) -> dict[str, torch.Tensor]:
    """The PPO losses and their diagnostics from log-probs, entropies and values.

    Args:
        log_prob: ``log pi(a|s)`` of the stored actions under the current policy ``[*B]``.
        old_log_prob: ``log pi_old(a|s)`` stored at collection time ``[*B]``.
        advantage: ``[*B, 1]``.

    Keyword Args:
        entropy: per-sample policy entropy ``[*B]``; None: no entropy bonus.
        value: the critic's prediction ``[*B, 1]``; None: no critic loss.
        value_target: regression target ``[*B, 1]`` (needed with ``value``).
        old_value: value stored at collection time ``[*B, 1]``, for ``clip_value``.
        mask: boolean validity mask ``[*B, 1]``; masked samples count nowhere.
        clip_epsilon: ratio clip range ``eps`` or ``(eps_low, eps_high)`` (clipped PPO), or
            None (plain PPO). Coefficients may be floats or 0-d tensors (scheduled buffers
            inside a compiled graph).
        penalty: an extra per-sample policy term ``[*B, 1]`` added to the surrogate
            (e.g. ``beta * KL`` of KL-penalised PPO).
        max_importance_ratio: cap on the ratio weighting the advantage
            (:func:`capped_surrogate_term`); None: no cap.
        prox_log_prob: ``log pi_prox(a|s)`` ``[*B]`` of a proximal policy (PPO-EWMA,
            TorchRL's ``delay_actor``), gradient-free: the trust region (clip) and
            ``kl_approx`` use ``pi / pi_prox`` while the advantage is weighted by
            ``pi / pi_old``. None: the proximal policy is ``pi_old``.
        advantage_scale: divide the advantage by it (TorchRL's ``advantage_norm``), or None.
        entropy_coeff: ``loss_entropy = -entropy_coeff * H``.
        critic_coeff: multiplier of the critic loss.
        loss_critic_type: ``"l1"``, ``"l2"`` or ``"smooth_l1"``.
        clip_value: keep the value within this distance of ``old_value`` (pessimistic
            clipped value loss), or None.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-sample losses ``[*B]``).
        normalize_advantage: standardise the advantage over the (valid) batch first.
        normalize_advantage_exclude_dims: dims of the advantage kept apart in that
            standardisation (e.g. the agent dim).
        log_explained_variance: add the critic's ``explained_variance``.
        batch_ndim: how many leading dims of ``log_prob`` are the data's batch; with
            per-token (or per-agent) dims after them the ``ESS`` and ``explained_variance``
            keep those dims, one per token (TorchRL's layout). None: all are batch dims.

    Returns:
        ``loss_objective`` and the detached ``kl_approx``, ``ESS``, ``max_ratio``,
        ``mean_ratio`` (and ``clip_fraction`` when clipped); with ``entropy``: ``entropy``,
        ``loss_entropy``; with ``value``: ``loss_critic``, ``explained_variance`` (unless
        ``log_explained_variance=False``) and, with ``clip_value``, ``value_clip_fraction``.
        With a mask that has no valid sample the losses are 0 (zero gradient) and every
        diagnostic is NaN (:mod:`ppokit.objectives.degenerate`).

    Raises:
        ValueError: an empty batch (a 0 in the shape of ``log_prob``).

    Example:
        >>> # one sample, unchanged policy (r = 1), A = 2: loss_objective = -1 * 2
        >>> out = ppo_objective(torch.zeros(1), torch.zeros(1), torch.tensor([[2.0]]),
        ...                     clip_epsilon=0.2)
        >>> out["loss_objective"], out["clip_fraction"]
        (tensor(-2.), tensor(0.))
    """
    check_not_empty(log_prob.shape, what="ppo_objective()'s log_prob")
    if advantage_scale is not None:  # a running return scale; no re-centring
        advantage = advantage / advantage_scale
    if normalize_advantage and advantage.numel() > 1:
        advantage = PF.standardize(advantage, mask, exclude_dims=normalize_advantage_exclude_dims)
    log_is_weight = None
    if prox_log_prob is None:
        log_weight = (log_prob - old_log_prob).unsqueeze(-1)
    else:
        prox_log_prob = prox_log_prob.detach()
        log_weight = (log_prob - prox_log_prob).unsqueeze(-1)
        log_is_weight = (prox_log_prob - old_log_prob).unsqueeze(-1)
    if max_importance_ratio is None and log_is_weight is None:
        policy_loss = surrogate_term(log_weight, advantage, clip_epsilon)
        diagnostics = PD.ratio_diagnostics(log_weight, clip_epsilon, mask, batch_ndim=batch_ndim)
    else:
        policy_loss, diagnostics = capped_surrogate_term(
            log_weight,
            advantage,
            clip_epsilon,
            max_importance_ratio,
            mask,
            log_is_weight,
            batch_ndim=batch_ndim,
        )
    if penalty is not None:
        policy_loss = policy_loss + penalty
    out = {"loss_objective": PF.reduce_loss(policy_loss, reduction, mask)}
    out.update(diagnostics)
    if entropy is not None:
        if mask is None and reduction == "mean":
            # scale the mean rather than every sample: the same number, fewer ops
            mean_entropy = entropy.mean()
            out["entropy"] = mean_entropy.detach()
            out["loss_entropy"] = mean_entropy * -entropy_coeff
        else:
            entropy = entropy.unsqueeze(-1)
            out["entropy"] = PF.masked_mean(entropy.detach(), mask)
            out["loss_entropy"] = PF.reduce_loss(-entropy_coeff * entropy, reduction, mask)
    if value is not None:
        if value_target is None:
            raise ValueError("ppo_objective() got a value but no value_target.")
        loss, clipped = critic_term(value, value_target, old_value, clip_value, loss_critic_type)
        if clipped is not None:
            out["value_clip_fraction"] = PF.masked_mean(clipped.to(value.dtype), mask)
        if mask is None and reduction == "mean":
            out["loss_critic"] = loss.mean() * critic_coeff
        else:
            out["loss_critic"] = PF.reduce_loss(critic_coeff * loss, reduction, mask)
        if log_explained_variance:
            out["explained_variance"] = PD.explained_variance(
                value_target, value, mask, batch_ndim=batch_ndim
            )
    # a mask with no valid sample: losses 0, statistics NaN (ppokit.objectives.degenerate)
    return nan_without_samples(out, mask, ("entropy", "value_clip_fraction", "explained_variance"))


def objective_keys(
    *, clipped: bool, entropy: bool, critic: bool, explained_variance: bool, value_clip: bool
) -> list[str]:
    """The entries :func:`ppo_objective` returns with these options, in a stable order.

    Example:
        >>> objective_keys(clipped=True, entropy=False, critic=False,
        ...                explained_variance=True, value_clip=False)
        ['loss_objective', 'kl_approx', 'ESS', 'max_ratio', 'mean_ratio', 'clip_fraction']
    """
    keys = ["loss_objective", "kl_approx", "ESS", "max_ratio", "mean_ratio"]
    if clipped:
        keys.append("clip_fraction")
    if entropy:
        keys += ["entropy", "loss_entropy"]
    if critic:
        keys.append("loss_critic")
        if explained_variance:
            keys.append("explained_variance")
        if value_clip:
            keys.append("value_clip_fraction")
    return keys


def probe(
    out: dict[str, torch.Tensor], extras: dict[str, torch.Tensor] | None = None
) -> torch.Tensor | None:
    """Sum of the entries in :data:`PROBED_KEYS` (detached; no host sync, so traceable).

    Example:
        >>> probe({"loss_objective": torch.tensor(1.0), "kl_approx": torch.tensor(2.0)})
        tensor(3.)
    """
    extras = extras or {}
    parts = []
    for key in PROBED_KEYS:
        value = out.get(key, extras.get(key))
        if value is not None:
            parts.append(value.detach() if value.dim() == 0 else value.detach().sum())
    return torch.stack(parts).sum() if parts else None


def outputs_finite(out: dict[str, torch.Tensor], extras: dict[str, torch.Tensor]) -> bool:
    """One cheap test that every input and the closed-form entropy were finite.

    A NaN or Inf in the advantage, value target, stored value, log-prob or critic output
    makes ``loss_objective``, ``kl_approx`` or ``loss_critic`` non-finite (NaN propagates
    through every op used, min/max included; masked samples are selected away). So one sum
    and one host sync replace a check per tensor; when it fails, the loss looks for the
    culprit (or finds none: a huge but finite ratio may overflow).

    Example:
        >>> outputs_finite({"loss_objective": torch.tensor(float("nan"))}, {})
        False
    """
    total = probe(out, extras)
    return total is None or math.isfinite(float(total))
