"""Training in one call: ``train(env, ...)`` builds a :class:`~ppokit.PPOTrainer` and runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ppokit.envs.sources import EnvSource
from ppokit.train.loop import TrainResult
from ppokit.train.trainer import PPOTrainer

__all__ = ["train"]


def train(
    env: EnvSource,
    *,
    actor: nn.Module | None = None,
    critic: nn.Module | None = None,
    run_dir: str | Path | None = None,
    **config: Any,
) -> TrainResult:
    """Train PPO on ``env`` in one call: ``PPOTrainer(env=env, ...).train()``.

    ``config``: any :class:`TrainConfig` field, over the preset of ``env`` (an id) or the
    dataclass defaults (a callable or VectorEnv).

    Example:
        >>> import tempfile
        >>> train("CartPole-v1", run_dir=tempfile.mkdtemp(), total_steps=256,
        ...       eval_episodes=0, progress=False).env_steps
        256
    """
    return PPOTrainer(env=env, actor=actor, critic=critic, run_dir=run_dir, **config).train()
