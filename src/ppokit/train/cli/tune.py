"""``ppokit tune --env ID --trials N``: Optuna search over PPO hyperparameters.

Arguments are checked before torch and optuna are imported (the env id, the search-space
names, the base config, optuna's presence); the storage is opened before the first trial.
The work is :mod:`ppokit.train.tune`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path

import tyro

from ppokit.train.cli.arguments import UsageError
from ppokit.train.settings.config import config_from_dict, validate_config
from ppokit.train.settings.files import load_config_file
from ppokit.train.settings.presets import preset_config

__all__ = ["SPACE_NAMES", "TuneArgs", "run_tune"]

#: the names of tune.SEARCH_SPACE (repeated here so that a typo is refused without optuna)
SPACE_NAMES = (
    "lr",
    "num_steps",
    "num_minibatches",
    "num_epochs",
    "gamma",
    "gae_lambda",
    "clip_epsilon",
    "entropy_coef",
    "critic_coef",
    "width",
)


@dataclass(frozen=True)
class TuneArgs:
    """Search PPO hyperparameters with Optuna (TPE sampler, median pruner on intermediate
    deterministic eval returns); writes the best trial's config for ppokit train --config."""

    env: str = "CartPole-v1"
    """Gymnasium id to tune on (its preset is the base config)."""
    trials: int = 8
    """Finished trials the study should hold (a resumed study counts its earlier ones)."""
    storage: str | None = None
    """Optuna storage URL, e.g. sqlite:///study.db (resumable); default: in memory."""
    study_name: str | None = None
    """Study name inside the storage (default: tune-<env>)."""
    params: str = ",".join(SPACE_NAMES)
    """Comma-separated fields to search (the others come from the base config)."""
    config: Path | None = None
    """JSON/TOML config file over the preset: the base every trial starts from."""
    total_steps: int = 50_000
    """Environment steps per trial."""
    eval_every: int = 5
    """Iterations between the evaluations the pruner sees."""
    eval_episodes: int = 10
    """Deterministic episodes per evaluation."""
    runs_dir: Path = Path("runs/tune")
    """Trial run directories go to RUNS_DIR/<study name>/trial_<n>."""
    out: Path | None = None
    """The best config file (default: RUNS_DIR/<study name>/best_config.json)."""


def run_tune(argv: list[str]) -> int:
    """``ppokit tune``'s handler; returns the exit code."""
    args = tyro.cli(TuneArgs, args=argv, prog="ppokit tune")
    if find_spec("optuna") is None:
        raise UsageError(
            "ppokit tune needs optuna, which is not installed; install the tune "
            "extra: pip install 'ppokit[tune]'."
        )
    if args.trials <= 0:
        raise UsageError(f"--trials must be a positive integer, got {args.trials}.")
    names = [n.strip() for n in args.params.split(",") if n.strip()]
    unknown = [n for n in names if n not in SPACE_NAMES]
    if unknown or not names:
        raise UsageError(
            f"--params {args.params!r}: {unknown or 'nothing'} not searchable; "
            f"choose from {', '.join(SPACE_NAMES)}."
        )
    if args.storage is not None and "://" not in args.storage:
        raise UsageError(
            f"--storage {args.storage!r} is not a database URL; expected e.g. sqlite:///study.db."
        )
    try:
        base = preset_config(args.env)
        if args.config is not None:
            base = config_from_dict(load_config_file(args.config), base=base)
        base = replace(
            base,
            env=args.env,
            total_steps=args.total_steps,
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
        )
        validate_config(base)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as err:
        raise UsageError(str(err.args[0] if err.args else err)) from None
    study_name = args.study_name or f"tune-{args.env.replace('/', '_').replace(':', '_')}"
    from ppokit.train.tune import open_study, run_study, write_best_config

    try:
        study = open_study(args.storage, study_name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    runs_dir = args.runs_dir / study_name
    ran = run_study(study, base, trials=args.trials, names=names, runs_dir=runs_dir)
    out = write_best_config(study, base, names, args.out or runs_dir / "best_config.json")
    print(
        f"tune: {ran} trial(s) run now, {len(study.trials)} in study {study_name!r}; best "
        f"trial {study.best_trial.number}: {study.best_value:.2f}"
    )
    print(f"tune: best config in {out} (ppokit train --config {out})")
    return 0
