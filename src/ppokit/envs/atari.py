"""Atari 2600 games (ale-py) with the standard PPO preprocessing, as one vector env.

``ppokit train --env ALE/Breakout-v5`` (or ``BreakoutNoFrameskip-v4``) builds the env the PPO
paper and its reference implementations train on (Mnih et al. 2015; Machado et al. 2018;
Huang et al. 2022, "The 37 Implementation Details of PPO", Atari details 1-7):

- up to 30 no-op actions after each reset, then FIRE where the game needs it to start;
- each action repeated for 4 frames, the observation the max of the last two (Atari sprites
  flicker between frames);
- 84x84 grayscale frames, the last 4 stacked: ``uint8 [4, 84, 84]`` observations;
- for training only: a lost life ends the *training* episode (``terminated``; the game goes on,
  so the value of a life is learnt) and rewards are clipped to their sign;
- sticky actions (probability 0.25) for ``ALE/*-v5`` ids, none for ``*NoFrameskip-v4``, as
  those ids define.

The preprocessing itself is ale-py's: its C++ :class:`ale_py.vector_env.AtariVectorEnv` steps
all games in threads (the default backend, ``"ale"``), or Gymnasium's ``AtariPreprocessing`` and
``FrameStackObservation`` over a ``SyncVectorEnv`` (``"gymnasium"``). On top of either,
:class:`AtariGames` applies the training-only parts and keeps the raw score of each whole game
(all lives): those are the returns ppokit logs and evaluates, as the published tables do.
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym
import numpy as np

from ppokit.envs.atari_ids import ATARI_INSTALL_HINT, is_atari_id

__all__ = [
    "ATARI_INSTALL_HINT",
    "AtariGames",
    "atari_game",
    "is_atari_id",
    "make_atari_vector_env",
]


def _ale() -> Any:
    try:
        import ale_py
    except ImportError as err:
        raise ImportError(
            f"Atari games need ale-py (which bundles the ROMs): {ATARI_INSTALL_HINT}"
        ) from err
    gym.register_envs(ale_py)  # registers the ALE/* and *-v4 ids with Gymnasium
    return ale_py


def atari_game(env_id: str) -> tuple[str, float]:
    """The ROM name and sticky-action probability that ``env_id`` stands for.

    Raises:
        ImportError: ale-py is missing (the message says ``pip install "ppokit[atari]"``).
        ValueError: no such game (close names suggested).

    Example:
        >>> atari_game("ALE/Breakout-v5"), atari_game("PongNoFrameskip-v4")
        (('breakout', 0.25), ('pong', 0.0))
    """
    ale_py = _ale()
    spec = gym.envs.registry.get(env_id)
    if spec is None or "ale_py" not in str(spec.entry_point):
        names = [k for k, s in gym.envs.registry.items() if "ale_py" in str(s.entry_point)]
        close = difflib.get_close_matches(env_id, names, n=4, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown Atari id {env_id!r}.{hint} ale-py {ale_py.__version__} ships "
            f"{len(ale_py.roms.get_all_rom_ids())} games, e.g. ALE/Breakout-v5, ALE/Pong-v5."
        )
    kwargs = spec.kwargs
    return str(kwargs["game"]), float(kwargs.get("repeat_action_probability", 0.25))


def make_atari_vector_env(
    env_id: str,
    num_envs: int,
    *,
    training: bool = True,
    backend: str = "ale",
    env_kwargs: dict[str, Any] | None = None,
) -> AtariGames:
    """``num_envs`` preprocessed games of ``env_id`` as one same-step-autoreset vector env.

    Args:
        env_id: an ale-py id (``ALE/Breakout-v5``, ``BreakoutNoFrameskip-v4``).
        num_envs: games played in parallel.

    Keyword Args:
        training: episodic life and sign-clipped rewards (True) or whole games with raw
            rewards (False: evaluation).
        backend: ``"ale"`` (ale-py's threaded C++ vector env) or ``"gymnasium"``
            (``AtariPreprocessing`` + ``FrameStackObservation`` per game in a
            ``SyncVectorEnv``; needs opencv).
        env_kwargs: extra keyword arguments for the backend's game constructor (e.g.
            ``repeat_action_probability``).

    Example:
        >>> venv = make_atari_vector_env("ALE/Breakout-v5", 2)
        >>> obs, _ = venv.reset(seed=0)
        >>> obs.shape, obs.dtype
        ((2, 4, 84, 84), dtype('uint8'))
        >>> venv.close()
    """
    from gymnasium.vector import AutoresetMode

    game, sticky = atari_game(env_id)
    extra = dict(env_kwargs or {})
    if backend == "ale":
        from ale_py.vector_env import AtariVectorEnv

        options: dict[str, Any] = dict(
            repeat_action_probability=sticky,
            noop_max=30,
            frameskip=4,
            maxpool=True,
            img_height=84,
            img_width=84,
            grayscale=True,
            stack_num=4,
            use_fire_reset=True,
            # ale-py's episodic_life restarts the whole game at a life loss; life_loss_info
            # only reports it as terminated and plays on, as DeepMind's EpisodicLife does
            episodic_life=False,
            life_loss_info=training,
            reward_clipping=False,  # AtariGames clips, keeping the raw score for the logs
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
        options.update(extra)
        return AtariGames(AtariVectorEnv(game, num_envs, **options), training=training)
    if backend == "gymnasium":
        from ppokit.envs.atari_wrappers import make_preprocessed_game

        def make() -> gym.Env:
            return make_preprocessed_game(env_id, sticky=sticky, training=training, **extra)

        vec = gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        return AtariGames(vec, training=training)
    raise ValueError(f"backend must be 'ale' or 'gymnasium', got {backend!r}.")


class AtariGames(gym.vector.VectorEnv):
    """A vector env of Atari games seen as training episodes, with the raw score of each game.

    Wraps a same-step-autoreset vector env whose ``terminated`` already marks life losses
    (training) and whose ``info["lives"]`` counts lives. ``step`` returns sign-clipped rewards
    when ``training`` and adds ``info["_final_obs"]`` (the mask Gymnasium's own vector envs
    write) where a sub-env ended. A game is over where it was truncated, or terminated without
    losing a life relative to the step before (a reset restores all lives; games without lives
    report 0 throughout). Each finished game's raw score and agent steps are kept until
    :meth:`pop_games`.

    Example:
        >>> venv = make_atari_vector_env("ALE/Pong-v5", 1)
        >>> _ = venv.reset(seed=0)
        >>> _, reward, *_ = venv.step(np.zeros(1, dtype=np.int64))
        >>> reward.dtype, venv.pop_games()
        (dtype('float32'), ([], []))
        >>> venv.close()
    """

    def __init__(self, env: Any, *, training: bool) -> None:
        self.env = env
        self.training = training
        self.num_envs = int(env.num_envs)
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.metadata = dict(getattr(env, "metadata", {}))
        self.spec = getattr(env, "spec", None)
        self._score = np.zeros(self.num_envs, dtype=np.float64)
        self._steps = np.zeros(self.num_envs, dtype=np.int64)
        self._lives = np.zeros(self.num_envs, dtype=np.int64)
        self._scores: list[float] = []
        self._lengths: list[int] = []

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict]:
        if isinstance(seed, list) and not isinstance(self.env, gym.vector.SyncVectorEnv):
            # Gymnasium's per-env seed list; ale-py's vector env takes an array instead
            seed = np.asarray(seed, dtype=np.int64) if seed[0] is not None else None
        obs, info = self.env.reset(seed=seed, options=options)
        self._score[:] = 0.0
        self._steps[:] = 0
        self._lives[:] = np.asarray(info.get("lives", self._lives))
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any, Any]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        raw = np.asarray(reward, dtype=np.float64)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        lives = np.asarray(info.get("lives", self._lives), dtype=np.int64)
        self._score += raw
        self._steps += 1
        ended = terminated | truncated
        if ended.any():
            info = dict(info)
            info["_final_obs"] = ended
            game_over = truncated | (terminated & (lives >= self._lives))
            for i in np.flatnonzero(game_over):
                self._scores.append(float(self._score[i]))
                self._lengths.append(int(self._steps[i]))
            self._score[game_over] = 0.0
            self._steps[game_over] = 0
        self._lives = lives
        out = np.sign(raw) if self.training else raw
        return obs, out.astype(np.float32), terminated, truncated, info

    def pop_games(self) -> tuple[list[float], list[int]]:
        """Raw scores and lengths (agent steps) of the games finished since the last call."""
        out = (self._scores, self._lengths)
        self._scores, self._lengths = [], []
        return out

    def render(self) -> Any:
        return self.env.render()

    def close(self, **kwargs: Any) -> None:
        self.env.close(**kwargs)
