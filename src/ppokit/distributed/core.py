"""Transitional alias of :mod:`ppokit.distributed` for ``train/`` until it imports the package.

The code lives in ``world.py``, ``ddp.py`` and ``stats.py``; this module only re-exports it so
``ppokit.train`` keeps working on this branch. Delete it once ``train/trainer.py`` and
``train/cli.py`` import from ``ppokit.distributed``.
"""

from ppokit.distributed import (
    DEFAULT_TIMEOUT_S,
    RunningStatsMerger,
    World,
    global_mean_weight,
    global_moments,
    global_standardize,
    init_distributed,
    rank_seed,
    shutdown_distributed,
    unwrap_ddp,
    world_from_env,
    wrap_ddp,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "RunningStatsMerger",
    "World",
    "global_mean_weight",
    "global_moments",
    "global_standardize",
    "init_distributed",
    "rank_seed",
    "shutdown_distributed",
    "unwrap_ddp",
    "world_from_env",
    "wrap_ddp",
]
