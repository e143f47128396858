"""The training loop around a :class:`~ppokit.train.trainer.PPOTrainer`'s steps.

Per iteration: set the annealed learning rate, collect, update, log (CSV, TensorBoard, the
progress bar), checkpoint when due, stop on a signal; at the end evaluate and write
``summary.json``. Ctrl-C and SIGTERM finish the iteration and save (:mod:`~ppokit.train.signals`).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ppokit.train.evaluation.periodic import (
    BEST_NAME,
    consider_best,
    evaluate_if_due,
    run_evaluation,
)
from ppokit.train.records.metrics import MetricsLogger, mean_or_nan, progress_bar
from ppokit.train.records.provenance import record_session
from ppokit.train.records.rundir import (
    atomic_write_text,
    clean_stale_tmp,
    record_written,
    run_dir_lock,
)
from ppokit.train.records.tracking import Tracker, make_tracker, tracker_options
from ppokit.train.settings.config import config_to_dict
from ppokit.train.signals import stop_on_signals

if TYPE_CHECKING:
    from ppokit.train.trainer import PPOTrainer

__all__ = ["TrainResult", "finish", "run_loop"]


@dataclass(frozen=True)
class TrainResult:
    """What :meth:`PPOTrainer.train` returns."""

    env_steps: int
    iterations: int
    wall_seconds: float
    interrupted: bool
    summary: dict[str, Any]


def run_loop(self: PPOTrainer) -> TrainResult:
    """Train ``self`` until its ``num_iterations``: log, checkpoint, evaluate at the end.

    Calls the trainer's own steps (``collect``, ``update``, ``save``), so a subclass or an
    instrumented trainer is run the same way.
    """
    main = self.world.is_main
    if main:
        self.run_dir.mkdir(parents=True, exist_ok=True)
    # rank 0 owns the run dir: one process at a time (the lock dies with the process)
    with run_dir_lock(self.run_dir) if main else contextlib.nullcontext():
        return _run_locked(self)


def _run_locked(self: PPOTrainer) -> TrainResult:
    cfg, main = self.cfg, self.world.is_main
    code = None  # the code this session runs, as provenance.jsonl records it (rank 0)
    if main:
        clean_stale_tmp(self.run_dir)  # left by a process killed mid-write
        record_written(self.run_dir, "config.json")
        atomic_write_text(
            self.run_dir / "config.json", json.dumps(config_to_dict(cfg), indent=2) + "\n"
        )
        code = record_session(
            self.run_dir,
            env_steps=self.env_steps,
            device=str(self.device),
            world_size=self.world.world_size,
        )["code"]
    tracker = (
        make_tracker(
            cfg.track,
            run_dir=self.run_dir,
            config=config_to_dict(cfg),
            options=tracker_options(cfg),
        )
        if main
        else None
    )
    try:
        result = _train_tracked(self, tracker, code)
    except BaseException:
        if tracker is not None:
            tracker.close(interrupted=True)
        raise
    if tracker is not None:
        if result.summary:
            tracker.summary(result.summary)
        tracker.close(interrupted=result.interrupted)
    return result


def _train_tracked(
    self: PPOTrainer, tracker: Tracker | None, code: dict[str, Any] | None
) -> TrainResult:
    cfg, main = self.cfg, self.world.is_main
    logger = (
        MetricsLogger(self.run_dir, resume_from_step=self.env_steps or None, tracker=tracker)
        if main
        else None
    )
    bar = (
        progress_bar(
            cfg, self.env_steps, self.num_iterations * cfg.batch_size * self.world.world_size
        )
        if (main and cfg.progress)
        else None
    )
    start = time.perf_counter()
    start_steps = self.env_steps
    interrupted = False
    try:
        with stop_on_signals(self.stop):
            while self.iteration < self.num_iterations:
                elapsed = _iteration(self, logger, bar, start, start_steps)
                if _checkpoint_or_stop(self, elapsed):
                    interrupted = True
                    break
    finally:
        if bar is not None:
            bar.close()
        if logger is not None:
            logger.close()
    wall = self.wall_offset + time.perf_counter() - start
    summary: dict[str, Any] = {}
    if main and not interrupted:
        summary = finish(
            self,
            wall_seconds=wall,
            train_sps=(self.env_steps - start_steps) / max(time.perf_counter() - start, 1e-9),
            code=code,
        )
    self.env.close()
    return TrainResult(self.env_steps, self.iteration, wall, interrupted, summary)


def _iteration(
    self: PPOTrainer, logger: MetricsLogger | None, bar: Any, start: float, start_steps: int
) -> float:
    """One iteration: collect, update, log; returns the seconds since ``start``."""
    self.iteration += 1
    lr = self.learning_rate(self.iteration)
    for group in self.optimizer.param_groups:
        group["lr"] = lr
    if self.cfg.anneal_clip:  # a buffer of the loss: the compiled graphs read the new value
        self.loss.clip_epsilon = self.clip_epsilon(self.iteration)
    t0 = time.perf_counter()
    rollout = self.collect()
    t1 = time.perf_counter()
    metrics = self.update(rollout)
    t2 = time.perf_counter()
    elapsed = t2 - start
    sps = (self.env_steps - start_steps) / max(elapsed, 1e-9)
    metrics.update(
        lr=lr,
        sps=sps,
        collect_seconds=t1 - t0,
        update_seconds=t2 - t1,
        episode_return_mean=mean_or_nan(self.recent_returns),
    )
    metrics.update(evaluate_if_due(self, wall_seconds=self.wall_offset + elapsed))
    if logger is not None:
        logger.log(
            metrics,
            env_steps=self.env_steps,
            iteration=self.iteration,
            wall_seconds=self.wall_offset + elapsed,
        )
    if bar is not None:
        bar.update(self.env_steps - bar.n)
        bar.set_postfix(
            sps=f"{sps:,.0f}", ret=f"{metrics['episode_return_mean']:.1f}", refresh=False
        )
    return elapsed


def _checkpoint_or_stop(self: PPOTrainer, elapsed: float) -> bool:
    """Save when due (rank 0); True when a stop was requested on any rank."""
    cfg = self.cfg
    # a signal may reach one rank only: stop together or the others would wait
    self.stop.requested = self.world.any(self.stop.requested)
    last = self.iteration == self.num_iterations
    if self.world.is_main and (
        last or self.stop.requested or self.iteration % cfg.checkpoint_every == 0
    ):
        wall = self.wall_offset + elapsed
        self.save(wall_seconds=wall)
        if cfg.keep_checkpoint_every and self.iteration % cfg.keep_checkpoint_every == 0:
            self.save(name=f"step_{self.env_steps}.pt", wall_seconds=wall)
    return self.stop.requested


def finish(
    self: PPOTrainer,
    *,
    wall_seconds: float,
    train_sps: float,
    code: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``self``'s policy deterministically and write ``summary.json`` (with ``code``,
    the session's entry of ``provenance.jsonl``, when given)."""
    cfg = self.cfg
    summary: dict[str, Any] = {
        "env": cfg.env,
        "seed": cfg.seed,
        "env_steps": self.env_steps,
        "iterations": self.iteration,
        "wall_seconds": round(wall_seconds, 2),
        "sps": round(train_sps, 1),
        "update_step": self.update_kind,
        "train_return_recent_mean": mean_or_nan(self.recent_returns),
        "world_size": self.world.world_size,
    }
    if cfg.eval_episodes and self.eval_env is not None:
        last = self.last_eval
        # the last iteration's evaluation during training played these very episodes
        result, seconds = (
            (last[1], last[2])
            if last is not None and last[0] == self.iteration
            else run_evaluation(self)
        )
        summary.update(
            eval_return_mean=result.mean,
            eval_return_std=result.std,
            eval_episodes=len(result.returns),
            eval_returns=result.returns,
            eval_lengths=result.lengths,
            eval_seconds=round(seconds, 2),
        )
        if result.success_rate is not None:  # goal-conditioned tasks (info["is_success"])
            summary["eval_success_rate"] = result.success_rate
        if cfg.eval_every:
            consider_best(self, result, wall_seconds=wall_seconds)
    if (self.ckpt_dir / BEST_NAME).is_file() and cfg.eval_every:
        summary.update(
            best_checkpoint=str(self.ckpt_dir / BEST_NAME), best_eval_return=self.best_eval_return
        )
    summary["checkpoint"] = str(self.ckpt_dir / "latest.pt")
    if code is not None:
        summary["code"] = code
    record_written(self.run_dir, "summary.json")
    atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
