"""TorchRL yardstick: run TorchRL's own PPO-loss tests with ppokit's classes swapped in.

This conftest sits beside TorchRL's ``test_ppo.py``, ``test_loss_module.py`` and
``_objectives_common.py`` (copied from pytorch/rl ``test/objectives/``; see README.md).
pytest imports it before it imports the test modules, so the swap below is in place
when ``from torchrl.objectives import PPOLoss, ...`` runs in them.

Environment:
  PPOKIT_SWAP=1 (default)  replace PPOLoss, ClipPPOLoss, KLPENPPOLoss in
                           ``torchrl.objectives`` and ``torchrl.objectives.ppo`` by
                           ``ppokit``'s classes.
  PPOKIT_SWAP=0            leave TorchRL's classes alone (checks the selection itself).

It also lifts TestPPO's upstream ``skipif(not _has_transformers)``: none of its tests
needs ``transformers``.
"""

from __future__ import annotations

import os

import torchrl.objectives
import torchrl.objectives.ppo

_SWAPPED = ("PPOLoss", "ClipPPOLoss", "KLPENPPOLoss")
SWAP = os.environ.get("PPOKIT_SWAP", "1") not in ("0", "", "false", "no")

if SWAP:
    from ppokit import ClipPPOLoss, KLPENPPOLoss, PPOLoss

    _ours = {"PPOLoss": PPOLoss, "ClipPPOLoss": ClipPPOLoss, "KLPENPPOLoss": KLPENPPOLoss}
    for _mod in (torchrl.objectives, torchrl.objectives.ppo):
        for _name in _SWAPPED:
            setattr(_mod, _name, _ours[_name])

_TRANSFORMERS_SKIP = "requires transformers lib"


def _drop_transformers_skip(node) -> None:
    node.own_markers[:] = [
        m
        for m in node.own_markers
        if not (m.name == "skipif" and m.kwargs.get("reason") == _TRANSFORMERS_SKIP)
    ]


def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        node = item
        while node is not None:
            if id(node) not in seen:
                seen.add(id(node))
                _drop_transformers_skip(node)
            node = node.parent


def pytest_report_header(config):
    import torchrl

    where = {n: getattr(torchrl.objectives, n).__module__ for n in _SWAPPED}
    return [
        f"torchrl {torchrl.__version__}; PPOKIT_SWAP={int(SWAP)}; classes: {where}",
    ]
