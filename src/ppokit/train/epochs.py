"""The update half of an iteration: epochs x minibatches of PPO over one rollout.

:func:`run_epochs` is :meth:`PPOTrainer.update <ppokit.train.trainer.PPOTrainer.update>`'s body:
advantages once (or per epoch with ``recompute_advantage``), a fresh permutation per epoch,
the run's update step per minibatch (eager or fused), early stop on ``target_kl``, and the
mean loss terms and diagnostics over the minibatches applied. Recurrent runs shuffle whole
env sequences (:func:`~ppokit.train.recurrent.sequences.minibatch_rows`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tensordict import TensorDictBase

from ppokit.distributed import global_standardize
from ppokit.train.records.metrics import column_means
from ppokit.train.recurrent.sequences import minibatch_rows

if TYPE_CHECKING:
    from ppokit.train.trainer import PPOTrainer

__all__ = ["LOG_PROB_KEY", "run_epochs"]

#: where the collector writes the sampled action's log-probability (TorchRL's key)
LOG_PROB_KEY = "action_log_prob"
_LOSS_DIAGNOSTICS = ("entropy", "clip_fraction", "kl_approx", "ESS", "explained_variance")
_ROLLOUT_KEYS = ("observation", "action", LOG_PROB_KEY, "advantage", "value_target", "state_value")


def run_epochs(self: PPOTrainer, rollout: TensorDictBase) -> dict[str, float]:
    """Epochs x minibatches of PPO on ``rollout`` ``[num_envs, num_steps]``; mean diagnostics."""
    cfg = self.cfg
    self.actor.train()
    self.estimate_advantage(rollout)
    flat = minibatch_rows(rollout, _ROLLOUT_KEYS, self.recurrent)
    records: list[tuple[torch.Tensor | None, ...]] = []
    stopped_early = False
    epochs_done = 0
    for epoch in range(cfg.num_epochs):
        if cfg.recompute_advantage and epoch > 0:
            self.estimate_advantage(rollout)
            flat = minibatch_rows(rollout, _ROLLOUT_KEYS, self.recurrent)
        perm = torch.randperm(flat.shape[0], generator=self.shuffle_gen)
        # one gather per epoch, then views: ~5x cheaper than indexing every minibatch
        for minibatch in flat[perm].split(flat.shape[0] // cfg.num_minibatches):
            if self.world.is_distributed and cfg.normalize_advantage:
                # mean/std of the global minibatch (all ranks'), as one process would see
                minibatch = minibatch.set(
                    "advantage", global_standardize(minibatch.get("advantage"), self.world)
                )
            out, grad_norm, applied = self.update_step(minibatch, target_kl=cfg.target_kl)
            if not applied:  # the KL exceeded target_kl: nothing was changed
                stopped_early = True
                break
            # kept as tensors and stacked once per iteration: no per-minibatch stack/sync
            records.append(
                (
                    out["loss_objective"].detach(),
                    out["loss_critic"].detach(),
                    out["loss_entropy"].detach(),
                    *(out.get(k, None) for k in _LOSS_DIAGNOSTICS),
                    grad_norm,
                )
            )
        if stopped_early:
            break
        epochs_done += 1
    names = ["loss_objective", "loss_critic", "loss_entropy", *_LOSS_DIAGNOSTICS, "grad_norm"]
    metrics = dict(zip(names, column_means(records, len(names), self.world.all_reduce_mean)))
    metrics["epochs_completed"] = float(epochs_done)
    metrics["minibatch_updates"] = float(len(records))
    metrics["value_mean"] = float(rollout.get("state_value").mean())
    metrics["advantage_mean"] = float(rollout.get("advantage").mean())
    return metrics
