"""Every :class:`~ppokit.train.settings.config.TrainConfig` field checked up front: type and range.

:data:`RANGES` is the one table of allowed values; each field's docstring (so
``ppokit train --help``) quotes its entry, and a test keeps the two in step. A value outside
it is refused before any environment or network is built, so nothing breaks later (a
``clip_epsilon`` of 1.5 in the loss, a seed Gymnasium rejects, a NaN ``init_log_std`` at the
first action).

Example:
    >>> from ppokit.train.settings.config import TrainConfig
    >>> check_config(TrainConfig(clip_epsilon=1.5))
    Traceback (most recent call last):
    ...
    ValueError: --clip-epsilon must be a number in (0, 1), got 1.5.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any, Literal

from ppokit.train.settings.config import TrainConfig

__all__ = ["RANGES", "RESUME_FIXED", "check_config", "check_resumable"]

_SEED_MAX = 2**32 - 1
#: what a checkpoint fixes: the env and the shapes of the rollout and the networks
RESUME_FIXED = (
    "env",
    "num_envs",
    "num_steps",
    "hidden_sizes",
    "activation",
    "recurrent",
    "recurrent_size",
    "recurrent_shared",
    "share_trunk",
)


def _finite(v: float) -> bool:
    return math.isfinite(v)


#: field -> (allowed values in words, the test); fields absent here are checked by type only
RANGES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "env": ("a non-empty Gymnasium id", lambda v: bool(v.strip())),
    "seed": (f"an integer in [0, {_SEED_MAX}]", lambda v: 0 <= v <= _SEED_MAX),
    "total_steps": ("a positive integer", lambda v: v > 0),
    "num_envs": ("a positive integer", lambda v: v > 0),
    "num_steps": ("a positive integer", lambda v: v > 0),
    "lr": ("a positive finite number", lambda v: v > 0 and _finite(v)),
    "adam_eps": ("a positive finite number", lambda v: v > 0 and _finite(v)),
    "gamma": ("in (0, 1]", lambda v: 0 < v <= 1),
    "gae_lambda": ("in (0, 1]", lambda v: 0 < v <= 1),
    "num_epochs": ("a positive integer", lambda v: v > 0),
    "num_minibatches": ("a positive integer dividing num_envs * num_steps", lambda v: v > 0),
    "clip_epsilon": ("a number in (0, 1)", lambda v: 0 < v < 1),
    "entropy_coef": (">= 0 and finite", lambda v: v >= 0 and _finite(v)),
    "critic_coef": (">= 0 and finite", lambda v: v >= 0 and _finite(v)),
    "max_grad_norm": ("a positive finite number", lambda v: v > 0 and _finite(v)),
    "target_kl": ("positive and finite, or omitted", lambda v: v is None or (v > 0 and _finite(v))),
    "obs_clip": ("a positive finite number", lambda v: v > 0 and _finite(v)),
    "reward_clip": ("a positive finite number", lambda v: v > 0 and _finite(v)),
    "hidden_sizes": ("one or more positive widths", lambda v: len(v) > 0 and all(h > 0 for h in v)),
    "init_log_std": ("a number in [-20, 5]", lambda v: -20 <= v <= 5),
    "torch_threads": ("a positive integer", lambda v: v > 0),
    "eval_episodes": ("an integer >= 0", lambda v: v >= 0),
    "eval_every": ("an integer >= 0 (0: off)", lambda v: v >= 0),
    "checkpoint_every": ("a positive integer", lambda v: v > 0),
    "keep_checkpoint_every": ("an integer >= 0 (0: keep none)", lambda v: v >= 0),
    "action_mask_key": ("a non-empty name", lambda v: bool(v.strip())),
    "recurrent_size": ("a positive integer", lambda v: v > 0),
    "recurrent_seq_len": ("an integer >= 0 dividing num_steps (0: num_steps)", lambda v: v >= 0),
}


def check_config(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` (``TypeError`` for a wrong type) at the first field of ``cfg``
    outside :data:`RANGES`, or sizes that contradict each other; say what would be valid.

    Example:
        >>> check_config(TrainConfig(seed=-1))
        Traceback (most recent call last):
        ...
        ValueError: --seed must be an integer in [0, 4294967295], got -1.
    """
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        _check_type(f.name, value, hints[f.name])
        rule = RANGES.get(f.name)
        if rule is not None and not rule[1](value):
            raise ValueError(f"--{_flag(f.name)} must be {rule[0]}, got {value!r}.")
    if cfg.num_minibatches > cfg.batch_size:
        raise ValueError(
            f"num_minibatches={cfg.num_minibatches} is larger than the batch num_envs * num_steps"
            f" = {cfg.num_envs} * {cfg.num_steps} = {cfg.batch_size}: a minibatch would be "
            "empty. Lower --num-minibatches or raise --num-envs/--num-steps."
        )
    from ppokit.train.records.tracking import check_tracker

    check_tracker(cfg.track)  # a missing package: refused before any work
    if cfg.eval_every and not cfg.eval_episodes:
        raise ValueError(
            f"--eval-every {cfg.eval_every} evaluates eval_episodes episodes, but "
            "--eval-episodes is 0; set --eval-episodes to a positive count (e.g. 10) or "
            "--eval-every 0."
        )
    if cfg.device == "cuda":  # refused before any work where CUDA is missing (needs torch)
        from ppokit.train.device import resolve_device

        resolve_device(cfg.device)
    if cfg.batch_size % cfg.num_minibatches:
        raise ValueError(
            f"The batch num_envs * num_steps = {cfg.num_envs} * {cfg.num_steps} = "
            f"{cfg.batch_size} is not divisible by num_minibatches={cfg.num_minibatches}; "
            "choose sizes so that every minibatch has the same number of transitions."
        )
    if cfg.recurrent != "none":
        from ppokit.train.recurrent.sequences import check_recurrent_config

        check_recurrent_config(cfg)  # sequence splits and options it cannot honour


def check_resumable(saved: TrainConfig, cfg: TrainConfig) -> None:
    """Raise ``ValueError`` when ``cfg`` changes what a checkpoint trained with ``saved`` fixed
    (:data:`RESUME_FIXED`), naming the field and how to fix it.

    Example:
        >>> check_resumable(TrainConfig(), TrainConfig(lr=1e-4))  # a new lr is fine
        >>> check_resumable(TrainConfig(), TrainConfig(num_envs=2))
        Traceback (most recent call last):
        ...
        ValueError: Cannot resume: the checkpoint was trained with num_envs=8 but this run ...
    """
    for name in RESUME_FIXED:
        if getattr(saved, name) != getattr(cfg, name):
            raise ValueError(
                f"Cannot resume: the checkpoint was trained with {name}="
                f"{getattr(saved, name)!r} but this run has {name}="
                f"{getattr(cfg, name)!r}. Drop the override of --{_flag(name)} (it cannot "
                "change within a run); if the checkpoint was copied from another run, put "
                "this run's own back; or start a new run with another --run-dir."
            )


def _check_type(name: str, value: Any, hint: Any) -> None:
    """A ``TypeError`` when ``value`` is not of the field's type (bools are not numbers)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"--{_flag(name)} must be one of {list(args)}, got {value!r}.")
        return
    if hint is bool:
        ok = isinstance(value, bool)
        kind = "true/false"
    elif hint is int:
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif hint is float or (float in args and type(None) in args):
        ok = (value is None and type(None) in args) or (
            isinstance(value, (int, float)) and not isinstance(value, bool)
        )
        kind = "a number"
    elif hint is str:
        ok, kind = isinstance(value, str), "a string"
    elif origin is tuple:
        ok = isinstance(value, tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        kind = "a tuple of integers"
    elif origin is dict:
        ok, kind = (
            isinstance(value, dict) and all(isinstance(k, str) for k in value),
            "a dict with string keys",
        )
    else:  # run_dir: a path or None
        return
    if not ok:
        raise TypeError(
            f"Config field {name!r} expects {kind}, got {value!r} ({type(value).__name__})."
        )


def _flag(name: str) -> str:
    return name.replace("_", "-")
