"""The settings a sweep's seeds trained with: read back from their ``config.json``, compared.

A sweep dir records the train flags (``sweep.json``), but what a seed trains with is the flags
over the preset of the day and ppokit's defaults. When a preset changes between two runs of the
same command, the flags still match while the settings do not, so seeds added later would train
with other settings than the seeds already there. The resolved ``config.json`` of each seed is
what tells them apart; :func:`sweep_compare <ppokit.train.sweep.compare.compare_sweeps>` lists
those differences between sweeps, and ``ppokit sweep`` refuses to add seeds that would differ.

Example:
    >>> setting_differences([{"lr": 3e-4, "seed": 1}, {"lr": 1e-4, "seed": 2}])
    {'lr': [0.0003, 0.0001]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ppokit.train.settings.config import TrainConfig, config_to_dict
from ppokit.train.sweep.plan import seed_run_dir

__all__ = ["resolved_config", "setting_differences", "settings_as_flags"]

#: config fields that differ between any two runs and say nothing about the settings
_NOT_SETTINGS = frozenset({"seed", "run_dir", "overwrite", "progress", "track"})


def resolved_config(root: Path, seeds: list[int]) -> dict[str, Any] | None:
    """The ``config.json`` of the first of ``seeds`` that has one, or ``None``.

    A field the file lacks was added to ppokit after the run; it gets today's default, which
    by design keeps the behaviour the run had (a new field's default is the old behaviour).
    """
    defaults = config_to_dict(TrainConfig())
    for seed in seeds:
        try:
            saved = json.loads((seed_run_dir(root, seed) / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(saved, dict):
            return {**defaults, **saved}
    return None


def setting_differences(configs: list[dict[str, Any] | None]) -> dict[str, list[Any]]:
    """The settings whose resolved values differ between the configs, one value per config.

    A missing config (``None``) gives ``None`` for every field.
    """
    fields = sorted({k for c in configs if c for k in c} - _NOT_SETTINGS)
    values = {f: [None if c is None else c.get(f) for c in configs] for f in fields}
    return {f: v for f, v in values.items() if any(x != v[0] for x in v[1:])}


def settings_as_flags(values: dict[str, Any]) -> str:
    """``ppokit train`` flags that set each field to its value, as one shell-ready string.

    Example:
        >>> settings_as_flags({"gamma": 0.99, "anneal_lr": False, "hidden_sizes": [64, 64]})
        '--gamma 0.99 --no-anneal-lr --hidden-sizes 64 64'
    """
    parts = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list | tuple):
            parts.append(" ".join([flag, *map(str, value)]))
        elif isinstance(value, dict):
            parts.append(f"{flag} '{json.dumps(value)}'")
        elif value is None:
            continue  # no flag sets a field back to unset; the message lists it all the same
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)
