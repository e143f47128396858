"""Scalar logging to TensorBoard event files and a CSV, one row per logged iteration.

``progress.csv`` has a fixed header (``env_steps``, ``iteration``, ``wall_seconds`` and every
metric name, sorted); a metric with no value at an iteration (e.g. no episode finished) is an
empty cell. Rows are appended and flushed one by one. Resuming appends to the same file (rows
after the checkpoint's step are dropped first, by writing the kept rows to a temporary file
that replaces the old one atomically, so a run killed between a log write and a checkpoint has
no duplicate steps, and a kill during that rewrite loses no row). Both files are listed in
the run dir's manifest (:mod:`~ppokit.train.records.rundir`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppokit.train.records.rundir import atomic_write_text, record_written
from ppokit.train.records.tracking import Tracker

__all__ = ["MetricsLogger", "column_means", "mean_or_nan", "progress_bar", "read_progress_csv"]

_FIXED = ("env_steps", "iteration", "wall_seconds")


class MetricsLogger:
    """Write scalars to ``<run_dir>/progress.csv`` and TensorBoard events in ``<run_dir>/tb``.

    Args:
        run_dir: the run directory.
        tensorboard: also write TensorBoard events.
        resume_from_step: when resuming, drop CSV rows logged after this step and append.
        tracker: an experiment tracker that receives every row too
            (:mod:`~ppokit.train.records.tracking`).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> with MetricsLogger(d, tensorboard=False) as log:
        ...     log.log({"loss": 0.5}, env_steps=128, iteration=1, wall_seconds=0.1)
        >>> read_progress_csv(d / "progress.csv")[0]["loss"]
        0.5
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tensorboard: bool = True,
        resume_from_step: int | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.tracker = tracker
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "progress.csv"
        record_written(self.run_dir, "progress.csv")
        self._columns: list[str] | None = None
        if resume_from_step is not None and self.csv_path.exists():
            rows = read_progress_csv(self.csv_path, raw=True)
            with open(self.csv_path, newline="") as fh:
                header = next(csv.reader(fh), None)
            if header:
                self._columns = header
                kept = [r for r in rows if float(r["env_steps"]) <= resume_from_step]
                text = io.StringIO(newline="")
                writer = csv.DictWriter(text, fieldnames=header)
                writer.writeheader()
                writer.writerows(kept)
                atomic_write_text(self.csv_path, text.getvalue())
        elif self.csv_path.exists():
            self.csv_path.unlink()
        self._file = open(self.csv_path, "a", newline="")  # noqa: SIM115 - closed in close()
        self._writer: csv.DictWriter | None = None
        if self._columns is not None:
            self._writer = csv.DictWriter(
                self._file, fieldnames=self._columns, extrasaction="ignore"
            )
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge events a killed process logged after the checkpoint's step
            purge = None if resume_from_step is None else resume_from_step + 1
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge)
            self._record_events()

    def _record_events(self) -> None:
        # TensorBoard names its event files itself: list the ones in tb/ (unique names)
        record_written(
            self.run_dir,
            *(
                p.relative_to(self.run_dir).as_posix()
                for p in sorted((self.run_dir / "tb").glob("events.out.tfevents.*"))
            ),
        )

    def log(
        self,
        metrics: Mapping[str, float | None],
        *,
        env_steps: int,
        iteration: int,
        wall_seconds: float,
    ) -> None:
        """Log one row; ``None`` or NaN values are left empty in the CSV and skipped in TB."""
        if self._writer is None:
            self._columns = [*_FIXED, *sorted(metrics)]
            self._writer = csv.DictWriter(
                self._file, fieldnames=self._columns, extrasaction="ignore"
            )
            self._writer.writeheader()
        row: dict[str, object] = {
            "env_steps": env_steps,
            "iteration": iteration,
            "wall_seconds": round(wall_seconds, 3),
        }
        present: dict[str, float] = {}
        for key, value in metrics.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                row[key] = ""
                continue
            row[key] = f"{float(value):.6g}"
            present[key] = float(value)
            if self._tb is not None:
                self._tb.add_scalar(key, float(value), global_step=env_steps)
        self._writer.writerow(row)
        self._file.flush()
        if self.tracker is not None:
            self.tracker.log(
                {**present, "iteration": float(iteration), "wall_seconds": float(wall_seconds)},
                step=env_steps,
            )

    def flush(self) -> None:
        self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._record_events()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_progress_csv(path: str | Path, *, raw: bool = False) -> list[dict]:
    """Rows of a ``progress.csv``; values parsed to floats (empty cells -> NaN) unless ``raw``."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if raw:
        return rows
    return [
        {k: (float(v) if v not in ("", None) else math.nan) for k, v in r.items()} for r in rows
    ]


def column_means(
    records: list[tuple[torch.Tensor | None, ...]],
    width: int,
    reduce: Callable[[torch.Tensor], torch.Tensor],
) -> list[float]:
    """Per-column means of the minibatch records (NaN for a diagnostic the loss lacks),
    averaged over ranks by ``reduce``.

    Example:
        >>> column_means([(torch.tensor(1.0), None), (torch.tensor(3.0), None)], 2,
        ...              lambda t: t)
        [2.0, nan]
    """
    if not records:
        return [math.nan] * width
    nan = torch.full((), math.nan)
    columns = [
        torch.stack([nan if v is None else v.detach().float() for v in col])
        for col in zip(*records)
    ]
    return reduce(torch.stack(columns).mean(1)).tolist()


def mean_or_nan(values: Any) -> float:
    """The mean of ``values``, NaN when there are none.

    Example:
        >>> mean_or_nan([1.0, 2.0]), mean_or_nan([])
        (1.5, nan)
    """
    values = list(values)
    return float(np.mean(values)) if values else math.nan


def progress_bar(cfg: Any, initial: int, total: int) -> Any:
    """A tqdm bar over env steps, labelled with ``cfg.env`` and ``cfg.seed``."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="step",
        unit_scale=True,
        dynamic_ncols=True,
        desc=f"{cfg.env} seed {cfg.seed}",
        smoothing=0.1,
    )
