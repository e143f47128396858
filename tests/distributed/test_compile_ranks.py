"""``--compile`` under torchrun: two gloo ranks, the compiled run against the eager DDP run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# two processes compile inductor graphs: too slow for the default suite
pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_compiled_ranks_average_their_gradients_like_ddp(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PPOKIT_DIST_TIMEOUT": "300"}
    worker = Path(__file__).parent / "_compile_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*cmd, str(worker), str(out)], capture_output=True, text=True, timeout=900, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["kind"] == "fused" and result["fused_calls"] == 7  # the first one is eager
    assert result["same_start"] and result["moved"] and result["same_on_ranks"]
    # inductor reorders float ops: equal to the eager DDP run up to rounding, after 8 steps
    assert result["max_diff_to_eager"] < 1e-4, result
