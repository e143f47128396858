"""``ppokit train``'s arguments: parsed, merged and checked before torch is imported.

:func:`resolve_train_config` turns the command line into ``(config, run_dir, resume)`` or a
:class:`UsageError` that says what is wrong and how to fix it; it creates and deletes nothing.
:func:`take_run_dir` then claims the run dir (lock, cleanup, ``--overwrite``) for the process
that trains. Nothing here imports torch, so a rejected command line ends in a fraction of a
second.
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import tyro

from ppokit.train.records.rundir import (
    RunDirError,
    check_run_dir,
    clean_stale_tmp,
    foreign_files,
    holds_run,
    lock_run_dir,
    remove_written,
)
from ppokit.train.settings.config import (
    DEPRECATED_NAMES,
    TrainConfig,
    config_from_dict,
    default_run_dir,
    validate_config,
)
from ppokit.train.settings.files import load_config_file
from ppokit.train.settings.presets import preset_config
from ppokit.train.settings.validation import check_resumable

__all__ = [
    "TrainArgs",
    "UsageError",
    "check_train_run_dir",
    "parse_env_kwargs",
    "resolve_train_config",
    "take_run_dir",
]


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
    """Keyword arguments for gymnasium.make as a JSON object, e.g. '{"max_episode_steps": 200}'
    (merged over those of the preset and --config: the keys given here win)."""


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
    saved = None
    if known.resume is not None:
        base = saved = _saved_config(known.resume)
        _check_env(base.env)  # and register it (ale-py's ids exist once ale_py is imported)
        if known.env is not None and known.env != base.env:
            raise UsageError(
                f"--resume {known.resume} holds a {base.env} run; it cannot continue as "
                f"--env {known.env}."
            )
    else:
        env_id = known.env or file_values.get("env") or TrainConfig.env
        if not isinstance(env_id, str):
            raise UsageError(
                f"{known.config}: Config field 'env' expects a string, got {env_id!r}."
            )
        _check_env(env_id)
        base = preset_config(env_id)
    try:
        base = config_from_dict(file_values, base=base)
    except (KeyError, TypeError) as err:
        raise UsageError(f"{known.config}: {err.args[0]}") from None
    args = tyro.cli(
        TrainArgs,
        default=TrainArgs(cfg=base, config=known.config, resume=known.resume),
        args=argv,
        prog="ppokit train",
    )
    cfg: TrainConfig = args.cfg
    if args.env_kwargs is not None:  # over the preset's and --config's: the keys given win
        cfg = replace(cfg, env_kwargs={**cfg.env_kwargs, **parse_env_kwargs(args.env_kwargs)})
    if args.resume is None:
        _check_env(cfg.env)
    try:
        validate_config(cfg)
        if saved is not None:  # what the checkpoint fixed, against flags and --config
            check_resumable(saved, cfg)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    run_dir = args.resume if args.resume is not None else cfg.run_dir or default_run_dir(cfg)
    cfg = replace(cfg, run_dir=run_dir)
    check_train_run_dir(run_dir, resume=args.resume is not None, overwrite=cfg.overwrite)
    _check_spaces(cfg.env, cfg.env_kwargs)  # builds one env: after every cheap check
    return cfg, run_dir, args.resume is not None


def _saved_config(run_dir: Path) -> TrainConfig:
    """The config saved in ``run_dir`` (the run ``--resume`` continues)."""
    saved = run_dir / "config.json"
    if not (run_dir / "checkpoints" / "latest.pt").is_file() or not saved.is_file():
        raise UsageError(
            f"--resume {run_dir}: no run to resume there (expected config.json and "
            "checkpoints/latest.pt). Start it without --resume first."
        )
    try:
        values = json.loads(saved.read_text(encoding="utf-8"))
        if not isinstance(values, dict):
            raise TypeError(f"expected a JSON object of fields, got {type(values).__name__}")
        return config_from_dict(values)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        reason = err.args[0] if isinstance(err, (KeyError, TypeError)) else err
        raise UsageError(
            f"--resume {run_dir}: {str(saved)!r} is not a readable ppokit config ({reason}). "
            "It was damaged or edited; restore it from a backup or start a new run."
        ) from None


def check_train_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a run dir that cannot be written, holds a run, or holds foreign files under
    the names a run writes; creates and deletes nothing (that is :func:`take_run_dir`)."""
    try:
        check_run_dir(run_dir)
    except RunDirError as err:
        raise UsageError(str(err)) from None
    if resume:
        return
    if holds_run(run_dir) and not overwrite:
        raise UsageError(
            f"run dir {str(run_dir)!r} already holds a run. Continue it with "
            f"`ppokit train --resume {run_dir}`, pick another --run-dir, or pass "
            "--overwrite to start over in it (which deletes only the files ppokit wrote)."
        )
    foreign = foreign_files(run_dir)
    if foreign:
        raise UsageError(
            f"run dir {str(run_dir)!r} holds {', '.join(foreign)}, which ppokit did not write "
            f"({'not a ppokit run' if not holds_run(run_dir) else 'added by hand'}), under "
            "names a run writes. ppokit does not overwrite them "
            f"them{' even with --overwrite' if overwrite else ''}; move them away or pick "
            "another --run-dir."
        )


def take_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Lock ``run_dir`` for this process, clean what a killed run left, and with
    ``--overwrite`` delete the previous run's files (the manifest's, nothing else)."""
    lock_run_dir(run_dir)  # held until the training ends or the process dies
    clean_stale_tmp(run_dir)
    if not resume:
        check_train_run_dir(run_dir, resume=False, overwrite=overwrite)  # again, under the lock
        remove_written(run_dir)


def _check_env(env_id: str) -> None:
    from ppokit.envs.sources import check_env_id

    try:
        check_env_id(env_id)
    except (ValueError, ImportError) as err:  # ImportError: an extra to install, named
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
            """'{"max_episode_steps": 200}' (quoted for the shell)."""
        ) from None
    if not isinstance(value, dict):
        raise UsageError(
            f"--env-kwargs expects a JSON object of keyword arguments for "
            f"gymnasium.make, got {type(value).__name__} {value!r}; e.g. "
            """'{"max_episode_steps": 200}'."""
        )
    return value


def _renamed_flags(argv: list[str]) -> list[str]:
    """Old flags (``--ent-coef``, ``--vf-coef``) under their new names, with a FutureWarning."""
    old = {
        f"--{o.replace('_', '-')}": f"--{n.replace('_', '-')}" for o, n in DEPRECATED_NAMES.items()
    }
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag in old:
            warnings.warn(
                f"{flag} is deprecated: use {old[flag]} (the loss's name).",
                FutureWarning,
                stacklevel=2,
            )
            arg = old[flag] + eq + value
        out.append(arg)
    return out


def _check_spaces(env_id: str, env_kwargs: dict[str, Any]) -> None:
    import gymnasium as gym

    from ppokit.envs.spaces import check_spaces

    try:
        env = gym.make(env_id, **env_kwargs)
    except gym.error.DependencyNotInstalled as err:
        raise UsageError(f"{env_id} needs an extra package: {err}") from None
    except TypeError as err:  # a keyword the env's constructor does not take
        raise UsageError(
            f"--env-kwargs {json.dumps(env_kwargs)} do not fit {env_id}: {err}"
        ) from None
    try:
        check_spaces(env.observation_space, env.action_space, env_id=env_id)
    except ValueError as err:
        raise UsageError(str(err)) from None
    finally:
        env.close()
