"""A trained policy back from a run directory: actor, frozen observation normaliser, config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
from torch import nn

from ppokit.envs.sources import EnvSource
from ppokit.envs.structured import open_env
from ppokit.train.build import build_for_config
from ppokit.train.normalization import ObservationNormalizer
from ppokit.train.records.checkpoint import load_checkpoint
from ppokit.train.records.rundir import checkpoint_path
from ppokit.train.settings.config import TrainConfig, config_from_dict

__all__ = ["checkpoint_path", "load_policy"]  # checkpoint_path: from rundir, re-exported


def load_policy(
    run_dir: str | Path,
    *,
    checkpoint: str = "latest",
    actor: nn.Module | None = None,
    env: EnvSource | None = None,
) -> tuple[Any, ObservationNormalizer, TrainConfig]:
    """The actor, frozen observation normaliser and config of a run directory's checkpoint.

    Args:
        run_dir: the run directory (holds ``checkpoints/``).
        checkpoint: ``"latest"``, ``"best"`` (written with ``eval_every``) or a file name
            inside ``run_dir/checkpoints``.
        actor: the network to load the weights into, for a run trained with a user's own
            actor (default: the MLP the config describes is built).
        env: the env source whose spaces size the built MLP (default: the config's ``env``,
            with its ``env_kwargs``); needed when the run trained on a callable or VectorEnv.

    Raises:
        FileNotFoundError: no such run dir or checkpoint.
        CheckpointError: the file is not a ppokit checkpoint.

    A recurrent actor (``--recurrent lstm/gru``) needs its state at every step: carry it with
    :class:`~ppokit.train.recurrent.state.PolicyState` (``evaluate_policy`` does).

    Example:
        >>> import tempfile
        >>> from ppokit.train.settings.presets import preset_config
        >>> from ppokit.train.trainer import PPOTrainer
        >>> run = tempfile.mkdtemp()
        >>> cfg = preset_config("CartPole-v1", total_steps=256, eval_episodes=0, progress=False)
        >>> _ = PPOTrainer(cfg, run_dir=run).train()
        >>> actor, obs_norm, loaded = load_policy(run)
        >>> loaded.env
        'CartPole-v1'
    """
    state = load_checkpoint(checkpoint_path(run_dir, checkpoint))
    cfg = config_from_dict(state["config"])
    source: EnvSource = cfg.env if env is None else env
    owned = not isinstance(source, gym.vector.VectorEnv)  # a VectorEnv of the caller's stays open
    spaces = open_env(
        source,
        1 if owned else None,
        env_kwargs=cfg.env_kwargs if env is None else None,
        mask_key=cfg.action_mask_key,
    )
    try:
        if actor is None:
            actor, _ = build_for_config(spaces, cfg)
        obs_norm = ObservationNormalizer(spaces.obs_shape, clip=cfg.obs_clip, enabled=cfg.obs_norm)
    finally:
        if owned:
            spaces.close()
    actor.load_state_dict(state["actor"])
    obs_norm.load_state_dict(state["obs_norm"])
    obs_norm.frozen = True
    actor.eval()
    return actor, obs_norm, cfg
