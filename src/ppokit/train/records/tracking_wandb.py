"""Weights & Biases tracking (``--track wandb``; the ``wandb`` extra).

The W&B run lives in ``<run_dir>/wandb`` and takes its id from ``<run_dir>/.wandb-run-id``
(written at the first start, listed in the manifest), so ``ppokit train --resume`` continues
the same W&B run. ``WANDB_MODE=offline`` keeps everything local (``wandb sync`` uploads it
later); the tests run that way.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ppokit.train.records.rundir import atomic_write_text, record_written

__all__ = ["WandbTracker"]

_ID_FILE = ".wandb-run-id"


class WandbTracker:
    """A :class:`~ppokit.train.records.tracking.Tracker` writing to one W&B run.

    Args:
        run_dir: the ppokit run directory.
        config: the run's configuration (recorded as the W&B run's config).
        project, entity, group: W&B's; empty strings leave W&B's defaults.
        tags: W&B tags.
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        config: Mapping[str, Any],
        project: str = "ppokit",
        entity: str = "",
        group: str = "",
        tags: tuple[str, ...] = (),
    ) -> None:
        import wandb

        id_path = Path(run_dir) / _ID_FILE
        if id_path.is_file():
            run_id = id_path.read_text().strip()
        else:
            run_id = secrets.token_hex(6)  # W&B ids: letters and digits
            record_written(run_dir, _ID_FILE)
            atomic_write_text(id_path, run_id + "\n")
        self.run = wandb.init(
            project=project or None,
            entity=entity or None,
            group=group or None,
            tags=list(tags) or None,
            config=dict(config),
            dir=str(run_dir),
            id=run_id,
            name=Path(run_dir).name,
            resume="allow",
        )

    def log(self, metrics: Mapping[str, float], *, step: int) -> None:
        # W&B's own step must grow: the env step does, across resumes too
        self.run.log({**metrics, "env_steps": step}, step=step)

    def summary(self, summary: Mapping[str, Any]) -> None:
        self.run.summary.update(
            {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
        )

    def close(self, *, interrupted: bool) -> None:
        self.run.finish(exit_code=1 if interrupted else 0)
