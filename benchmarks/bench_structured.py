"""Structured tasks side by side: tic-tac-toe (masks) and FetchReachDense (Dict observations).

``--task tictactoe`` (default) trains ``ppokit/TicTacToe-v0`` for ``--steps`` environment
steps, then plays ``--games`` deterministic evaluation games and counts wins, draws, losses
and illegal moves.

- ``ppokit``: the masked policy (``MaskedCategorical``: illegal squares have probability 0);
- ``ppokit-nomask``: the same network and settings with the mask given as an ordinary
  input (``action_mask_key`` points elsewhere), so the policy must learn the rules from the
  -1 an illegal move earns;
- ``sb3-maskable``: sb3-contrib's ``MaskablePPO`` with ``MultiInputPolicy`` and the same
  hyperparameters (needs ``pip install sb3-contrib``; skipped where it is absent).

``--task fetch`` trains ``FetchReachDense-v4`` (Gymnasium-Robotics; ``pip install
"ppokit[robotics]"``) with ppokit's preset and with Stable-Baselines3's ``PPO`` and
``MultiInputPolicy`` on the same settings (VecNormalize for the observation and reward
normalisation), then plays 50 deterministic episodes (env ``i`` seeded ``10_000 + seed + i``)
and reports the mean return and the success rate (the final ``info["is_success"]``).

Usage:
    python benchmarks/bench_structured.py --steps 200000 --games 1000 --seed 1
    python benchmarks/bench_structured.py --only ppokit-nomask --steps 200000
    python benchmarks/bench_structured.py --task fetch --steps 200000 --seed 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import numpy as np
import torch

ENV_ID = "ppokit/TicTacToe-v0"
# one set of PPO settings for every candidate (8 envs x 128 steps, 4 epochs of 4 minibatches)
SETTINGS: dict[str, Any] = dict(
    num_envs=8,
    num_steps=128,
    num_epochs=4,
    num_minibatches=4,
    lr=1e-3,
    entropy_coef=0.01,
    gamma=0.99,
    gae_lambda=0.95,
    clip_epsilon=0.2,
)


def evaluate(act: Any, games: int, seed: int) -> dict[str, float]:
    """Play ``games`` games with ``act(obs_dict_batch) -> actions``; outcome rates."""
    import gymnasium as gym

    import ppokit.envs.tictactoe  # noqa: F401  (registers the id)

    envs = [gym.make(ENV_ID) for _ in range(games)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    result = np.zeros(games)
    active = np.ones(games, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        batch = {k: np.stack([obs[i][k] for i in idx]) for k in obs[0]}
        actions = act(batch)
        for i, a in zip(idx, actions):
            obs[i], reward, terminated, truncated, _ = envs[i].step(int(a))
            if terminated or truncated:
                result[i], active[i] = reward, False
    illegal = sum(env.unwrapped.illegal_moves for env in envs)
    return {
        "win": float((result == 1).mean()),
        "draw": float((result == 0).mean()),
        "loss": float((result == -1).mean()),
        "illegal_moves": float(illegal),
    }


def run_ppokit(steps: int, games: int, seed: int, *, mask: bool) -> dict[str, float]:
    from tensordict import TensorDict
    from tensordict.nn import InteractionType, set_interaction_type

    from ppokit.train.trainer import PPOTrainer

    trainer = PPOTrainer(
        env=ENV_ID,
        run_dir=tempfile.mkdtemp(),
        total_steps=steps,
        seed=seed,
        eval_episodes=0,
        progress=False,
        obs_norm=False,  # raw 0/1 board and mask, as SB3's policy sees them
        action_mask_key="action_mask" if mask else "no_mask",
        **SETTINGS,
    )
    start = time.perf_counter()  # training only, as SB3's (its model is built before too)
    trainer.train()
    seconds = time.perf_counter() - start
    actor = trainer.actor

    def act(batch: dict[str, np.ndarray]) -> np.ndarray:
        n = len(batch["observation"])
        obs = {"observation": torch.as_tensor(batch["observation"]).float()}
        key = "action_mask"
        obs[key] = torch.as_tensor(batch[key]).bool() if mask else torch.as_tensor(batch[key])
        if not mask:
            obs[key] = obs[key].float()
        td = TensorDict({"observation": obs}, [n])
        with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
            return actor(td)["action"].numpy()

    return {"seconds": seconds, "sps": steps / seconds, **evaluate(act, games, 10_000)}


def run_sb3(steps: int, games: int, seed: int) -> dict[str, float] | None:
    try:
        from sb3_contrib import MaskablePPO
        from sb3_contrib.common.wrappers import ActionMasker
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        return None
    import gymnasium as gym

    import ppokit.envs.tictactoe  # noqa: F401  (registers the id)

    def masked() -> gym.Env:
        return ActionMasker(gym.make(ENV_ID), lambda env: env.unwrapped._obs()["action_mask"])

    vec = make_vec_env(masked, n_envs=SETTINGS["num_envs"], seed=seed)
    batch = SETTINGS["num_envs"] * SETTINGS["num_steps"] // SETTINGS["num_minibatches"]
    model = MaskablePPO(
        "MultiInputPolicy",
        vec,
        n_steps=SETTINGS["num_steps"],
        batch_size=batch,
        n_epochs=SETTINGS["num_epochs"],
        learning_rate=lambda f: SETTINGS["lr"] * f,  # linear annealing, as ppokit's
        ent_coef=SETTINGS["entropy_coef"],
        gamma=SETTINGS["gamma"],
        gae_lambda=SETTINGS["gae_lambda"],
        clip_range=SETTINGS["clip_epsilon"],
        seed=seed,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start

    def act(batch: dict[str, np.ndarray]) -> np.ndarray:
        actions, _ = model.predict(batch, deterministic=True, action_masks=batch["action_mask"])
        return np.asarray(actions)

    return {"seconds": seconds, "sps": steps / seconds, **evaluate(act, games, 10_000)}


FETCH_ID = "FetchReachDense-v4"
FETCH_EPISODES = 50


def fetch_settings() -> dict[str, Any]:
    """ppokit's FetchReachDense preset: the settings both candidates train with."""
    from ppokit.train.settings.presets import PRESETS

    return {k: v for k, v in PRESETS[FETCH_ID].items() if k not in ("total_steps", "eval_episodes")}


def evaluate_fetch(act: Any, seed: int) -> dict[str, float]:
    """``FETCH_EPISODES`` deterministic episodes with ``act(obs_dict_batch) -> actions``."""
    import gymnasium as gym

    from ppokit.envs.robotics import import_robotics

    import_robotics(FETCH_ID)
    envs = [gym.make(FETCH_ID) for _ in range(FETCH_EPISODES)]
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    returns = np.zeros(FETCH_EPISODES)
    success = np.zeros(FETCH_EPISODES)
    active = np.ones(FETCH_EPISODES, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        actions = act({k: np.stack([obs[i][k] for i in idx]) for k in obs[0]})
        for i, a in zip(idx, actions):
            obs[i], reward, terminated, truncated, info = envs[i].step(a)
            returns[i] += reward
            if terminated or truncated:
                success[i], active[i] = float(info["is_success"]), False
    for env in envs:
        env.close()
    return {"return": float(returns.mean()), "success": float(success.mean())}


def run_ppokit_fetch(steps: int, seed: int) -> dict[str, float]:
    from tensordict import TensorDict
    from tensordict.nn import InteractionType, set_interaction_type

    from ppokit.envs.structured import StructuredVecEnv
    from ppokit.train.structured.training import normalize_leaves
    from ppokit.train.trainer import PPOTrainer

    trainer = PPOTrainer(
        env=FETCH_ID,
        run_dir=tempfile.mkdtemp(),
        total_steps=steps,
        seed=seed,
        eval_episodes=0,
        progress=False,
        **fetch_settings(),
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    layout = StructuredVecEnv(FETCH_ID, 1)  # the leaves' order and keys
    layout.close()

    def act(batch: dict[str, np.ndarray]) -> np.ndarray:
        n = len(batch["observation"])
        obs = TensorDict({k: torch.as_tensor(v).float() for k, v in batch.items()}, [n])
        obs = normalize_leaves(layout, obs, trainer.obs_norm, update=False)
        with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
            action = trainer.actor(TensorDict({"observation": obs}, [n]))["action"]
        return action.clamp(-1.0, 1.0).numpy()  # as the env adapter clips to the bounds

    return {"seconds": seconds, "sps": steps / seconds, **evaluate_fetch(act, 10_000 + seed)}


def run_sb3_fetch(steps: int, seed: int) -> dict[str, float] | None:
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize
    except ImportError:
        return None
    from ppokit.envs.robotics import import_robotics

    import_robotics(FETCH_ID)
    cfg = fetch_settings()
    raw = make_vec_env(FETCH_ID, n_envs=cfg["num_envs"], seed=seed)
    # ppokit's obs_norm and reward_scale: running mean/std of the observations (clip 10) and
    # returns-based reward scaling (clip 10), both with the training gamma
    vec = VecNormalize(raw, norm_obs=True, norm_reward=True, clip_obs=10.0, gamma=cfg["gamma"])
    model = PPO(
        "MultiInputPolicy",
        vec,
        n_steps=cfg["num_steps"],
        batch_size=cfg["num_envs"] * cfg["num_steps"] // cfg["num_minibatches"],
        n_epochs=cfg["num_epochs"],
        learning_rate=lambda f: cfg["lr"] * f,  # linear annealing, as ppokit's
        gamma=cfg["gamma"],
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=cfg["entropy_coef"],
        vf_coef=0.5,
        max_grad_norm=0.5,
        # MultiInputPolicy's default: each key flattened and concatenated, then separate
        # 64x64 tanh actor and critic MLPs (ppokit's default network)
        policy_kwargs={"log_std_init": cfg["init_log_std"]},
        seed=seed,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    vec.training = False

    def act(batch: dict[str, np.ndarray]) -> np.ndarray:
        actions, _ = model.predict(vec.normalize_obs(batch), deterministic=True)
        return np.clip(np.asarray(actions), -1.0, 1.0)

    return {"seconds": seconds, "sps": steps / seconds, **evaluate_fetch(act, 10_000 + seed)}


def main_fetch(steps: int, seed: int, chosen: list[str]) -> None:
    print(f"{FETCH_ID}: {steps:,} steps, seed {seed}, {FETCH_EPISODES} eval episodes")
    print("candidate       train_s    sps   eval_return  success_rate")
    for name in chosen:
        res = run_sb3_fetch(steps, seed) if name == "sb3" else run_ppokit_fetch(steps, seed)
        if res is None:
            print(f"{name:<14} (stable-baselines3 not installed: skipped)")
            continue
        print(
            f"{name:<14} {res['seconds']:8.1f} {res['sps']:6.0f} {res['return']:12.2f} "
            f"{res['success']:13.3f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["tictactoe", "fetch"], default="tictactoe")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--games", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--only", choices=["ppokit", "ppokit-nomask", "sb3-maskable", "sb3"], action="append"
    )
    args = parser.parse_args()
    names = {"fetch": {"ppokit", "sb3"}, "tictactoe": {"ppokit", "ppokit-nomask", "sb3-maskable"}}
    wrong = set(args.only or ()) - names[args.task]
    if wrong:
        parser.error(
            f"--only {sorted(wrong)} with --task {args.task}: pick from {names[args.task]}"
        )
    torch.set_num_threads(1)
    if args.task == "fetch":
        main_fetch(args.steps, args.seed, args.only or ["ppokit", "sb3"])
        return
    chosen = args.only or ["ppokit", "ppokit-nomask", "sb3-maskable"]
    print(f"{ENV_ID}: {args.steps:,} steps, seed {args.seed}, {args.games} eval games")
    print("candidate       train_s    sps   win   draw  loss  win_or_draw  illegal_moves")
    for name in chosen:
        if name == "sb3-maskable":
            res = run_sb3(args.steps, args.games, args.seed)
            if res is None:
                print(f"{name:<14} (sb3-contrib not installed: skipped)")
                continue
        else:
            res = run_ppokit(args.steps, args.games, args.seed, mask=name == "ppokit")
        print(
            f"{name:<14} {res['seconds']:8.1f} {res['sps']:6.0f} {res['win']:.3f} "
            f"{res['draw']:.3f} {res['loss']:.3f} {res['win'] + res['draw']:11.3f} "
            f"{int(res['illegal_moves']):14d}",
            flush=True,
        )


if __name__ == "__main__":
    main()
