"""What a user may train on, turned into one Gymnasium vector env with same-step autoreset.

An *env source* is one of:

- a registered Gymnasium id (``"CartPole-v1"``), or ``"my_package.my_module:MyEnv-v0"``:
  Gymnasium's own convention, which imports ``my_package.my_module`` (whose import registers
  ``MyEnv-v0``) before looking the id up;
- a callable returning a ``gymnasium.Env`` (called once per sub-environment);
- a ``gymnasium.vector.VectorEnv`` built with ``autoreset_mode=AutoresetMode.SAME_STEP``.

Example:
    >>> vec = make_vector_env("CartPole-v1", 2)
    >>> vec.num_envs, env_label("CartPole-v1")
    (2, 'CartPole-v1')
    >>> vec.close()
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias, Union

if TYPE_CHECKING:
    import gymnasium as gym

__all__ = ["EnvSource", "check_env_id", "env_label", "import_env_module", "make_vector_env"]

#: a Gymnasium id (``"module:EnvId"`` allowed), a callable returning an Env, or a VectorEnv
EnvSource: TypeAlias = Union[str, Callable[[], "gym.Env"], "gym.vector.VectorEnv"]

#: ppokit's own env ids -> the module that registers them
_OWN_ENVS = {"ppokit/TicTacToe-v0": "ppokit.envs.tictactoe"}


def import_env_module(env_id: str) -> str:
    """Import the module of a ``"module:EnvId"`` id; returns the bare ``EnvId``.

    An id without ``":"`` is returned unchanged.

    Raises:
        ValueError: the module cannot be imported (the import error is chained).

    Example:
        >>> import_env_module("gymnasium.envs.classic_control:CartPole-v1")
        'CartPole-v1'
        >>> import_env_module("no_such_pkg_xyz:Env-v0")
        Traceback (most recent call last):
        ...
        ValueError: --env 'no_such_pkg_xyz:Env-v0' names the module 'no_such_pkg_xyz' to ...
    """
    if env_id in _OWN_ENVS:  # ppokit's own envs register on import of their module
        importlib.import_module(_OWN_ENVS[env_id])
    from ppokit.envs.robotics import import_robotics

    import_robotics(env_id)  # Gymnasium-Robotics ids register on import (or: the install hint)
    if ":" not in env_id:
        return env_id
    module, _, name = env_id.partition(":")
    if not module or not name:
        raise ValueError(
            f"--env {env_id!r}: expected 'module.path:EnvId' (both parts "
            "non-empty), e.g. 'my_package.my_module:MyEnv-v0'."
        )
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ValueError(
            f"--env {env_id!r} names the module {module!r} to import first, and importing it "
            f"failed: {err}. Install the package, or make it importable (PYTHONPATH)."
        ) from err
    return name


def check_env_id(env_id: str) -> None:
    """Raise a ``ValueError`` naming close registered ids when ``env_id`` is unknown.

    A ``"module:EnvId"`` id imports ``module`` first (see :func:`import_env_module`).

    Example:
        >>> check_env_id("CartPole-v1")
        >>> check_env_id("CartPol-v1")
        Traceback (most recent call last):
        ...
        ValueError: Unknown environment id 'CartPol-v1'. Did you mean: CartPole-v1, ...
    """
    import gymnasium as gym

    if _is_atari(env_id):  # ale-py's ids: known once it is imported, else the install hint
        from ppokit.envs.atari import atari_game

        atari_game(env_id)
        return
    name = import_env_module(env_id)
    if name in gym.envs.registry:
        return
    names = list(gym.envs.registry)
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
    if not close:  # also try without the version suffix, e.g. "hopper" -> Hopper-v5
        lowered = {n.lower(): n for n in names}
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), 4)]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    where = (
        f" (after importing {env_id.partition(':')[0]!r}, which did not register it)"
        if name != env_id
        else ""
    )
    raise ValueError(
        f'Unknown environment id {name!r}{where}.{hint} Run `python -c "import gymnasium; '
        'gymnasium.pprint_registry()"` to list every registered id.'
    )


def env_label(source: EnvSource) -> str:
    """A short name of ``source`` for logs and summaries.

    Example:
        >>> import gymnasium as gym
        >>> env_label("Pendulum-v1"), env_label(lambda: gym.make("CartPole-v1"))
        ('Pendulum-v1', '<lambda>')
    """
    if isinstance(source, str):
        return source
    spec = getattr(source, "spec", None)
    if spec is not None and getattr(spec, "id", None):
        return str(spec.id)
    return str(getattr(source, "__qualname__", type(source).__name__))


def make_vector_env(
    source: EnvSource,
    num_envs: int | None = None,
    *,
    mode: str = "sync",
    env_kwargs: dict[str, Any] | None = None,
    training: bool = True,
) -> gym.vector.VectorEnv:
    """The Gymnasium vector env of ``source``, resetting finished envs in the same step.

    Args:
        source: see the module docstring.
        num_envs: sub-environments to build; for a ``VectorEnv`` source, None or its own
            ``num_envs``.
        mode: ``"sync"`` (one process) or ``"async"`` (one subprocess per env).
        env_kwargs: keyword arguments for ``gymnasium.make`` (an id source only).
        training: for an Atari id (:mod:`ppokit.envs.atari`), episodic life and clipped
            rewards (True) or whole games with raw scores (False); other sources ignore it.

    Raises:
        ValueError: an unknown id, a bad ``num_envs``/``mode``, keyword arguments for a source
            that takes none, or a ``VectorEnv`` with another autoreset mode.
        TypeError: ``source`` is none of the three kinds.
    """
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    if mode not in ("sync", "async"):
        raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}.")
    if num_envs is not None and num_envs <= 0:
        raise ValueError(f"num_envs must be positive, got {num_envs}.")
    if env_kwargs and not isinstance(source, str):
        raise ValueError(
            f"env_kwargs={env_kwargs!r} are passed to gymnasium.make, which only "
            f"runs for a Gymnasium id; the env source here is a "
            f"{type(source).__name__}. Build the env with those arguments instead."
        )
    if isinstance(source, gym.vector.VectorEnv):
        if num_envs is not None and num_envs != source.num_envs:
            raise ValueError(
                f"The VectorEnv given has {source.num_envs} sub-environments but "
                f"num_envs={num_envs} was asked for; drop num_envs or make them "
                "agree."
            )
        mode_set = source.metadata.get("autoreset_mode")
        if mode_set not in (AutoresetMode.SAME_STEP, AutoresetMode.SAME_STEP.value):
            raise ValueError(
                f"The VectorEnv given resets finished episodes with autoreset_mode={mode_set}; "
                "ppokit stores the true final observation of an episode and needs "
                "AutoresetMode.SAME_STEP. Build it with gymnasium.make_vec(..., vector_kwargs="
                "{'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP}) or "
                "SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)."
            )
        return source
    if num_envs is None:
        raise ValueError("num_envs is needed to build a vector env from an id or a callable.")
    if isinstance(source, str) and _is_atari(source):
        from ppokit.envs.atari import make_atari_vector_env

        return make_atari_vector_env(source, num_envs, training=training, env_kwargs=env_kwargs)
    if isinstance(source, str):
        check_env_id(source)
        return gym.make_vec(
            source,
            num_envs=num_envs,
            vectorization_mode=mode,
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
            **(env_kwargs or {}),
        )
    if callable(source):
        cls = gym.vector.SyncVectorEnv if mode == "sync" else gym.vector.AsyncVectorEnv
        return cls([source] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    raise TypeError(
        f"An env source is a Gymnasium id (str), a callable returning a "
        f"gymnasium.Env, or a gymnasium.vector.VectorEnv; got "
        f"{type(source).__name__}."
    )


def _is_atari(env_id: str) -> bool:
    from ppokit.envs.atari_ids import is_atari_id

    return is_atari_id(env_id)
