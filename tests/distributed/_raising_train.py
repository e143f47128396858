"""``ppokit train`` whose rank 1 raises in iteration 2: for test_torchrun_train.py.

Run as ``torchrun --nproc-per-node 2 tests/distributed/_raising_train.py train ...``. The
failure is injected here, in the test, so the library carries no debug hook.
"""

from __future__ import annotations

import os

from ppokit.train import trainer
from ppokit.train.cli.main import main

_update = trainer.PPOTrainer.update


def _failing_update(self, rollout):
    if self.iteration == 2 and os.environ.get("RANK") == "1":
        raise RuntimeError("injected failure on rank 1 at iteration 2")
    return _update(self, rollout)


trainer.PPOTrainer.update = _failing_update

if __name__ == "__main__":
    raise SystemExit(main())
