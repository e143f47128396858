"""ppokit.distributed: multi-process training through torch.distributed (DDP under torchrun).

Four jobs, one module each:

- :mod:`ppokit.distributed.world`: who this process is (:class:`World`), joining and leaving
  the process group (:func:`init_distributed`, :func:`shutdown_distributed`), per-rank seeds;
- :mod:`ppokit.distributed.ddp`: DistributedDataParallel around the networks inside TensorDict
  modules (:func:`wrap_ddp`, :func:`unwrap_ddp`);
- :mod:`ppokit.distributed.shared`: gradients averaged by hand for an actor and a critic that
  share parameters (:class:`GradientAverager`, :func:`broadcast_parameters`);
- :mod:`ppokit.distributed.stats`: statistics over every rank's data (:func:`global_moments`,
  :func:`global_standardize`, :func:`global_mean_weight`, :class:`RunningStatsMerger`).

Example:
    >>> import torch
    >>> from ppokit.distributed import World, global_standardize
    >>> global_standardize(torch.tensor([2.0, 4.0, 6.0]), World())  # one process
    tensor([-1.,  0.,  1.])
"""

from ppokit.distributed.ddp import unwrap_ddp, wrap_ddp
from ppokit.distributed.shared import (
    GradientAverager,
    broadcast_parameters,
    shared_outside_trunks,
    shares_parameters,
)
from ppokit.distributed.stats import (
    RunningStatsMerger,
    global_mean_weight,
    global_moments,
    global_standardize,
)
from ppokit.distributed.world import (
    DEFAULT_TIMEOUT_S,
    World,
    init_distributed,
    rank_seed,
    shutdown_distributed,
    world_from_env,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "GradientAverager",
    "RunningStatsMerger",
    "World",
    "broadcast_parameters",
    "global_mean_weight",
    "global_moments",
    "global_standardize",
    "init_distributed",
    "rank_seed",
    "shared_outside_trunks",
    "shares_parameters",
    "shutdown_distributed",
    "unwrap_ddp",
    "world_from_env",
    "wrap_ddp",
]
