"""A shared CNN trunk trains under DDP: the ranks stay identical, checkpoints keep plain keys."""

from __future__ import annotations

import pytest
import torch
from _dist_helpers import run_ranks
from _image_worker import shared_trunk_worker

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_a_shared_trunk_trains_on_two_ranks() -> None:
    ranks = run_ranks(shared_trunk_worker, 2, timeout=120)
    # the same initial weights (DDP broadcasts rank 0's), different data, one averaged step
    for p0, p1 in zip(ranks[0]["after"], ranks[1]["after"], strict=True):
        torch.testing.assert_close(p0, p1, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(ranks[0]["before"], ranks[0]["after"]))
    # trunk (3 convs + fc: 8 tensors) + policy head 2 + value head 2, each stepped once
    assert ranks[0]["num_params"] == 12
    # the checkpoint's keys are a single process's: no DDP "module." inside the trunk
    keys = ranks[0]["keys"]
    assert "module.0.module.0.trunk.convs.0.weight" in keys, keys
    assert not any("trunk.module." in key for key in keys), keys
