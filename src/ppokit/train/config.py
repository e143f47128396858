"""Training configuration: one frozen dataclass, presets per task family, file loading.

Every field carries a docstring; ``tyro`` turns them into ``ppokit train --help``. A run's
configuration is resolved in layers, later ones winning: the dataclass defaults, the preset of
the task family of ``env``, a ``--config`` file (JSON or TOML), then ``--<field>`` flags.

Example:
    >>> cfg = preset_config("Hopper-v5")
    >>> (cfg.num_envs, cfg.num_steps, cfg.num_minibatches, cfg.obs_norm)
    (1, 2048, 32, True)
    >>> cfg.batch_size, cfg.minibatch_size
    (2048, 64)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "PRESETS",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config_file",
    "preset_config",
    "preset_name",
    "validate_config",
]


@dataclass(frozen=True)
class TrainConfig:
    """PPO training run on a Gymnasium task.

    Example:
        >>> TrainConfig(env="Pendulum-v1", seed=4).seed
        4
    """

    env: str = "CartPole-v1"
    """Gymnasium environment id (e.g. CartPole-v1, Hopper-v5). Picks the preset."""
    seed: int = 1
    """Seed for torch, numpy, python and the environments (env i gets seed + i)."""
    total_steps: int = 60_000
    """Environment steps to train for, summed over all parallel environments."""
    num_envs: int = 8
    """Parallel environments in the vector env."""
    num_steps: int = 32
    """Steps collected per environment per iteration (rollout length T)."""
    vector_mode: Literal["sync", "async"] = "sync"
    """Gymnasium vectorisation: 'sync' (one process) or 'async' (one subprocess per env)."""

    lr: float = 1e-3
    """Adam learning rate at the start of training."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to zero over the run."""
    adam_eps: float = 1e-5
    """Adam epsilon (1e-5 as in the PPO reference implementations, not torch's 1e-8)."""
    gamma: float = 0.98
    """Discount factor."""
    gae_lambda: float = 0.8
    """GAE lambda (bias/variance trade-off of the advantage)."""
    num_epochs: int = 20
    """Passes over each rollout."""
    num_minibatches: int = 1
    """Minibatches per epoch; the batch num_envs * num_steps must divide evenly."""
    clip_epsilon: float = 0.2
    """PPO ratio clipping range epsilon."""
    clip_value: bool = False
    """Also clip the value update around the rollout's values (with clip_epsilon)."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Critic loss coefficient."""
    loss_critic_type: Literal["l2", "l1", "smooth_l1"] = "l2"
    """Distance of the critic loss (l2 = squared error, as in SB3)."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm of all parameters to this value."""
    target_kl: float | None = None
    """Stop the epochs of an iteration when a minibatch's approximate KL exceeds this."""
    normalize_advantage: bool = True
    """Normalise the advantage inside each minibatch."""
    recompute_advantage: bool = False
    """Recompute GAE with the current critic before every epoch instead of once."""

    obs_norm: bool = False
    """Normalise observations with running mean/std (saved in checkpoints, frozen in eval)."""
    obs_clip: float = 10.0
    """Clip normalised observations to [-obs_clip, obs_clip]."""
    reward_scale: bool = False
    """Divide rewards by the running std of the discounted return."""
    reward_clip: float = 10.0
    """Clip scaled rewards to [-reward_clip, reward_clip]."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the actor and critic MLPs (separate networks)."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden activation of the MLPs."""
    init_log_std: float = 0.0
    """Initial log standard deviation of continuous (Gaussian) policies."""
    ortho_init: bool = True
    """Orthogonal weights (gain sqrt(2), policy head 0.01, value head 1); False: torch's default."""

    compile: bool = False
    """torch.compile each minibatch update (loss, gradient, clip, Adam: one graph) and the
    policy for acting: faster after tens of seconds of compiling at the start; worth it for
    long runs (MuJoCo)."""
    torch_threads: int = 1
    """torch.set_num_threads: small MLPs run fastest on one thread."""
    eval_episodes: int = 20
    """Deterministic evaluation episodes at the end of training (0 skips it)."""
    checkpoint_every: int = 10
    """Iterations between writes of checkpoints/latest.pt."""
    keep_checkpoint_every: int = 100
    """Iterations between kept copies checkpoints/step_<N>.pt (0: keep none)."""
    run_dir: Path | None = None
    """Directory for logs and checkpoints (default runs/<env>__<seed>__<time>)."""
    overwrite: bool = False
    """Start afresh in a run dir that holds a run: its ppokit files (logs, checkpoints) go."""
    progress: bool = True
    """Show a progress bar (steps, SPS, recent return, ETA)."""

    @property
    def batch_size(self) -> int:
        """Transitions per iteration: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """Transitions per minibatch: ``batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        """Iterations of the run: ``ceil(total_steps / batch_size)``."""
        return max(1, math.ceil(self.total_steps / self.batch_size))


# Presets: overrides of the dataclass defaults per task family, from published PPO settings
# (CleanRL's ppo.py / ppo_continuous_action.py and the rl-baselines3-zoo hyperparameters).
_CLASSIC: dict[str, Any] = {}
_MUJOCO: dict[str, Any] = dict(
    total_steps=1_000_000,
    num_envs=1,
    num_steps=2048,
    lr=3e-4,
    gamma=0.99,
    gae_lambda=0.95,
    num_epochs=10,
    num_minibatches=32,
    clip_epsilon=0.2,
    ent_coef=0.0,
    vf_coef=0.5,
    max_grad_norm=0.5,
    obs_norm=True,
    reward_scale=True,
    checkpoint_every=20,
    keep_checkpoint_every=100,
)

# HalfCheetah: the shared MuJoCo settings plateau near 2000 at 1M steps (benchmarks/RESULTS.md);
# rl-baselines3-zoo's tuned PPO settings for HalfCheetah (found by Optuna) learn much faster:
# short rollouts, many small epochs, a low initial std, constant small lr, wide ReLU nets.
_HALF_CHEETAH: dict[str, Any] = dict(
    _MUJOCO,
    num_steps=512,
    num_minibatches=8,
    num_epochs=20,
    lr=2.0633e-5,
    anneal_lr=False,
    gamma=0.98,
    gae_lambda=0.92,
    ent_coef=0.000401762,
    clip_epsilon=0.1,
    max_grad_norm=0.8,
    vf_coef=0.58096,
    init_log_std=-2.0,
    ortho_init=False,
    activation="relu",
    hidden_sizes=(256, 256),
    checkpoint_every=50,
    keep_checkpoint_every=400,
)

PRESETS: dict[str, dict[str, Any]] = {
    # tuned so seeds 1-3 reach eval 500 in well under a minute on 2 CPU cores
    "CartPole-v1": dict(_CLASSIC),
    # rl-zoo: 16 envs x 256, 4 epochs, ent 0, gamma 0.99 (normalised observations)
    "Acrobot-v1": dict(
        total_steps=500_000, num_envs=16, num_steps=256, num_epochs=4, num_minibatches=4,
        lr=3e-4, gamma=0.99, gae_lambda=0.94, ent_coef=0.0, obs_norm=True,
    ),
    # rl-zoo: 16 envs x 16, ent 0, gamma 0.99, lambda 0.98 (normalised observations)
    "MountainCar-v0": dict(
        total_steps=1_000_000, num_envs=16, num_steps=16, num_epochs=4, num_minibatches=1,
        lr=3e-4, gamma=0.99, gae_lambda=0.98, ent_coef=0.0, obs_norm=True,
    ),
    # rl-zoo (without gSDE): 4 envs x 1024, 10 epochs, lr 1e-3, gamma 0.9
    "Pendulum-v1": dict(
        total_steps=200_000, num_envs=4, num_steps=1024, num_epochs=10, num_minibatches=64,
        lr=1e-3, gamma=0.9, gae_lambda=0.95, ent_coef=0.0, obs_norm=False,
    ),
    # sparse reward: a low initial std and a long horizon, observations normalised
    "MountainCarContinuous-v0": dict(
        total_steps=300_000, num_envs=8, num_steps=256, num_epochs=10, num_minibatches=32,
        lr=1e-4, gamma=0.9999, gae_lambda=0.9, ent_coef=0.0, obs_norm=True, init_log_std=-1.0,
    ),
    "HalfCheetah-v5": _HALF_CHEETAH,
    "HalfCheetah-v4": _HALF_CHEETAH,
    "mujoco": _MUJOCO,
    "classic_control": dict(
        total_steps=500_000, num_envs=8, num_steps=128, num_epochs=4, num_minibatches=4,
        lr=2.5e-4, gamma=0.99, gae_lambda=0.95, ent_coef=0.01, obs_norm=True,
    ),
}


def preset_name(env_id: str) -> str:
    """Name of the preset used for ``env_id`` (an env id, ``"mujoco"`` or ``"classic_control"``).

    Example:
        >>> preset_name("Walker2d-v5"), preset_name("CartPole-v1"), preset_name("LunarLander-v3")
        ('mujoco', 'CartPole-v1', 'classic_control')
    """
    if env_id in PRESETS:
        return env_id
    try:
        import gymnasium as gym

        entry = str(gym.spec(env_id).entry_point)
    except Exception:  # unknown id: the CLI reports it with suggestions
        entry = ""
    if "mujoco" in entry:
        return "mujoco"
    return "classic_control"


def preset_config(env_id: str, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` for ``env_id`` with its preset applied, then ``overrides``.

    Example:
        >>> preset_config("CartPole-v1", seed=3).seed
        3
    """
    values = dict(PRESETS[preset_name(env_id)])
    values.update(overrides)
    values["env"] = env_id
    return config_from_dict(values)


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def config_from_dict(values: dict[str, Any], *, base: TrainConfig | None = None) -> TrainConfig:
    """Build a config from plain values (as read from JSON/TOML), checking names and types.

    Raises:
        KeyError: an unknown field (with close names suggested).
        TypeError: a value of the wrong type.

    Example:
        >>> config_from_dict({"lr": 1e-4, "hidden_sizes": [32, 32]}).hidden_sizes
        (32, 32)
    """
    base = base or TrainConfig()
    clean: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            close = difflib.get_close_matches(name, list(_FIELDS), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"Unknown config field {key!r}.{hint} Known fields: {sorted(_FIELDS)}")
        clean[name] = _coerce(name, value)
    return dataclasses.replace(base, **clean)


def _coerce(name: str, value: Any) -> Any:
    """Turn a JSON/TOML value into the field's Python type, or raise a TypeError."""
    default = _FIELDS[name].default
    if name == "hidden_sizes":
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise TypeError(f"Config field 'hidden_sizes' expects a list of ints, got {value!r}.")
        return tuple(value)
    if name == "run_dir":
        return None if value is None else Path(value)
    if name == "target_kl":
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(f"Config field 'target_kl' expects a number or null, got {value!r}.")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"Config field {name!r} expects true/false, got {value!r}.")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Config field {name!r} expects an integer, got {value!r}.")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"Config field {name!r} expects a number, got {value!r}.")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError(f"Config field {name!r} expects a string, got {value!r}.")
        return value
    return value


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain JSON-able values of ``cfg`` (round-trips through :func:`config_from_dict`).

    Example:
        >>> config_from_dict(config_to_dict(TrainConfig())) == TrainConfig()
        True
    """
    out = dataclasses.asdict(cfg)
    out["hidden_sizes"] = list(cfg.hidden_sizes)
    out["run_dir"] = None if cfg.run_dir is None else str(cfg.run_dir)
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.json`` or ``.toml`` config file into a dict of field values.

    Raises:
        FileNotFoundError: no such file.
        ValueError: another extension or a syntax error (with the file named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    text = path.read_text()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10: no TOML reader in the standard library
                raise ValueError(
                    f"Config file {str(path)!r}: TOML needs Python >= 3.11; use a .json file."
                ) from None
            data = tomllib.loads(text)
        else:
            raise ValueError(
                f"Config file {str(path)!r} has extension {suffix!r}; expected .json or .toml."
            )
    except (json.JSONDecodeError, ValueError) as err:
        if isinstance(err, ValueError) and str(err).startswith("Config file"):
            raise
        raise ValueError(f"Could not parse config file {str(path)!r}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"Config file {str(path)!r} must hold a table/object of fields.")
    return data


def validate_config(cfg: TrainConfig) -> None:
    """Reject contradictory or out-of-range values with a message that says how to fix them.

    Raises:
        ValueError: the first problem found.

    Example:
        >>> validate_config(TrainConfig(num_minibatches=3))
        Traceback (most recent call last):
        ...
        ValueError: The batch num_envs * num_steps = 8 * 32 = 256 is not divisible by ...
    """
    positive_ints = ("total_steps", "num_envs", "num_steps", "num_epochs", "num_minibatches",
                     "torch_threads", "checkpoint_every")
    for name in positive_ints:
        value = getattr(cfg, name)
        if value <= 0:
            raise ValueError(f"--{_flag(name)} must be a positive integer, got {value}.")
    for name in ("eval_episodes", "keep_checkpoint_every"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(cfg, name)}.")
    positive_floats = ("lr", "adam_eps", "clip_epsilon", "max_grad_norm", "obs_clip",
                       "reward_clip")
    for name in positive_floats:
        value = getattr(cfg, name)
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"--{_flag(name)} must be a positive finite number, got {value}.")
    if cfg.target_kl is not None and not cfg.target_kl > 0:
        raise ValueError(f"--target-kl must be positive (or omitted), got {cfg.target_kl}.")
    for name in ("ent_coef", "vf_coef"):
        value = getattr(cfg, name)
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"--{_flag(name)} must be >= 0, got {value}.")
    for name in ("gamma", "gae_lambda"):
        value = getattr(cfg, name)
        if not 0 < value <= 1:
            raise ValueError(f"--{_flag(name)} must be in (0, 1], got {value}.")
    if cfg.num_minibatches > cfg.batch_size:
        raise ValueError(
            f"num_minibatches={cfg.num_minibatches} is larger than the batch num_envs * num_steps"
            f" = {cfg.num_envs} * {cfg.num_steps} = {cfg.batch_size}: a minibatch would be "
            "empty. Lower --num-minibatches or raise --num-envs/--num-steps."
        )
    if cfg.batch_size % cfg.num_minibatches:
        raise ValueError(
            f"The batch num_envs * num_steps = {cfg.num_envs} * {cfg.num_steps} = "
            f"{cfg.batch_size} is not divisible by num_minibatches={cfg.num_minibatches}; "
            "choose sizes so that every minibatch has the same number of transitions."
        )
    if not cfg.hidden_sizes or any(h <= 0 for h in cfg.hidden_sizes):
        raise ValueError(f"--hidden-sizes must be positive widths, got {cfg.hidden_sizes}.")


def _flag(name: str) -> str:
    return name.replace("_", "-")

