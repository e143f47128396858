"""``ppokit train | eval | plot``: the command line (also ``python -m ppokit``).

``train`` resolves its configuration in layers (dataclass defaults, the preset of ``--env``'s
task family, a ``--config`` JSON/TOML file, then ``--<field>`` flags), checks everything that
can be checked before any work (env id, action space, sizes, rates, the run dir), then trains.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import signal
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import tyro

from ppokit.train.config import (
    DEPRECATED_NAMES,
    TrainConfig,
    config_from_dict,
    default_run_dir,
    load_config_file,
    validate_config,
)
from ppokit.train.presets import preset_config, preset_name

if TYPE_CHECKING:
    from ppokit.distributed.core import World

__all__ = ["EvalArgs", "PlotArgs", "TrainArgs", "main"]

_USAGE = """usage: ppokit {train,eval,plot} ...

Clipped PPO on Gymnasium tasks.

commands:
  train   train a policy:     ppokit train --env CartPole-v1 [--seed S] [--<field> VALUE ...]
  eval    re-evaluate a run:  ppokit eval RUN_DIR [--episodes N] [--video]
  plot    learning curves:    ppokit plot RUN_DIR [RUN_DIR ...] [--out FILE]

`ppokit <command> --help` documents every option.
"""


class UsageError(Exception):
    """Bad command-line input, reported as ``ppokit: error: ...`` with exit code 2."""


@dataclass(frozen=True)
class TrainArgs:
    """Train PPO on a Gymnasium task. Values come from the preset of --env's task family,
    then --config FILE, then the flags below."""

    cfg: Annotated[TrainConfig, tyro.conf.OmitArgPrefixes]
    config: Path | None = None
    """JSON or TOML file of field values, applied over the preset and under the flags."""
    resume: Path | None = None
    """Continue the run in this directory from its latest checkpoint (flags may extend it)."""
    env_kwargs: str | None = None
    """Keyword arguments for gymnasium.make as a JSON object, e.g. '{"max_episode_steps": 200}'."""


@dataclass(frozen=True)
class EvalArgs:
    """Re-evaluate a trained run deterministically."""

    run_dir: tyro.conf.Positional[Path]
    """Run directory holding config.json and checkpoints/."""
    episodes: int = 20
    """Evaluation episodes."""
    seed: int = 10_000
    """Seed of the evaluation environments (episode i uses seed + i)."""
    checkpoint: str = "latest.pt"
    """Checkpoint file name inside run_dir/checkpoints/."""
    video: bool = False
    """Also render episodes to mp4 in run_dir/videos/ (headless)."""
    video_episodes: int = 1
    """Episodes to render with --video."""


@dataclass(frozen=True)
class PlotArgs:
    """Plot learning curves (return vs env steps) of one or more runs to a PNG."""

    run_dirs: tyro.conf.Positional[tuple[Path, ...]]
    """Run directories (several seeds of one env are drawn as mean and spread)."""
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
    handlers = {"train": _train, "eval": _eval, "plot": _plot}
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
def resolve_train_config(argv: list[str]) -> tuple[TrainConfig, Path, bool]:
    """Parse ``ppokit train`` arguments into (config, run_dir, resume), checking them all.

    Raises:
        UsageError: with a message for the user; nothing has been created yet.
    """
    argv = _renamed_flags(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env")
    pre.add_argument("--config", type=Path)
    pre.add_argument("--resume", type=Path)
    known, _ = pre.parse_known_args(argv)
    try:
        file_values = load_config_file(known.config) if known.config else {}
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    if known.resume is not None:
        saved = known.resume / "config.json"
        if not (known.resume / "checkpoints" / "latest.pt").is_file() or not saved.is_file():
            raise UsageError(
                f"--resume {known.resume}: no run to resume there (expected config.json and "
                "checkpoints/latest.pt). Start it without --resume first."
            )
        base = config_from_dict(json.loads(saved.read_text()))
        if known.env is not None and known.env != base.env:
            raise UsageError(
                f"--resume {known.resume} holds a {base.env} run; it cannot continue as "
                f"--env {known.env}."
            )
    else:
        env_id = known.env or file_values.get("env") or TrainConfig.env
        _check_env(env_id)
        base = preset_config(env_id)
    try:
        base = config_from_dict(file_values, base=base)
    except (KeyError, TypeError) as err:
        raise UsageError(f"{known.config}: {err.args[0]}") from None
    args = tyro.cli(TrainArgs, default=TrainArgs(cfg=base, config=known.config,
                                                 resume=known.resume),
                    args=argv, prog="ppokit train")
    cfg: TrainConfig = args.cfg
    if args.env_kwargs is not None:
        cfg = replace(cfg, env_kwargs=parse_env_kwargs(args.env_kwargs))
    if args.resume is None:
        _check_env(cfg.env)
    try:
        validate_config(cfg)
    except ValueError as err:
        raise UsageError(str(err)) from None
    _check_spaces(cfg.env, cfg.env_kwargs)
    if args.resume is not None:
        run_dir = args.resume
        cfg = replace(cfg, run_dir=run_dir)
    else:
        run_dir = cfg.run_dir or default_run_dir(cfg)
        cfg = replace(cfg, run_dir=run_dir)
        holds_run = (run_dir / "config.json").exists() or (run_dir / "checkpoints").exists()
        if holds_run and not cfg.overwrite:
            raise UsageError(
                f"run dir {str(run_dir)!r} already holds a run. Continue it with "
                f"`ppokit train --resume {run_dir}`, pick another --run-dir, or pass "
                "--overwrite to start over in it."
            )
        if holds_run:
            _remove_run_files(run_dir)
    return cfg, run_dir, args.resume is not None


_RUN_FILES = ("config.json", "progress.csv", "summary.json", "learning_curve.png")
_RUN_DIRS = ("checkpoints", "tb", "videos")


def _remove_run_files(run_dir: Path) -> None:
    """Delete what a previous ppokit run wrote in ``run_dir`` (and nothing else)."""
    import shutil

    for name in _RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in _RUN_DIRS:
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _check_env(env_id: str) -> None:
    from ppokit.envs.gym import check_env_id

    try:
        check_env_id(env_id)
    except ValueError as err:
        raise UsageError(str(err)) from None


def parse_env_kwargs(text: str) -> dict[str, Any]:
    """The ``--env-kwargs`` JSON object as a dict.

    Raises:
        UsageError: not JSON, or JSON that is not an object.

    Example:
        >>> parse_env_kwargs('{"max_episode_steps": 200}')
        {'max_episode_steps': 200}
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(
            f"--env-kwargs {text!r} is not valid JSON ({err}); pass an object such as "
            """'{"max_episode_steps": 200}' (quoted for the shell).""") from None
    if not isinstance(value, dict):
        raise UsageError(f"--env-kwargs expects a JSON object of keyword arguments for "
                         f"gymnasium.make, got {type(value).__name__} {value!r}; e.g. "
                         """'{"max_episode_steps": 200}'.""")
    return value


def _renamed_flags(argv: list[str]) -> list[str]:
    """Old flags (``--ent-coef``, ``--vf-coef``) under their new names, with a FutureWarning."""
    old = {f"--{o.replace('_', '-')}": f"--{n.replace('_', '-')}"
           for o, n in DEPRECATED_NAMES.items()}
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag in old:
            warnings.warn(f"{flag} is deprecated: use {old[flag]} (the loss's name).",
                          FutureWarning, stacklevel=2)
            arg = old[flag] + eq + value
        out.append(arg)
    return out


def _check_spaces(env_id: str, env_kwargs: dict[str, Any]) -> None:
    import gymnasium as gym

    from ppokit.envs.gym import check_spaces

    try:
        env = gym.make(env_id, **env_kwargs)
    except gym.error.DependencyNotInstalled as err:
        raise UsageError(f"{env_id} needs an extra package: {err}") from None
    except TypeError as err:  # a keyword the env's constructor does not take
        raise UsageError(f"--env-kwargs {json.dumps(env_kwargs)} do not fit {env_id}: {err}"
                         ) from None
    try:
        check_spaces(env.observation_space, env.action_space, env_id=env_id)
    except ValueError as err:
        raise UsageError(str(err)) from None
    finally:
        env.close()


def _train(argv: list[str]) -> int:
    # Under torchrun (RANK, WORLD_SIZE, ... set) every rank runs this; otherwise one process.
    # There `record` writes a failing rank's traceback where torchrun's error summary shows it.
    from torch.distributed.elastic.multiprocessing.errors import record

    from ppokit.distributed.core import init_distributed, shutdown_distributed

    try:
        world = init_distributed(device="cpu")  # the trainer's networks live on the CPU
    except ValueError as err:
        raise UsageError(str(err)) from None
    if not world.is_distributed:
        return _train_ranks(argv, world)
    try:
        code = record(_train_ranks)(argv, world)
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


def _train_ranks(argv: list[str], world: World) -> int:
    cfg, run_dir, resume = resolve_train_config(argv)
    # rank 0's config everywhere: the default run dir holds a timestamp ranks could disagree on
    cfg, run_dir = world.broadcast_object((cfg, run_dir))
    from ppokit.train.trainer import PPOTrainer, check_world_support

    try:
        check_world_support(cfg, world)
    except ValueError as err:
        raise UsageError(str(err)) from None

    main = world.is_main
    try:
        trainer = PPOTrainer(cfg, run_dir=run_dir, resume=resume, world=world)
    except ValueError as err:  # e.g. --compile that the fused update cannot honour
        raise UsageError(str(err)) from None
    steps = trainer.env_steps + (trainer.num_iterations - trainer.iteration) * (
        cfg.batch_size * world.world_size)
    ranks = f" on {world.world_size} ranks" if world.is_distributed else ""
    if main:
        print(f"ppokit: training {cfg.env} (preset {preset_name(cfg.env)}, seed {cfg.seed}, "
              f"{trainer.update_kind} update) to {steps:,} steps{ranks} -> {run_dir}"
              + (" [resumed]" if resume else ""), flush=True)
    if resume and main:
        print(f"ppokit: resumed at step {trainer.env_steps:,} (iteration {trainer.iteration})",
              flush=True)
    result = trainer.train()
    if result.interrupted:
        if main:
            print(f"ppokit: interrupted at step {result.env_steps:,}; checkpoint saved to "
                  f"{run_dir / 'checkpoints' / 'latest.pt'}. Continue with "
                  f"`ppokit train --resume {run_dir}`.", file=sys.stderr, flush=True)
        return 128 + (trainer.stop_signal or signal.SIGINT)
    if not main:
        return 0
    s = result.summary
    line = (f"ppokit: done: {s['env_steps']:,} steps in {s['wall_seconds']:.1f} s "
            f"({s['sps']:,.0f} steps/s).")
    if "eval_return_mean" in s:
        line += (f" Deterministic eval over {s['eval_episodes']} episodes: "
                 f"{s['eval_return_mean']:.1f} +/- {s['eval_return_std']:.1f}.")
    print(line)
    print(f"ppokit: summary in {run_dir / 'summary.json'}")
    return 0


# ---------------------------------------------------------------------------- eval
def _eval(argv: list[str]) -> int:
    args = tyro.cli(EvalArgs, args=argv, prog="ppokit eval")
    if args.episodes <= 0:
        raise UsageError(f"--episodes must be positive, got {args.episodes}.")
    from ppokit.train.checkpoint import CheckpointError
    from ppokit.train.evaluate import evaluate_policy, record_video
    from ppokit.train.policy import load_policy

    try:
        actor, obs_norm, cfg = load_policy(args.run_dir, checkpoint=args.checkpoint)
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        raise UsageError(str(err)) from None
    res = evaluate_policy(actor, cfg.env, episodes=args.episodes, seed=args.seed,
                          obs_normalizer=obs_norm, env_kwargs=cfg.env_kwargs or None)
    print(f"{cfg.env}: deterministic eval over {len(res.returns)} episodes: "
          f"{res.mean:.2f} +/- {res.std:.2f} (min {min(res.returns):.1f}, "
          f"max {max(res.returns):.1f})")
    if args.video:
        paths = record_video(actor, cfg.env, args.run_dir / "videos",
                             episodes=args.video_episodes, seed=args.seed,
                             obs_normalizer=obs_norm)
        for p in paths:
            print(f"video: {p}")
    return 0


# ---------------------------------------------------------------------------- plot
def _plot(argv: list[str]) -> int:
    args = tyro.cli(PlotArgs, args=argv, prog="ppokit plot")
    from ppokit.train.plot import plot_runs

    try:
        out = plot_runs(list(args.run_dirs), out=args.out, metric=args.metric)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise UsageError(str(err.args[0] if err.args else err)) from None
    print(f"plot: {out}")
    return 0
