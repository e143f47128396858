"""ppokit.distributed: multi-process training through torch.distributed (DDP under torchrun)."""

from ppokit.distributed.core import (
    RunningStatsMerger,
    World,
    global_moments,
    global_standardize,
    init_distributed,
    rank_seed,
    shutdown_distributed,
    unwrap_ddp,
    wrap_ddp,
)

__all__ = [
    "RunningStatsMerger",
    "World",
    "global_moments",
    "global_standardize",
    "init_distributed",
    "rank_seed",
    "shutdown_distributed",
    "unwrap_ddp",
    "wrap_ddp",
]
