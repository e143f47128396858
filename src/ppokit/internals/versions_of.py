"""The in-place version counters of tensors (``Tensor._version``), read in one place.

Every in-place write to a tensor (an optimizer step on a parameter, a rollout buffer being
refilled) increments its counter, which is how autograd itself detects a tensor changed after
it was saved. :class:`ppokit.modules.cnn.SharedTrunk` keys its one-call memo on them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["tensor_versions"]


def tensor_versions(tensors: Iterable[torch.Tensor]) -> tuple[int, ...]:
    """The version counter of each tensor (not defined for inference tensors).

    Example:
        >>> t = torch.zeros(2)
        >>> before = tensor_versions([t])
        >>> _ = t.add_(1)
        >>> tensor_versions([t])[0] == before[0] + 1
        True
    """
    return tuple(t._version for t in tensors)
