"""``ppokit train | eval | plot | export | tune | sweep``: the command line (``python -m ppokit``).

``train`` resolves its configuration in layers (dataclass defaults, the preset of ``--env``'s
task family, a ``--config`` JSON/TOML file, then ``--<field>`` flags), checks everything that
can be checked before any work (env id, action space, sizes, rates, the run dir), then trains.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import tyro

from ppokit.train.cli.arguments import (
    TrainArgs,
    UsageError,
    parse_env_kwargs,
    resolve_train_config,
    take_run_dir,
)
from ppokit.train.cli.export import run_export
from ppokit.train.cli.sweep import run_sweep, run_sweep_aggregate, run_sweep_compare
from ppokit.train.cli.tune import run_tune
from ppokit.train.records.rundir import RunDirError, holds_run, record_written, unlock_run_dir
from ppokit.train.settings.config import TrainConfig
from ppokit.train.settings.presets import preset_name

if TYPE_CHECKING:
    from ppokit.distributed import World

__all__ = [
    "EvalArgs",
    "PlotArgs",
    "TrainArgs",
    "UsageError",
    "main",
    "parse_env_kwargs",
    "resolve_train_config",
]

_USAGE = """usage: ppokit {train,eval,plot,export,tune,sweep,sweep-aggregate,sweep-compare} ...

Clipped PPO on Gymnasium tasks.

commands:
  train   train a policy:     ppokit train --env CartPole-v1 [--seed S] [--<field> VALUE ...]
  eval    re-evaluate a run:  ppokit eval RUN_DIR [--checkpoint best|latest] [--episodes N]
  plot    learning curves:    ppokit plot RUN_DIR [RUN_DIR ...] [--out FILE]
  export  deploy a policy:    ppokit export RUN_DIR --format {onnx,torchscript,exported-program}
  tune    search settings:    ppokit tune --env ID --trials N [--storage sqlite:///study.db]
  sweep   one run per seed:   ppokit sweep --env ID --seeds 1-5 [--jobs N] [train flags ...]
  sweep-aggregate             ppokit sweep-aggregate SWEEP_DIR (recompute the aggregate)
  sweep-compare               ppokit sweep-compare BASE_DIR OTHER_DIR [...] (which is better)

`ppokit <command> --help` documents every option.
"""


@dataclass(frozen=True)
class EvalArgs:
    """Re-evaluate a trained run deterministically."""

    run_dir: tyro.conf.Positional[Path]
    """Run directory holding config.json and checkpoints/."""
    episodes: int = 20
    """Evaluation episodes."""
    seed: int = 10_000
    """Seed of the evaluation environments (episode i uses seed + i)."""
    checkpoint: str = "latest"
    """latest, best (kept by training with --eval-every) or a file name in run_dir/checkpoints/."""
    video: bool = False
    """Also render episodes to mp4 in run_dir/videos/ (headless)."""
    video_episodes: int = 1
    """Episodes to render with --video."""


@dataclass(frozen=True)
class PlotArgs:
    """Plot learning curves (return vs env steps) of one or more runs to a PNG."""

    run_dirs: tyro.conf.Positional[tuple[Path, ...]]
    """Run directories or sweep dirs (several seeds of one env: their mean with a 95% CI band)."""
    out: Path | None = None
    """Output PNG (default: <first run_dir>/learning_curve.png)."""
    metric: str = "episode_return_mean"
    """Column of progress.csv to plot."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ppokit`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    handlers = {
        "train": _train,
        "eval": _eval,
        "plot": _plot,
        "export": run_export,
        "tune": run_tune,
        "sweep": run_sweep,
        "sweep-aggregate": run_sweep_aggregate,
        "sweep-compare": run_sweep_compare,
    }
    if command not in handlers:
        import difflib

        close = difflib.get_close_matches(command, list(handlers), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"ppokit: error: unknown command {command!r}.{hint}\n\n{_USAGE}", file=sys.stderr)
        return 2
    try:
        return handlers[command](rest)
    except UsageError as err:
        print(f"ppokit: error: {err}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------------------- train
def _train(argv: list[str]) -> int:
    # Every argument is parsed and checked before torch is imported: a rejection takes a
    # fraction of a second. Under torchrun (RANK, WORLD_SIZE, ... set) every rank runs this;
    # there `record` writes a failing rank's traceback where torchrun's error summary shows it.
    resolved = resolve_train_config(argv)
    from torch.distributed.elastic.multiprocessing.errors import record

    from ppokit.distributed import init_distributed, shutdown_distributed

    try:
        world = init_distributed(device="cpu")  # the trainer's networks live on the CPU
    except ValueError as err:
        raise UsageError(str(err)) from None
    if not world.is_distributed:
        return _train_ranks(resolved, world)
    try:
        code = record(_train_ranks)(resolved, world)
    except BaseException:
        shutdown_distributed()  # no barrier: the other ranks may be gone
        raise
    shutdown_distributed(synchronize=True)
    _exit_without_teardown(1 if code is None else code)


def _exit_without_teardown(code: int) -> NoReturn:
    """End a torchrun rank: atexit handlers and flushes, but no interpreter teardown.

    Why: gloo's worker threads outlive ``destroy_process_group`` and may still drop the last
    reference to a tensor that Python released, which takes the GIL. During interpreter
    teardown that thread is killed inside a C++ destructor and the process aborts ("terminate
    called without an active exception", exit -6) after a run that succeeded: 3 of 32 exits
    of a short CartPole run here, still 1 in ~170 with the barrier of ``shutdown_distributed``
    (pytorch/pytorch#179291 describes the same crash). Every file is closed by then, so
    skipping the teardown loses nothing, and the exit code torchrun sees is the run's.
    """
    # what a normal exit runs first (logging.shutdown, tqdm, ...); the stdlib has no public
    # spelling of it
    atexit._run_exitfuncs()  # noqa: SLF001, RUF100 (RUF100: until SLF001 is enabled)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _train_ranks(resolved: tuple[TrainConfig, Path, bool], world: World) -> int:
    # rank 0's config everywhere: the default run dir holds a timestamp ranks could disagree on
    cfg, run_dir = world.broadcast_object(resolved[:2])
    resume = resolved[2]
    problem = None
    if world.is_main:
        try:
            take_run_dir(run_dir, resume=resume, overwrite=cfg.overwrite)
        except (UsageError, RunDirError) as err:
            problem = str(err)
    problem = world.broadcast_object(problem)  # every rank stops on rank 0's refusal
    if problem is not None:
        raise UsageError(problem)
    try:
        return _run(cfg, run_dir, resume, world)
    finally:
        if world.is_main:
            unlock_run_dir(run_dir)


def _run(cfg: TrainConfig, run_dir: Path, resume: bool, world: World) -> int:
    from ppokit.train.guards import EnvironmentOutputError
    from ppokit.train.records.checkpoint import CheckpointWriteError
    from ppokit.train.trainer import PPOTrainer

    main = world.is_main
    try:
        trainer = PPOTrainer(cfg, run_dir=run_dir, resume=resume, world=world)
    except ValueError as err:  # a checkpoint that does not fit; --compile it cannot honour
        raise UsageError(str(err)) from None
    except (KeyError, RuntimeError) as err:
        if not resume:
            raise
        raise UsageError(
            f"--resume {run_dir}: checkpoints/latest.pt does not fit this run "
            f"({type(err).__name__}: {str(err).splitlines()[0]})."
        ) from None
    steps = trainer.env_steps + (trainer.num_iterations - trainer.iteration) * (
        cfg.batch_size * world.world_size
    )
    ranks = f" on {world.world_size} ranks" if world.is_distributed else ""
    if main:
        print(
            f"ppokit: training {cfg.env} (preset {preset_name(cfg.env)}, seed {cfg.seed}, "
            f"{trainer.update_kind} update) to {steps:,} steps{ranks} -> {run_dir}"
            + (" [resumed]" if resume else ""),
            flush=True,
        )
        if cfg.env_kwargs:  # a preset's kwargs change the task's observation: say so
            print(f"ppokit: gymnasium.make kwargs {json.dumps(cfg.env_kwargs)}", flush=True)
    if resume and main:
        print(
            f"ppokit: resumed at step {trainer.env_steps:,} (iteration {trainer.iteration})",
            flush=True,
        )
    try:
        result = trainer.train()
    except (CheckpointWriteError, EnvironmentOutputError) as err:
        raise UsageError(str(err)) from None
    except OSError as err:  # a log or config write: full disk, file-size limit, I/O error
        name = f" {err.filename!r}" if err.filename else ""
        raise UsageError(
            f"writing the run's files{name} in {str(run_dir)!r} failed: "
            f"{err.strerror or err}. Files already written are intact; fix the "
            f"cause, then continue with `ppokit train --resume {run_dir}`."
        ) from None
    if result.interrupted:
        if main:
            print(
                f"ppokit: interrupted at step {result.env_steps:,}; checkpoint saved to "
                f"{run_dir / 'checkpoints' / 'latest.pt'}. Continue with "
                f"`ppokit train --resume {run_dir}`.",
                file=sys.stderr,
                flush=True,
            )
        return 128 + (trainer.stop_signal or signal.SIGINT)
    if not main:
        return 0
    s = result.summary
    line = (
        f"ppokit: done: {s['env_steps']:,} steps in {s['wall_seconds']:.1f} s "
        f"({s['sps']:,.0f} steps/s)."
    )
    if "eval_return_mean" in s:
        line += (
            f" Deterministic eval over {s['eval_episodes']} episodes: "
            f"{s['eval_return_mean']:.1f} +/- {s['eval_return_std']:.1f}."
        )
    if "eval_success_rate" in s:
        line += f" Success rate {s['eval_success_rate']:.3f}."
    print(line)
    print(f"ppokit: summary in {run_dir / 'summary.json'}")
    return 0


# ---------------------------------------------------------------------------- eval
def _eval(argv: list[str]) -> int:
    args = tyro.cli(EvalArgs, args=argv, prog="ppokit eval")
    if args.episodes <= 0:
        raise UsageError(f"--episodes must be positive, got {args.episodes}.")
    from ppokit.train.deploy.policy import load_policy
    from ppokit.train.evaluation.evaluate import evaluate_policy, record_video
    from ppokit.train.records.checkpoint import CheckpointError

    try:
        actor, obs_norm, cfg = load_policy(args.run_dir, checkpoint=args.checkpoint)
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        raise UsageError(str(err)) from None
    res = evaluate_policy(
        actor,
        cfg.env,
        episodes=args.episodes,
        seed=args.seed,
        obs_normalizer=obs_norm,
        env_kwargs=cfg.env_kwargs or None,
    )
    print(
        f"{cfg.env}: deterministic eval over {len(res.returns)} episodes: "
        f"{res.mean:.2f} +/- {res.std:.2f} (min {min(res.returns):.1f}, "
        f"max {max(res.returns):.1f})"
        + ("" if res.success_rate is None else f", success rate {res.success_rate:.3f}")
    )
    if args.video:
        paths = record_video(
            actor,
            cfg.env,
            args.run_dir / "videos",
            episodes=args.video_episodes,
            seed=args.seed,
            obs_normalizer=obs_norm,
        )
        if holds_run(args.run_dir):
            record_written(args.run_dir, *(f"videos/{p.name}" for p in paths))
        for p in paths:
            print(f"video: {p}")
    return 0


# ---------------------------------------------------------------------------- plot
def _plot(argv: list[str]) -> int:
    args = tyro.cli(PlotArgs, args=argv, prog="ppokit plot")
    from ppokit.train.records.plot import plot_runs

    try:
        out = plot_runs(list(args.run_dirs), out=args.out, metric=args.metric)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise UsageError(str(err.args[0] if err.args else err)) from None
    print(f"plot: {out}")
    return 0
