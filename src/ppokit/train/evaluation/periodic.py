"""Deterministic evaluation during training and the best checkpoint it selects.

With ``eval_every = N > 0`` the loop calls :func:`evaluate_if_due` after every update; every
``N``-th iteration (and the last) it plays ``eval_episodes`` deterministic episodes on fresh
environments (the training envs keep their episodes in flight), with the observation
normaliser's statistics frozen (``update=False``: evaluation never moves them). The result is
logged as ``eval/return_mean``, ``eval/return_std``, ``eval/length_mean``,
``eval/success_rate`` (the episodes' final ``info["is_success"]``, empty for tasks without
one) and ``eval/seconds``; a mean return above every earlier one writes ``checkpoints/best.pt``
(atomically, listed in the run dir's manifest, like ``latest.pt``). Iterations without an
evaluation log those columns empty, so ``progress.csv`` keeps one header.

The end-of-training evaluation (:func:`~ppokit.train.loop.finish`) goes through the same
:func:`run_evaluation` and may also improve ``best.pt``.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np

from ppokit.distributed import unwrap_ddp
from ppokit.train.evaluation.evaluate import EvalResult, evaluate_policy

if TYPE_CHECKING:
    from ppokit.train.trainer import PPOTrainer

__all__ = ["BEST_NAME", "EVAL_KEYS", "consider_best", "evaluate_if_due", "run_evaluation"]

#: the file name of the best checkpoint inside ``run_dir/checkpoints``
BEST_NAME = "best.pt"
#: the columns evaluation during training adds to progress.csv and TensorBoard
EVAL_KEYS = (
    "eval/return_mean",
    "eval/return_std",
    "eval/length_mean",
    "eval/success_rate",
    "eval/seconds",
)


def run_evaluation(trainer: PPOTrainer) -> tuple[EvalResult, float]:
    """Play ``eval_episodes`` deterministic episodes with ``trainer``'s current policy.

    Episode ``i`` is seeded ``seed + 10_000 + i`` every time, so successive evaluations differ
    only by the policy and ``best.pt`` is chosen on the same starting states.
    Returns the result and the seconds it took. Rank 0 alone calls it (no DDP hooks).
    """
    cfg = trainer.cfg
    source = trainer.eval_env
    if source is None:  # a VectorEnv without eval_env: refused at construction
        raise ValueError("This trainer has no evaluation environment (pass eval_env=).")
    t0 = time.perf_counter()
    with unwrap_ddp(trainer.actor):
        result = evaluate_policy(
            trainer.actor,
            source,
            episodes=cfg.eval_episodes,
            seed=cfg.seed + 10_000,
            obs_normalizer=trainer.obs_norm,
            env_kwargs=(cfg.env_kwargs or None) if isinstance(source, str) else None,
        )
    return result, time.perf_counter() - t0


def consider_best(trainer: PPOTrainer, result: EvalResult, *, wall_seconds: float) -> bool:
    """Write ``checkpoints/best.pt`` when ``result``'s mean return beats every earlier one.

    Returns whether it did. ``trainer.best_eval_return`` (saved in checkpoints, so a resumed
    run keeps comparing against the best before the interruption) is updated first, so the
    checkpoint records its own return.
    """
    if not math.isfinite(result.mean) or result.mean <= trainer.best_eval_return:
        return False
    trainer.best_eval_return = result.mean
    trainer.save(BEST_NAME, wall_seconds=wall_seconds)
    return True


def evaluate_if_due(trainer: PPOTrainer, *, wall_seconds: float) -> dict[str, float]:
    """The ``eval/*`` metrics of this iteration (empty dict when ``eval_every`` is 0).

    Evaluates on every ``eval_every``-th iteration and on the last one; other iterations get
    NaN (an empty CSV cell). Keeps ``best.pt`` up to date. Ranks other than 0 return ``{}``
    (they log nothing).
    """
    cfg = trainer.cfg
    if not cfg.eval_every or not trainer.world.is_main:
        return {}
    due = trainer.iteration % cfg.eval_every == 0 or trainer.iteration == trainer.num_iterations
    if not due:
        return dict.fromkeys(EVAL_KEYS, math.nan)
    result, seconds = run_evaluation(trainer)
    trainer.last_eval = (trainer.iteration, result, seconds)
    consider_best(trainer, result, wall_seconds=wall_seconds)
    for callback in trainer.eval_callbacks:  # e.g. a tuning study's pruner
        callback(trainer.iteration, result)
    return {
        "eval/return_mean": result.mean,
        "eval/return_std": result.std,
        "eval/length_mean": float(np.mean(result.lengths)),
        "eval/success_rate": math.nan if result.success_rate is None else result.success_rate,
        "eval/seconds": seconds,
    }
