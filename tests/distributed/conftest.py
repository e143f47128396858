"""One 2-rank gloo session shared by the tests of this directory (see _workers.py)."""

from __future__ import annotations

import pytest
from _dist_helpers import free_port, run_ranks
from _workers import all_workers


@pytest.fixture(scope="session")
def gloo_results() -> list[dict]:
    """Per rank: {"grads": ..., "stats": ..., "silent": ...}; fails if 120 s pass."""
    return run_ranks(all_workers, 2, free_port(), timeout=120)
