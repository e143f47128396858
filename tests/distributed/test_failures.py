"""A rank that stops answering or raises must end the job with an error, never a hang."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.distributed


def test_a_collective_without_its_peer_raises_after_the_timeout(gloo_results) -> None:
    # _workers.silent_peer_worker: init_distributed(timeout=2); rank 1 never joins rank 0's
    # all-reduce, which raises instead of hanging (all within the session's 120 s deadline)
    message = gloo_results[0]["silent"]["raised"]
    assert message, "the all-reduce returned although rank 1 never joined it"
    assert "timed out" in message.lower() or "timeout" in message.lower(), message
