"""Whole runs on two torchrun ranks: ``--compile`` against the eager DDP run, and recurrent
cores (separate and shared) kept in step."""

from __future__ import annotations

from pathlib import Path

import pytest
from _dist_helpers import torchrun_worker

pytestmark = pytest.mark.distributed


@pytest.mark.slow  # two processes compile inductor graphs: too slow for the default suite
def test_compiled_ranks_average_their_gradients_like_ddp(tmp_path: Path) -> None:
    worker = Path(__file__).parent / "_compile_worker.py"
    result = torchrun_worker(worker, tmp_path / "result.json", timeout=900, dist_timeout=300)
    assert result["kind"] == "fused" and result["fused_calls"] == 7  # the first one is eager
    assert result["same_start"] and result["moved"] and result["same_on_ranks"]
    # inductor reorders float ops: equal to the eager DDP run up to rounding, after 8 steps
    assert result["max_diff_to_eager"] < 1e-4, result


def test_two_ranks_keep_separate_and_shared_recurrent_cores_in_step(tmp_path: Path) -> None:
    worker = Path(__file__).parent / "_recurrent_ddp_worker.py"
    result = torchrun_worker(worker, tmp_path / "result.json", timeout=120, dist_timeout=60)
    assert result["separate"]["wrapped"] >= 3  # encoder, core and head of the actor
    assert result["shared"]["wrapped"] == 0  # gradients all-reduced after backward instead
    for layout in ("separate", "shared"):
        assert result[layout]["same"] and result[layout]["moved"], layout
    assert result["averaged"]
