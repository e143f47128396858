"""Random state of a run: seeding, and the RNG streams as plain tensors for checkpoints.

A checkpoint holds python's ``random``, numpy's legacy global RNG, torch's global generator
and the trainer's shuffle generator, so a resumed run draws the same numbers it would have.

Example:
    >>> gen = torch.Generator().manual_seed(0)
    >>> saved = rng_state(gen)
    >>> a = (random.random(), float(np.random.rand()), float(torch.rand(1)),
    ...      int(torch.randint(9, (1,), generator=gen)))
    >>> load_rng_state(saved, gen)
    >>> a == (random.random(), float(np.random.rand()), float(torch.rand(1)),
    ...       int(torch.randint(9, (1,), generator=gen)))
    True
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["load_rng_state", "rng_state", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's legacy global RNG and torch.

    Example:
        >>> seed_everything(0); a = torch.rand(1); seed_everything(0)
        >>> bool(torch.rand(1) == a)
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(shuffle: torch.Generator) -> dict[str, Any]:
    """The global RNG streams and ``shuffle``'s, as tensors and Python scalars only.

    (``torch.load(weights_only=True)`` reads them back: no numpy objects are pickled.)
    """
    _, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "shuffle": shuffle.get_state(),
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np.asarray(key).astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def load_rng_state(state: dict[str, Any], shuffle: torch.Generator) -> None:
    """Restore what :func:`rng_state` returned (into the globals and ``shuffle``)."""
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    random.setstate(_to_tuple(state["python"]))
    npk = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npk["key"].numpy().astype(np.uint32),
            npk["pos"],
            npk["has_gauss"],
            npk["cached_gaussian"],
        )
    )


def _to_tuple(value: Any) -> Any:
    # a checkpoint may hold python's state as lists: random.setstate wants nested tuples
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
