"""Training configuration: one frozen dataclass, the iteration plan, file loading, checks.

Every field carries a docstring; ``tyro`` turns them into ``ppokit train --help``. A run's
configuration is resolved in layers, later ones winning: the dataclass defaults, the preset of
the task family of ``env`` (:mod:`ppokit.train.settings.presets`), a ``--config`` file (JSON or
TOML), then ``--<field>`` flags.

Field names follow the loss: ``entropy_coef`` and ``critic_coef`` are
:class:`~ppokit.objectives.ppo.ClipPPOLoss`'s keyword arguments of the same name. The older
``ent_coef`` / ``vf_coef`` are still read (config files, :func:`config_from_dict`, flags) with a
``FutureWarning``.

Example:
    >>> cfg = TrainConfig(num_envs=4, num_steps=128, num_minibatches=4)
    >>> cfg.batch_size, cfg.minibatch_size
    (512, 128)
    >>> num_iterations(total_steps=1000, batch_size=cfg.batch_size)
    2
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DEPRECATED_NAMES",
    "TrainConfig",
    "canonical_name",
    "config_from_dict",
    "config_to_dict",
    "default_run_dir",
    "num_iterations",
    "validate_config",
]

#: old config names -> the loss's names (read with a FutureWarning)
DEPRECATED_NAMES: dict[str, str] = {"ent_coef": "entropy_coef", "vf_coef": "critic_coef"}


@dataclass(frozen=True)
class TrainConfig:
    """PPO training run on a Gymnasium task.

    Example:
        >>> TrainConfig(env="Pendulum-v1", seed=4).seed
        4
    """

    env: str = "CartPole-v1"
    """Gymnasium environment id (e.g. CartPole-v1, Hopper-v5, or my_package.my_module:MyEnv-v0,
    which imports my_package.my_module first). Picks the preset. [a non-empty Gymnasium id]"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for gymnasium.make (from the command line: --env-kwargs JSON)."""
    seed: int = 1
    """Seed for torch, numpy, python and the environments (env i gets seed + i).
    [an integer in [0, 4294967295]]"""
    total_steps: int = 60_000
    """Environment steps to train for, summed over all parallel environments.
    [a positive integer]"""
    num_envs: int = 8
    """Parallel environments in the vector env. [a positive integer]"""
    num_steps: int = 32
    """Steps collected per environment per iteration (rollout length T). [a positive integer]"""
    vector_mode: Literal["sync", "async"] = "sync"
    """Gymnasium vectorisation: 'sync' (one process) or 'async' (one subprocess per env)."""

    lr: float = 1e-3
    """Adam learning rate at the start of training. [a positive finite number]"""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to zero over the run."""
    adam_eps: float = 1e-5
    """Adam epsilon (1e-5 as in the PPO reference implementations, not torch's 1e-8).
    [a positive finite number]"""
    gamma: float = 0.99
    """Discount factor. [in (0, 1]]"""
    gae_lambda: float = 0.95
    """GAE lambda (bias/variance trade-off of the advantage). [in (0, 1]]"""
    num_epochs: int = 20
    """Passes over each rollout. [a positive integer]"""
    num_minibatches: int = 1
    """Minibatches per epoch; the batch num_envs * num_steps must divide evenly.
    [a positive integer dividing num_envs * num_steps]"""
    clip_epsilon: float = 0.2
    """PPO ratio clipping range epsilon. [a number in (0, 1)]"""
    anneal_clip: bool = False
    """Anneal clip_epsilon linearly to zero over the run, like the learning rate
    (rl-baselines3-zoo's clip_range lin_0.2 for CartPole): late updates stay small."""
    clip_value: bool = False
    """Also clip the value update around the rollout's values (with clip_epsilon)."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (ClipPPOLoss's entropy_coef; formerly ent_coef).
    [>= 0 and finite]"""
    critic_coef: float = 0.5
    """Critic loss coefficient (ClipPPOLoss's critic_coef; formerly vf_coef). [>= 0 and finite]"""
    loss_critic_type: Literal["l2", "l1", "smooth_l1"] = "l2"
    """Distance of the critic loss (l2 = squared error, as in SB3)."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm of all parameters to this value. [a positive finite number]"""
    target_kl: float | None = None
    """Stop the epochs of an iteration when a minibatch's approximate KL exceeds this.
    [positive and finite, or omitted]"""
    normalize_advantage: bool = True
    """Normalise the advantage inside each minibatch."""
    recompute_advantage: bool = False
    """Recompute GAE with the current critic before every epoch instead of once."""

    obs_norm: bool = False
    """Normalise observations with running mean/std (saved in checkpoints, frozen in eval)."""
    obs_clip: float = 10.0
    """Clip normalised observations to [-obs_clip, obs_clip]. [a positive finite number]"""
    reward_scale: bool = False
    """Divide rewards by the running std of the discounted return."""
    reward_clip: float = 10.0
    """Clip scaled rewards to [-reward_clip, reward_clip]. [a positive finite number]"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the actor and critic MLPs (separate networks).
    [one or more positive widths]"""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden activation of the MLPs."""
    init_log_std: float = 0.0
    """Initial log standard deviation of continuous (Gaussian) policies. [a number in [-20, 5]]"""
    ortho_init: bool = True
    """Orthogonal weights (gain sqrt(2), policy head 0.01, value head 1); False: torch's default."""

    compile: bool = False
    """torch.compile each minibatch update (loss, gradient, clip, Adam: one graph) and the
    policy for acting: faster after tens of seconds of compiling at the start; worth it for
    long runs (MuJoCo)."""
    torch_threads: int = 1
    """torch.set_num_threads: small MLPs run fastest on one thread. [a positive integer]"""
    eval_episodes: int = 20
    """Deterministic evaluation episodes at the end of training and at each evaluation during
    training (see eval_every); 0 skips them. [an integer >= 0]"""
    eval_every: int = 0
    """Iterations between deterministic evaluations during training (eval_episodes episodes on
    separate envs, normalisation frozen), logged as eval/*; the best one is kept as
    checkpoints/best.pt (0: off). [an integer >= 0 (0: off)]"""
    checkpoint_every: int = 10
    """Iterations between writes of checkpoints/latest.pt. [a positive integer]"""
    keep_checkpoint_every: int = 100
    """Iterations between kept copies checkpoints/step_<N>.pt (0: keep none).
    [an integer >= 0 (0: keep none)]"""
    run_dir: Path | None = None
    """Directory for logs and checkpoints (default runs/<env>__<seed>__<time>)."""
    overwrite: bool = False
    """Start afresh in a run dir that holds a run: its ppokit files (logs, checkpoints) go."""
    progress: bool = True
    """Show a progress bar (steps, SPS, recent return, ETA)."""
    track: str = "none"
    """Experiment tracker beside progress.csv and TensorBoard: none or wandb (needs
    ppokit[wandb]; WANDB_MODE=offline keeps it local)."""
    wandb_project: str = "ppokit"
    """W&B project (with --track wandb)."""
    wandb_entity: str = ""
    """W&B entity (team or user; empty: your default)."""
    wandb_group: str = ""
    """W&B group, e.g. one per sweep of seeds (empty: none)."""
    wandb_tags: str = ""
    """W&B tags, comma-separated (empty: none)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where networks, rollout, GAE and updates run: auto (CUDA when available), cpu or cuda
    (refused up front where CUDA is not available). [auto, cpu or cuda]"""
    precision: Literal["float32", "bfloat16"] = "float32"
    """Image observations: arithmetic of the Nature CNN trunk. bfloat16 runs its layers under
    autocast (mixed precision; weights, heads, loss and Adam stay float32); refused on
    hardware without native bfloat16 (a CPU without AVX512-BF16/AMX, a GPU before Ampere).
    [float32 or bfloat16]"""
    share_trunk: bool = True
    """Image observations: one CNN trunk for the actor and the critic (the PPO paper's Atari
    network); --no-share-trunk builds two."""
    action_mask_key: str = "action_mask"
    """Name of the env's action mask: a top-level Dict observation entry or an info entry
    (bool or 0/1, one flag per action); masked actions get probability 0. [a non-empty name]"""
    recurrent: Literal["none", "lstm", "gru"] = "none"
    """Memory for partially observed tasks: an encoder (MLP of hidden_sizes, or the Nature CNN
    for images) -> LSTM or GRU core -> linear heads, trained on whole env sequences
    (docs/guide/recurrent.md); none: the feed-forward networks."""
    recurrent_size: int = 128
    """Hidden size of the LSTM/GRU core (with --recurrent lstm/gru). [a positive integer]"""
    recurrent_shared: bool = False
    """Actor and critic share one encoder and recurrent core (one state); otherwise each has
    its own core (for images on one CNN unless --no-share-trunk). The atari preset sets it
    (CleanRL's ppo_atari_lstm layout)."""
    recurrent_seq_len: int = 0
    """Length of the training sequences each env's rollout is cut into, each re-run from the
    state stored at its start (0: the whole rollout, num_steps). [an integer >= 0 dividing
    num_steps (0: num_steps)]"""

    @property
    def batch_size(self) -> int:
        """Transitions per iteration: ``num_envs * num_steps``."""
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        """Transitions per minibatch: ``batch_size // num_minibatches``."""
        return self.batch_size // self.num_minibatches


def num_iterations(
    *,
    total_steps: int,
    batch_size: int,
    world_size: int = 1,
    done_iterations: int = 0,
    done_steps: int = 0,
) -> int:
    """The run's iteration count: the iterations done plus those the remaining steps need.

    ``total_steps`` counts the steps of all ranks, so ``world_size`` ranks each run
    ``1 / world_size`` of the iterations. Counted from the steps still to go, so a run may
    resume with another number of ranks. At least one iteration.

    Args:
        total_steps: environment steps of the whole run, all ranks together.
        batch_size: steps per iteration of one rank (``num_envs * num_steps``).
        world_size: ranks collecting in parallel.
        done_iterations: iterations already run (a resumed run).
        done_steps: environment steps already taken, all ranks together.

    Example:
        >>> num_iterations(total_steps=1000, batch_size=256)  # ceil(1000 / 256)
        4
        >>> num_iterations(total_steps=1000, batch_size=256, world_size=2)  # ceil(1000 / 512)
        2
        >>> num_iterations(total_steps=1000, batch_size=256, done_iterations=3, done_steps=768)
        4
    """
    per_iteration = batch_size * world_size
    return max(1, done_iterations + math.ceil(max(0, total_steps - done_steps) / per_iteration))


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
        name = canonical_name(key.replace("-", "_"))
        if name in clean:
            raise KeyError(
                f"Config field {name!r} is given twice (also under its old name "
                f"{key!r}); keep only {name!r}."
            )
        if name not in _FIELDS:
            close = difflib.get_close_matches(name, list(_FIELDS), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"Unknown config field {key!r}.{hint} Known fields: {sorted(_FIELDS)}")
        clean[name] = _coerce(name, value)
    return dataclasses.replace(base, **clean)


def default_run_dir(cfg: TrainConfig) -> Path:
    """``runs/<env>__<seed>__<time>``: where a run goes when no ``run_dir`` is given.

    Example:
        >>> default_run_dir(TrainConfig(env="a/B:C-v0", seed=3)).name.startswith("a_B_C-v0__3__")
        True
    """
    label = cfg.env.replace("/", "_").replace(":", "_")
    return Path("runs") / f"{label}__{cfg.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def canonical_name(name: str) -> str:
    """The current name of config field ``name``; an old name warns (``FutureWarning``).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     canonical_name("vf_coef")
        'critic_coef'
        >>> canonical_name("lr")
        'lr'
    """
    new = DEPRECATED_NAMES.get(name)
    if new is None:
        return name
    warnings.warn(
        f"Config field {name!r} is deprecated: it is now {new!r}, the loss's name "
        f"for it. Rename it (--{_flag(new)} on the command line).",
        FutureWarning,
        stacklevel=3,
    )
    return new


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
    if name == "env_kwargs":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise TypeError(
                "Config field 'env_kwargs' expects a table/object of keyword "
                f"arguments for gymnasium.make, got {value!r}."
            )
        return dict(value)
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
    out["env_kwargs"] = dict(cfg.env_kwargs)
    return out


def validate_config(cfg: TrainConfig) -> None:
    """Reject values outside each field's allowed range, or sizes that contradict each other,
    with a message that says how to fix them (the checks live in
    :mod:`ppokit.train.settings.validation`).

    Raises:
        ValueError: the first problem found (``TypeError``: a value of the wrong type).

    Example:
        >>> validate_config(TrainConfig(num_minibatches=3))
        Traceback (most recent call last):
        ...
        ValueError: The batch num_envs * num_steps = 8 * 32 = 256 is not divisible by ...
    """
    from ppokit.train.settings.validation import check_config

    check_config(cfg)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def __getattr__(name: str) -> Any:
    # the presets moved to ppokit.train.settings.presets; old imports from here keep working
    if name in ("PRESETS", "preset_config", "preset_name"):
        from ppokit.train.settings import presets

        return getattr(presets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
