"""Building TensorDicts faster through tensordict's private constructor, where supported."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from ppokit.internals.versions import direct_path_supported

__all__ = ["scalar_tensordict"]


def scalar_tensordict(entries: dict[str, torch.Tensor]) -> TensorDict:
    """A TensorDict with no batch dims holding ``entries`` (tensors of any shape).

    On supported tensordict releases the per-entry checks of the public constructor are
    skipped (every entry trivially fits ``batch_size=[]``; half the cost of a loss's
    output); otherwise the public constructor is used.

    Example:
        >>> scalar_tensordict({"loss": torch.tensor(1.0)})["loss"]
        tensor(1.)
    """
    new_unsafe = getattr(TensorDict, "_new_unsafe", None)
    if new_unsafe is not None and direct_path_supported():
        return new_unsafe(entries, batch_size=torch.Size([]))
    return TensorDict(entries, batch_size=[])
