"""What a run is made of, checked before any work: its config, env sources and networks.

:func:`resolve_config` merges a config, an env source and keyword overrides;
:func:`eval_source` says where the final evaluation plays.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ppokit.envs.sources import EnvSource, env_label
from ppokit.train.settings.config import TrainConfig, config_from_dict
from ppokit.train.settings.validation import check_resumable

__all__ = [
    "check_resumable",
    "checked_module",
    "eval_source",
    "is_vector_env",
    "resolve_config",
]


def resolve_config(
    cfg: TrainConfig | None, *, env: EnvSource | None, overrides: dict[str, Any]
) -> TrainConfig:
    """The run's config: ``cfg`` (or the preset of an id ``env``), ``env`` and ``overrides``.

    An id ``env`` sets ``cfg.env``; a callable or VectorEnv sets it to a label (for logs),
    and a VectorEnv sets ``num_envs`` to its own (an override that disagrees is an error).

    Example:
        >>> resolve_config(None, env="Pendulum-v1", overrides={"seed": 2}).gamma  # its preset
        0.9
    """
    from ppokit.train.settings.presets import preset_config

    if "env" in overrides:
        raise TypeError("Pass the environment as env=..., once (it is not a config override).")
    if cfg is None:  # an id picks its preset; a callable or VectorEnv starts from defaults
        cfg = preset_config(env) if isinstance(env, str) else TrainConfig()
    values = dict(overrides)
    if env is not None:
        values["env"] = env_label(env)
    if is_vector_env(env):
        given = values.get("num_envs")
        if given is not None and given != env.num_envs:  # type: ignore[union-attr]
            raise ValueError(
                f"num_envs={given} disagrees with the VectorEnv given, which has "
                f"{env.num_envs}; drop num_envs."  # type: ignore[union-attr]
            )
        values["num_envs"] = env.num_envs  # type: ignore[union-attr]
    return config_from_dict(values, base=cfg) if values else cfg


def is_vector_env(source: object) -> bool:
    """Whether ``source`` is a ``gymnasium.vector.VectorEnv``.

    Example:
        >>> is_vector_env("CartPole-v1")
        False
    """
    import gymnasium as gym

    return isinstance(source, gym.vector.VectorEnv)


def eval_source(
    source: EnvSource, eval_env: EnvSource | None, cfg: TrainConfig
) -> EnvSource | None:
    """Where the final evaluation plays: ``eval_env``, else the training source if it can
    be built again (an id or callable); a VectorEnv needs ``eval_env`` or no evaluation."""
    if eval_env is not None:
        return eval_env
    if not is_vector_env(source):
        return source
    if cfg.eval_episodes:
        raise ValueError(
            f"eval_episodes={cfg.eval_episodes} evaluates on fresh environments, which a "
            "VectorEnv cannot give; pass eval_env= (a Gymnasium id or a callable returning an "
            "Env), or eval_episodes=0."
        )
    return None


def checked_module(module: object, role: str) -> Any:
    """``module`` if it is an ``nn.Module``; else a ``TypeError`` naming ``role``.

    Example:
        >>> checked_module(lambda td: td, "actor")
        Traceback (most recent call last):
        ...
        TypeError: actor must be a torch.nn.Module (a TensorDict module such as ...
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"{role} must be a torch.nn.Module (a TensorDict module such as "
            f"ProbabilisticActor / ValueOperator), got {type(module).__name__}."
        )
    return module
