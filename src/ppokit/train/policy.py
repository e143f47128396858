"""A trained policy back from a run directory: actor, frozen observation normaliser, config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
from torch import nn

from ppokit.envs.gym import GymVecEnv
from ppokit.envs.sources import EnvSource
from ppokit.train.build import build_actor_critic
from ppokit.train.checkpoint import load_checkpoint
from ppokit.train.config import TrainConfig, config_from_dict
from ppokit.train.normalization import ObservationNormalizer

__all__ = ["checkpoint_path", "load_policy"]

#: short names of the checkpoints a run writes
_SHORT = {"latest": "latest.pt", "best": "best.pt"}


def checkpoint_path(run_dir: str | Path, checkpoint: str = "latest") -> Path:
    """The file ``checkpoint`` names in ``run_dir/checkpoints``: ``"latest"``, ``"best"`` or a
    file name there (``"step_4096.pt"``).

    Raises:
        FileNotFoundError: no such file, saying why (``best`` needs ``--eval-every``).

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> (run / "checkpoints").mkdir(); _ = (run / "checkpoints" / "latest.pt").write_text("")
        >>> checkpoint_path(run, "latest").name
        'latest.pt'
        >>> checkpoint_path(run, "best")
        Traceback (most recent call last):
        ...
        FileNotFoundError: No best checkpoint in ...: best.pt is written by training with ...
    """
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / _SHORT.get(checkpoint, checkpoint)
    if path.is_file():
        return path
    if not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(
            f"No checkpoint {str(path)!r}: {str(run_dir)!r} has no checkpoints/; is it a "
            "ppokit run directory?")
    if checkpoint == "best":
        raise FileNotFoundError(
            f"No best checkpoint in {str(run_dir)!r}: best.pt is written by training with "
            "--eval-every N (evaluation during training). Use --checkpoint latest.")
    have = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    raise FileNotFoundError(
        f"No checkpoint {str(path)!r}; this run has {have or 'none'} ('latest' and 'best' "
        "name latest.pt and best.pt).")


def load_policy(run_dir: str | Path, *, checkpoint: str = "latest",
                actor: nn.Module | None = None, env: EnvSource | None = None,
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

    Example:
        >>> import tempfile
        >>> from ppokit.train.presets import preset_config
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
    spaces = GymVecEnv(source, 1 if owned else None,
                       env_kwargs=cfg.env_kwargs if env is None else None)
    try:
        if actor is None:
            actor, _ = build_actor_critic(spaces, hidden_sizes=cfg.hidden_sizes,
                                          activation=cfg.activation,
                                          init_log_std=cfg.init_log_std,
                                          ortho_init=cfg.ortho_init)
        obs_norm = ObservationNormalizer(spaces.obs_shape, clip=cfg.obs_clip,
                                         enabled=cfg.obs_norm)
    finally:
        if owned:
            spaces.close()
    actor.load_state_dict(state["actor"])
    obs_norm.load_state_dict(state["obs_norm"])
    obs_norm.frozen = True
    actor.eval()
    return actor, obs_norm, cfg
