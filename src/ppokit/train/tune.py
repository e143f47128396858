"""Hyperparameter search with Optuna (``ppokit tune``; the ``tune`` extra).

Each trial trains one run with configuration values drawn by a TPE sampler from
:data:`SEARCH_SPACE` (or the subset the user names), evaluating deterministically every
``eval_every`` iterations (:mod:`~ppokit.train.evaluation.periodic`). Those intermediate eval
returns go to a median pruner, which stops trials doing worse than the median of earlier trials
at the same step. A trial's value is the mean return of its final evaluation.

A study in a database (``sqlite:///study.db``) resumes: rerunning the same command loads it,
counts its finished (complete or pruned) trials towards ``--trials`` and runs only the rest;
a trial a kill left ``RUNNING`` is marked failed and does not count. The best trial's
configuration is written as a file ``ppokit train --config`` reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ppokit.train.evaluation.evaluate import EvalResult
from ppokit.train.records.rundir import atomic_write_text
from ppokit.train.settings.config import TrainConfig, config_to_dict

__all__ = ["SEARCH_SPACE", "best_config_dict", "open_study", "run_study", "suggest_config"]

# a live trial or a FixedTrial (the best one's parameters replayed)
AnyTrial = optuna.Trial | optuna.trial.FixedTrial
Suggest = Callable[[AnyTrial], dict[str, Any]]

#: field -> how a trial draws it. Batch sizes are powers of two, so every num_steps divides by
#: every num_minibatches whatever num_envs is.
SEARCH_SPACE: dict[str, Suggest] = {
    "lr": lambda t: {"lr": t.suggest_float("lr", 1e-5, 3e-3, log=True)},
    "num_steps": lambda t: {
        "num_steps": t.suggest_categorical("num_steps", [16, 32, 64, 128, 256])
    },
    "num_minibatches": lambda t: {
        "num_minibatches": t.suggest_categorical("num_minibatches", [1, 2, 4, 8])
    },
    "num_epochs": lambda t: {"num_epochs": t.suggest_int("num_epochs", 2, 20)},
    "gamma": lambda t: {"gamma": t.suggest_categorical("gamma", [0.95, 0.98, 0.99, 0.995, 0.999])},
    "gae_lambda": lambda t: {
        "gae_lambda": t.suggest_categorical("gae_lambda", [0.8, 0.9, 0.95, 0.98, 1.0])
    },
    "clip_epsilon": lambda t: {
        "clip_epsilon": t.suggest_categorical("clip_epsilon", [0.1, 0.2, 0.3])
    },
    "entropy_coef": lambda t: {
        "entropy_coef": t.suggest_float("entropy_coef", 1e-6, 0.1, log=True)
    },
    "critic_coef": lambda t: {"critic_coef": t.suggest_float("critic_coef", 0.25, 1.0)},
    "width": lambda t: {
        "hidden_sizes": (w := t.suggest_categorical("width", [32, 64, 128, 256]), w)
    },
}
#: what a written config leaves out: where and how a run is shown, not what it learns
_NOT_WRITTEN = (
    "run_dir",
    "overwrite",
    "progress",
    "track",
    "wandb_project",
    "wandb_entity",
    "wandb_group",
    "wandb_tags",
)


def suggest_config(trial: AnyTrial, base: TrainConfig, names: Sequence[str]) -> TrainConfig:
    """``base`` with the fields ``names`` (keys of :data:`SEARCH_SPACE`) drawn by ``trial``.

    Example:
        >>> trial = optuna.trial.FixedTrial({"lr": 1e-4, "width": 32})
        >>> cfg = suggest_config(trial, TrainConfig(), ["lr", "width"])
        >>> cfg.lr, cfg.hidden_sizes
        (0.0001, (32, 32))
    """
    values: dict[str, Any] = {}
    for name in names:
        values.update(SEARCH_SPACE[name](trial))
    return replace(base, **values)


def open_study(storage: str | None, study_name: str | None) -> optuna.Study:
    """Create or load the study (TPE sampler, median pruner, maximising the eval return).

    Raises:
        ValueError: the storage URL cannot be opened (with the reason).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=0),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        )
    except Exception as err:  # SQLAlchemy's and optuna's errors have no common base
        raise ValueError(
            f"--storage {storage!r} cannot be opened: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''} (expected a "
            "database URL such as sqlite:///study.db in a writable directory)."
        ) from None


def _counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_study(
    study: optuna.Study,
    base: TrainConfig,
    *,
    trials: int,
    names: Sequence[str],
    runs_dir: Path,
    report: Callable[[str], None] = print,
) -> int:
    """Run trials until the study holds ``trials`` finished ones; returns how many ran now."""
    from ppokit.train.trainer import PPOTrainer

    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)  # left by a killed process

    def objective(trial: optuna.Trial) -> float:
        cfg = suggest_config(trial, base, names)
        run_dir = runs_dir / f"trial_{trial.number}"
        trainer = PPOTrainer(cfg, run_dir=run_dir, overwrite=True, progress=False)
        pruned = False

        def on_eval(iteration: int, result: EvalResult) -> None:
            nonlocal pruned
            trial.report(result.mean, step=iteration)
            if iteration < trainer.num_iterations and trial.should_prune():
                pruned = True
                trainer.request_stop()

        trainer.eval_callbacks.append(on_eval)
        summary = trainer.train().summary
        if pruned:
            report(f"tune: trial {trial.number} pruned at iteration {trainer.iteration}")
            raise optuna.TrialPruned
        value = float(summary.get("eval_return_mean", math.nan))
        report(f"tune: trial {trial.number}: eval return {value:.2f} ({run_dir})")
        return value

    todo = max(0, trials - _counted(study))
    for _ in range(todo):
        study.optimize(objective, n_trials=1, catch=())
    return todo


def best_config_dict(
    study: optuna.Study, base: TrainConfig, names: Sequence[str]
) -> dict[str, Any]:
    """The best trial's configuration as ``ppokit train --config`` values.

    Example:
        >>> study = optuna.create_study(direction="maximize")
        >>> study.add_trial(optuna.trial.create_trial(
        ...     params={"lr": 2e-4}, value=1.0,
        ...     distributions={"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3)}))
        >>> best_config_dict(study, TrainConfig(), ["lr"])["lr"]
        0.0002
    """
    cfg = suggest_config(optuna.trial.FixedTrial(study.best_trial.params), base, names)
    values = config_to_dict(cfg)
    for name in _NOT_WRITTEN:
        values.pop(name, None)
    return values


def write_best_config(
    study: optuna.Study, base: TrainConfig, names: Sequence[str], out: Path
) -> Path:
    """Write :func:`best_config_dict` as JSON to ``out`` (atomically)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(best_config_dict(study, base, names), indent=2) + "\n")
    return out
