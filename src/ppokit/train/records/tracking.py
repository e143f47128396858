"""Experiment trackers beside ``progress.csv`` and TensorBoard: one interface, one file each.

A :class:`Tracker` receives the run's configuration when the run starts, every row the
:class:`~ppokit.train.records.metrics.MetricsLogger` logs, and ``summary.json``'s content at the
end.
:data:`TRACKERS` maps ``--track`` names to the module and class implementing it, so adding
one (MLflow, ...) is one module plus one line here. This module imports neither torch nor any
tracker's package: :func:`check_tracker` refuses a tracker whose package is missing before
any work, naming the extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol

__all__ = ["TRACKERS", "Tracker", "check_tracker", "make_tracker", "tracker_options"]

#: --track name -> (module, class, the package it needs, the ppokit extra that installs it)
TRACKERS: dict[str, tuple[str, str, str, str]] = {
    "wandb": ("ppokit.train.records.tracking_wandb", "WandbTracker", "wandb", "wandb"),
}


class Tracker(Protocol):
    """What the training loop calls on an experiment tracker (rank 0 only)."""

    def log(self, metrics: Mapping[str, float], *, step: int) -> None:
        """One logged row (NaN/None values already dropped) at env step ``step``."""

    def summary(self, summary: Mapping[str, Any]) -> None:
        """The run's final summary (what ``summary.json`` holds)."""

    def close(self, *, interrupted: bool) -> None:
        """End the tracked run (``interrupted``: it will be resumed, not finished)."""


def check_tracker(name: str) -> None:
    """Raise ``ValueError`` when ``--track name`` is unknown or its package is not installed.

    Example:
        >>> check_tracker("none")
        >>> check_tracker("tensorboard")
        Traceback (most recent call last):
        ...
        ValueError: --track must be 'none' or one of ['wandb'], got 'tensorboard' ...
    """
    if name == "none":
        return
    if name not in TRACKERS:
        raise ValueError(
            f"--track must be 'none' or one of {sorted(TRACKERS)}, got {name!r} "
            "(progress.csv and TensorBoard are always written)."
        )
    package, extra = TRACKERS[name][2:]
    if find_spec(package) is None:
        raise ValueError(
            f"--track {name} needs the {package!r} package, which is not "
            f"installed; install it with pip install 'ppokit[{extra}]' (or drop "
            "--track)."
        )


def make_tracker(
    name: str, *, run_dir: Path, config: Mapping[str, Any], options: Mapping[str, Any]
) -> Tracker | None:
    """The tracker ``--track name`` asks for, started (``None`` for ``"none"``).

    ``options``: the tracker's own settings (for W&B: project, entity, group, tags).
    """
    check_tracker(name)
    if name == "none":
        return None
    module, cls = TRACKERS[name][:2]
    factory = getattr(importlib.import_module(module), cls)
    tracker: Tracker = factory(run_dir=run_dir, config=config, **options)
    return tracker


def tracker_options(cfg: Any) -> dict[str, Any]:
    """The settings of ``cfg.track``'s tracker, from the config's ``<name>_*`` fields.

    Example:
        >>> from ppokit.train.settings.config import TrainConfig
        >>> tracker_options(TrainConfig(track="wandb", wandb_tags="ppo, cartpole"))["tags"]
        ('ppo', 'cartpole')
    """
    if cfg.track != "wandb":
        return {}
    tags = tuple(t.strip() for t in cfg.wandb_tags.split(",") if t.strip())
    return {
        "project": cfg.wandb_project,
        "entity": cfg.wandb_entity,
        "group": cfg.wandb_group,
        "tags": tags,
    }
