"""Presets: the published PPO settings of each task family, applied over the config defaults.

:func:`preset_config` is what ``ppokit train --env ID`` starts from. Each preset only lists what
differs from :class:`~ppokit.train.settings.config.TrainConfig`'s defaults (gamma 0.99 and GAE
lambda 0.95 among them, the defaults of the whole library).

Example:
    >>> cfg = preset_config("Hopper-v5")
    >>> (cfg.num_envs, cfg.num_steps, cfg.num_minibatches, cfg.obs_norm, cfg.gamma)
    (1, 2048, 32, True, 0.99)
    >>> cfg.batch_size, cfg.minibatch_size
    (2048, 64)
"""

from __future__ import annotations

from typing import Any

from ppokit.envs.atari_ids import is_atari_id
from ppokit.train.settings.config import TrainConfig, config_from_dict

__all__ = ["PRESETS", "preset_config", "preset_name"]

# Presets: overrides of the dataclass defaults per task family, from published PPO settings
# (CleanRL's ppo.py / ppo_continuous_action.py and the rl-baselines3-zoo hyperparameters).
# CartPole: the dataclass defaults (8 envs x 32 steps, 20 epochs, lr 1e-3) with a short horizon,
# and an early stop of the epochs once the approximate KL passes 0.02: 20 epochs over 256
# samples can push a policy that already balances off its optimum, and without the stop one
# seed in six ended collapsed (164 after reaching 500); with it, 12 of 12 seeds end >= 478
# (benchmarks/results/sweeps.md)
_CARTPOLE: dict[str, Any] = dict(gamma=0.98, gae_lambda=0.8, target_kl=0.02)
_MUJOCO: dict[str, Any] = dict(
    total_steps=1_000_000,
    num_envs=1,
    num_steps=2048,
    lr=3e-4,
    num_epochs=10,
    num_minibatches=32,
    clip_epsilon=0.2,
    entropy_coef=0.0,
    critic_coef=0.5,
    max_grad_norm=0.5,
    obs_norm=True,
    reward_scale=True,
    checkpoint_every=20,
    keep_checkpoint_every=100,
)

# Hopper: the shared settings with an entropy bonus of 0.01. Without it every seed learned to
# hop, but the policy's noise shrank early and the deterministic policy fell in many episodes
# (seeds 1-5: IQM 2849); with it the noise stays near 1 and seeds 1-5 end at 2743-3649, IQM
# 3215 [2820, 3545]. gamma 0.995 on top gave higher peaks but, on 2 seeds of 9, a hopper that
# stands still (the healthy reward pays 1 per step for that); rl-zoo's tuned Hopper set
# (gamma 0.999) stood still too (benchmarks/results/hopper.md).
_HOPPER: dict[str, Any] = dict(_MUJOCO, entropy_coef=0.01)

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
    entropy_coef=0.000401762,
    clip_epsilon=0.1,
    max_grad_norm=0.8,
    critic_coef=0.58096,
    init_log_std=-2.0,
    ortho_init=False,
    activation="relu",
    hidden_sizes=(256, 256),
    checkpoint_every=50,
    keep_checkpoint_every=400,
)

# Walker2d and Ant: Tianshou's MuJoCo PPO settings (examples/mujoco/mujoco_ppo.py; its
# README reports, over 10 seeds within 1M steps, Ant 3258 +/- 1079, against 1327 for SB3's
# defaults in rl-baselines3-zoo's benchmark): 8 envs x 256 steps, 10 epochs of minibatches of
# 64, initial log-std -0.5, advantages recomputed before every epoch and not normalised, value
# coefficient 0.25 (Tianshou's squared error, as ppokit's l2). Tianshou anneals its lr over
# 3M steps, so at 1M it is still about 2/3 of 3e-4; these presets keep it constant: annealed
# to 0 over 1M, two Walker2d seeds of five stalled near 2000 (1638 and 3288 at the end),
# constant they ended at 4117-4766 (benchmarks/results/sweeps.md)
_TIANSHOU: dict[str, Any] = dict(
    _MUJOCO,
    num_envs=8,
    num_steps=256,
    num_minibatches=32,
    anneal_lr=False,
    critic_coef=0.25,
    init_log_std=-0.5,
    recompute_advantage=True,
    normalize_advantage=False,
)

# Ant-v5 puts the 84 contact forces (cfrc_ext) in its observation by default; Ant-v4 leaves them
# out, and the published 1M-step PPO results effectively ran without them (under MuJoCo 2.0 the
# Ant-v2/v3 contact forces were all zeros: gym issues #1541, #1711). With them, the Tianshou
# settings' seed 1 ended at 620; without them, seeds 1-5 at 1656-4245, IQM 2793
# (benchmarks/results/sweeps.md). ``--env-kwargs '{"include_cfrc_ext_in_observation": true}'``
# puts them back.
_ANT: dict[str, Any] = dict(_TIANSHOU, env_kwargs={"include_cfrc_ext_in_observation": False})

PRESETS: dict[str, dict[str, Any]] = {
    # every seed of 1-12 ends at eval >= 475 within 60k steps (under a minute on 2 CPU cores)
    "CartPole-v1": _CARTPOLE,
    # rl-zoo: 16 envs x 256, 4 epochs, ent 0, gamma 0.99 (normalised observations)
    "Acrobot-v1": dict(
        total_steps=500_000,
        num_envs=16,
        num_steps=256,
        num_epochs=4,
        num_minibatches=4,
        lr=3e-4,
        gae_lambda=0.94,
        entropy_coef=0.0,
        obs_norm=True,
    ),
    # rl-zoo: 16 envs x 16, ent 0, gamma 0.99, lambda 0.98 (normalised observations)
    "MountainCar-v0": dict(
        total_steps=1_000_000,
        num_envs=16,
        num_steps=16,
        num_epochs=4,
        num_minibatches=1,
        lr=3e-4,
        gae_lambda=0.98,
        entropy_coef=0.0,
        obs_norm=True,
    ),
    # rl-zoo (without gSDE): 4 envs x 1024, 10 epochs, lr 1e-3, gamma 0.9
    "Pendulum-v1": dict(
        total_steps=200_000,
        num_envs=4,
        num_steps=1024,
        num_epochs=10,
        num_minibatches=64,
        lr=1e-3,
        gamma=0.9,
        entropy_coef=0.0,
        obs_norm=False,
    ),
    # sparse reward: a low initial std and a long horizon, observations normalised
    "MountainCarContinuous-v0": dict(
        total_steps=300_000,
        num_envs=8,
        num_steps=256,
        num_epochs=10,
        num_minibatches=32,
        lr=1e-4,
        gamma=0.9999,
        gae_lambda=0.9,
        entropy_coef=0.0,
        obs_norm=True,
        init_log_std=-1.0,
    ),
    # masked Discrete(9) vs a random opponent (benchmarks/results/structured.md)
    "ppokit/TicTacToe-v0": dict(
        total_steps=400_000,
        num_envs=8,
        num_steps=128,
        num_epochs=4,
        num_minibatches=4,
        lr=1e-3,
        entropy_coef=0.01,
        obs_norm=False,
    ),
    # Gymnasium-Robotics' FetchReachDense (Dict observation, 4-D Box action, 50-step episodes):
    # the MuJoCo-style settings with a short horizon (gamma 0.95) over 8 envs
    # (benchmarks/results/structured.md)
    "FetchReachDense-v4": dict(
        total_steps=200_000,
        num_envs=8,
        num_steps=256,
        num_epochs=10,
        num_minibatches=32,
        lr=3e-4,
        gamma=0.95,
        entropy_coef=0.0,
        obs_norm=True,
        reward_scale=True,
        init_log_std=-0.5,
        eval_episodes=50,  # the success-rate target's 50 episodes
    ),
    # ppokit's POMDP ids (velocities hidden): an LSTM policy, settings of
    # benchmarks/results/recurrent.md; --recurrent none gives the feed-forward control
    "ppokit/CartPoleNoVel-v1": dict(
        total_steps=100_000,
        num_envs=8,
        num_steps=128,
        num_epochs=10,
        num_minibatches=4,
        lr=1e-3,
        entropy_coef=0.0,
        obs_norm=True,
        hidden_sizes=(64,),
        recurrent="lstm",
        recurrent_size=64,
        recurrent_seq_len=32,
    ),
    "ppokit/PendulumNoVel-v1": dict(
        total_steps=200_000,
        num_envs=4,
        num_steps=1024,
        num_epochs=10,
        num_minibatches=64,
        lr=1e-3,
        gamma=0.9,
        entropy_coef=0.0,
        # normalised observations and rewards (rl-zoo's RecurrentPPO: normalize=True): eval
        # -166 / -182 / -172 at seeds 1-3 against -209 / -311 / -231 without
        obs_norm=True,
        reward_scale=True,
        hidden_sizes=(64,),
        recurrent="lstm",
        recurrent_size=64,
        recurrent_seq_len=16,
    ),
    "HalfCheetah-v5": _HALF_CHEETAH,
    "HalfCheetah-v4": _HALF_CHEETAH,
    "Hopper-v5": _HOPPER,
    "Hopper-v4": _HOPPER,
    # (rl-zoo's tuned Ant and Humanoid sets are meant for 10M steps, not 1M)
    "Ant-v5": _ANT,
    # Humanoid: the shared settings (CleanRL's, 716 at 1M in its table) beat Tianshou's here:
    # seeds 1-2 ended at 864 and 760 against 630 and 650 (536 and 528 without contact forces);
    # seeds 1-5 at 580-864, IQM 757 (benchmarks/results/sweeps.md)
    "Humanoid-v5": _MUJOCO,
    # Walker2d: Tianshou's settings with a constant lr hold on all 5 seeds (4117-4766, IQM
    # 4412); the shared settings left two seeds below 3000 (2132, 3478), Tianshou's with the
    # lr annealed to 0 also two (1638, 3288) (benchmarks/results/sweeps.md)
    "Walker2d-v5": _TIANSHOU,
    "Walker2d-v4": _TIANSHOU,
    "mujoco": _MUJOCO,
    # PPO paper / CleanRL ppo_atari.py: 8 envs x 128 steps, 4 epochs x 4 minibatches, lr 2.5e-4
    # annealed, clip 0.1, entropy 0.01 (images are never normalised; rewards clipped by the env)
    "atari": dict(
        total_steps=10_000_000,
        num_envs=8,
        num_steps=128,
        num_epochs=4,
        num_minibatches=4,
        lr=2.5e-4,
        anneal_lr=True,
        clip_epsilon=0.1,
        entropy_coef=0.01,
        critic_coef=0.5,
        gamma=0.99,
        gae_lambda=0.95,
        max_grad_norm=0.5,
        clip_value=True,
        eval_episodes=8,
        checkpoint_every=50,
        keep_checkpoint_every=500,
        # with --recurrent: CleanRL's ppo_atari_lstm.py layout, one CNN -> LSTM for both heads
        recurrent_shared=True,
    ),
    "classic_control": dict(
        total_steps=500_000,
        num_envs=8,
        num_steps=128,
        num_epochs=4,
        num_minibatches=4,
        lr=2.5e-4,
        entropy_coef=0.01,
        obs_norm=True,
    ),
}


def preset_name(env_id: str) -> str:
    """Name of the preset used for ``env_id`` (an env id, ``"mujoco"``, ``"atari"`` or
    ``"classic_control"``).

    A ``module:EnvId`` id is looked up by its ``EnvId`` (after importing ``module``).

    Example:
        >>> preset_name("Swimmer-v5"), preset_name("CartPole-v1"), preset_name("LunarLander-v3")
        ('mujoco', 'CartPole-v1', 'classic_control')
        >>> preset_name("ALE/Breakout-v5")
        'atari'

    """
    if env_id in PRESETS:
        return env_id
    try:
        import gymnasium as gym

        entry = str(gym.spec(env_id).entry_point)
    except Exception:  # unknown id: the CLI and the env adapter report it with suggestions
        entry = ""
    if "mujoco" in entry:
        return "mujoco"
    if "ale_py" in entry or is_atari_id(env_id):
        return "atari"
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
