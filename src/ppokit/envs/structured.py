"""Gymnasium vector envs with structured spaces, stepped with TensorDicts.

:class:`StructuredVecEnv` serves what :class:`~ppokit.envs.gym.GymVecEnv`'s flat fast path
does not: ``Dict``/``Tuple`` observations (nested too), ``MultiDiscrete``/``MultiBinary``/any
``Box``/``Dict``/``Tuple`` actions, and action masks. Observations come back as a TensorDict
``[N]`` whose leaves mirror the space (a ``Tuple`` entry ``i`` is the key ``"i"``; a space
that is not a container is the leaf ``"obs"``), with dtypes by kind: float32 vectors, uint8
images, int64 Discrete/MultiDiscrete, float32 MultiBinary, and the mask as bool under
``mask_key``. Actions are read from the ``"action"`` entry, laid out as the heads of
:func:`~ppokit.envs.spaces.action_heads` (a MultiDiscrete's entries are the keys ``"0"``,
``"1"``, ...). Same-step autoreset as ``GymVecEnv``: the true final observation is returned
alongside the reset one.

:func:`open_env` picks the adapter from the spaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from ppokit.envs.gym import GymVecEnv
from ppokit.envs.masks import check_mask, split_mask
from ppokit.envs.sources import EnvSource, env_label, make_vector_env
from ppokit.envs.spaces import SpaceLeaf, action_heads, check_spaces, is_flat, observation_leaves
from ppokit.modules.encoders import LEAF_DTYPES

__all__ = ["StructuredVecEnv", "open_env"]

_DTYPES = LEAF_DTYPES


def open_env(
    env: EnvSource,
    num_envs: int | None = None,
    *,
    mode: str = "sync",
    env_kwargs: dict[str, Any] | None = None,
    mask_key: str = "action_mask",
    training: bool = True,
) -> GymVecEnv | StructuredVecEnv:
    """``GymVecEnv`` for flat spaces without an action mask (the fast path), else
    ``StructuredVecEnv``.

    Example:
        >>> type(open_env("CartPole-v1", 1)).__name__
        'GymVecEnv'
    """
    vec = make_vector_env(env, num_envs, mode=mode, env_kwargs=env_kwargs, training=training)
    flat = is_flat(vec.single_observation_space, vec.single_action_space)
    # a mask in info is only seen at a reset: flat spaces with one take the structured path
    if flat and mask_key not in vec.reset()[1]:
        out: GymVecEnv | StructuredVecEnv = GymVecEnv(vec)
    else:
        out = StructuredVecEnv(vec, mask_key=mask_key)
    out.env_id = env_label(env)
    return out


class StructuredVecEnv:
    """A vector env with structured spaces: TensorDict observations, TensorDict actions.

    Args:
        env: an env source (see :mod:`ppokit.envs.sources`).
        num_envs: parallel environments ``N`` (None: a VectorEnv's own count).
        mode: ``"sync"`` or ``"async"``.
        env_kwargs: keyword arguments for ``gymnasium.make`` (an id only).
        mask_key: the action mask's name: a top-level observation ``Dict`` entry, or an
            ``info`` entry (then stored in the observation TensorDict under the same name).

    Attributes:
        obs_leaves: the encoded observation leaves (the mask excluded).
        heads: the action heads.
        mask_size: flags per mask row (None: the env gives no mask).
        obs_shape: ``(D,)``, the summed size of the ``vector`` leaves: what the observation
            normaliser sees (images, discrete leaves and masks are never normalised).

    Example:
        >>> from gymnasium import spaces
        >>> import gymnasium as gym
        >>> def make():
        ...     env = gym.make("CartPole-v1")
        ...     return gym.wrappers.TransformObservation(
        ...         env, lambda o: {"pos": o[:2], "vel": o[2:]},
        ...         spaces.Dict({"pos": spaces.Box(-5, 5, (2,)), "vel": spaces.Box(-5, 5, (2,))}))
        >>> env = StructuredVecEnv(make, 2)
        >>> obs = env.reset(seed=0)
        >>> obs["pos"].shape, env.obs_shape
        (torch.Size([2, 2]), (4,))
        >>> next_obs, obs, reward, term, trunc = env.step(
        ...     TensorDict({"action": torch.tensor([0, 1])}, [2]))
        >>> reward.shape
        (2,)
        >>> env.close()
    """

    structured = True

    def __init__(
        self,
        env: EnvSource,
        num_envs: int | None = None,
        *,
        mode: str = "sync",
        env_kwargs: dict[str, Any] | None = None,
        mask_key: str = "action_mask",
    ) -> None:
        self.env = make_vector_env(env, num_envs, mode=mode, env_kwargs=env_kwargs)
        self.env_id = env_label(env)
        self.num_envs: int = self.env.num_envs
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self.mask_key = mask_key
        check_spaces(
            self.observation_space, self.action_space, env_id=self.env_id, mask_key=mask_key
        )
        leaves = observation_leaves(self.observation_space, env_id=self.env_id, mask_key=mask_key)
        self._container = bool(leaves) and leaves[0].path != ()
        self.obs_leaves = [leaf for leaf in leaves if leaf.kind != "mask"]
        self.heads: list[SpaceLeaf] = action_heads(self.action_space, env_id=self.env_id)
        mask = [leaf for leaf in leaves if leaf.kind == "mask"]
        self._mask_in_obs = bool(mask)
        # an info mask is only seen at a reset: one probe tells whether the env gives one
        has_mask = self._mask_in_obs or mask_key in self.env.reset()[1]
        #: flags per mask row (the heads' choices summed); None: the env gives no mask
        self.mask_size: int | None = sum(self._mask_parts()[0]) if has_mask else None
        if mask and int(np.prod(mask[0].shape)) != sum(self._mask_parts()[0]):
            raise ValueError(
                f"{self.env_id}: the action mask space has shape {mask[0].shape}, expected "
                f"({sum(self._mask_parts()[0])},): one flag per action (MultiDiscrete: the "
                "heads' flags concatenated; MultiBinary(n): (allow 0, allow 1) per flag, "
                "2n flags)."
            )
        vec = [leaf for leaf in self.obs_leaves if leaf.kind == "vector"]
        self.obs_shape: tuple[int, ...] = (sum(int(np.prod(leaf.shape)) for leaf in vec),)
        self.steps = 0
        #: the info of the last :meth:`step` (Gymnasium's vector layout: arrays ``[N]`` with
        #: ``"_key"`` flags; an ended episode's own last info under ``"final_info"``)
        self.last_info: dict[str, Any] = {}

    # -- keys ---------------------------------------------------------------------------
    def leaf_key(self, leaf: SpaceLeaf) -> tuple[str, ...]:
        """The leaf's key inside the observation TensorDict."""
        return leaf.path if self._container else ("obs",)

    # -- conversion ---------------------------------------------------------------------
    def _pick(self, raw: Any, path: tuple[str, ...]) -> Any:
        if not self._container:
            return raw
        for part in path:
            raw = raw[int(part)] if isinstance(raw, (tuple, list)) else raw[part]
        return raw

    def _obs_td(self, raw: Any, info: dict[str, Any]) -> TensorDict:
        data: dict[tuple[str, ...], torch.Tensor] = {}
        for leaf in self.obs_leaves:
            array = np.asarray(self._pick(raw, leaf.path))
            data[self.leaf_key(leaf)] = torch.as_tensor(array).to(_DTYPES[leaf.kind])
        mask = self._read_mask(raw, info)
        if mask is not None:
            data[(self.mask_key,)] = torch.from_numpy(mask)
        td = TensorDict({}, batch_size=[self.num_envs])
        for key, value in data.items():
            td.set(key, value)
        return td

    def _read_mask(self, raw: Any, info: dict[str, Any]) -> np.ndarray | None:
        if self._mask_in_obs:
            value, where = raw[self.mask_key], f"observation[{self.mask_key!r}]"
        elif self.mask_key in info:
            value, where = info[self.mask_key], f"info[{self.mask_key!r}]"
            given = info.get("_" + self.mask_key)
            if given is not None and not np.asarray(given).all():
                raise ValueError(
                    f"{self.env_id}: info[{self.mask_key!r}] is missing for some envs at step "
                    f"{self.steps}; an env that gives a mask must give it at every step."
                )
        else:
            return None
        arr = np.asarray(value)
        if arr.ndim >= 2 and arr.shape[0] == self.num_envs:
            arr = arr.reshape(self.num_envs, -1)
        sizes, labels = self._mask_parts()
        mask = check_mask(
            arr,
            num_envs=self.num_envs,
            num_actions=sum(sizes),
            env_id=self.env_id,
            step=self.steps,
            where=where,
        )
        if len(sizes) > 1:
            split_mask(mask, sizes, labels=labels, env_id=self.env_id, step=self.steps)
        return mask

    def _mask_parts(self) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """The mask's parts, each needing a legal choice: a categorical head's ``n`` flags,
        a Bernoulli head's ``(allow 0, allow 1)`` pair per flag; and their names."""
        sizes: list[int] = []
        labels: list[str] = []
        for i, head in enumerate(self.heads):
            name = repr(head.name) if head.path else str(i)
            if head.kind == "categorical":
                sizes.append(head.sizes[0])
                labels.append(f"head {name}")
            elif head.kind == "bernoulli":
                flags = int(np.prod(head.shape))
                sizes += [2] * flags
                labels += [f"flag {j} of head {name}" for j in range(flags)]
            else:
                raise ValueError(
                    f"{self.env_id}: the env gives an action mask ({self.mask_key!r}) but the "
                    f"action space {self.action_space} has a Box leaf ({head.name!r}); masks "
                    "apply to Discrete, MultiDiscrete and MultiBinary actions only."
                )
        return tuple(sizes), tuple(labels)

    def to_env_action(self, action: TensorDictBase | Mapping[NestedKey, torch.Tensor]) -> Any:
        """The env's action (nested dict/tuple of numpy arrays) from the ``"action"`` entry.

        ``action``: a TensorDict holding ``"action"``, or a mapping from each head's key
        (``"action"``, ``("action", "0")``, ...) to its tensor.
        """
        from gymnasium import spaces

        def get(path: tuple[str, ...]) -> np.ndarray:
            key = ("action", *path) if path else "action"
            value = action.get(key)
            if value is None:
                raise KeyError(
                    f"{self.env_id}: the action has no entry {key!r}; give one tensor per "
                    "action head (StructuredVecEnv.heads), e.g. the structured actor's output."
                )
            return value.detach().cpu().numpy()

        def build(sp: Any, path: tuple[str, ...]) -> Any:
            if isinstance(sp, spaces.Dict):
                return {k: build(sub, (*path, str(k))) for k, sub in sp.spaces.items()}
            if isinstance(sp, spaces.Tuple):
                return tuple(build(sub, (*path, str(i))) for i, sub in enumerate(sp.spaces))
            if isinstance(sp, spaces.MultiDiscrete):
                return np.stack([get((*path, str(i))) for i in range(len(sp.nvec))], -1)
            if isinstance(sp, spaces.MultiBinary):
                return get(path).astype(np.int8)
            if isinstance(sp, spaces.Box):  # sampled Gaussian actions, clipped for the env only
                return np.clip(get(path), sp.low, sp.high).astype(sp.dtype)
            return get(path)

        return build(self.action_space, ())

    # -- stepping -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None) -> TensorDict:
        """Reset every env (env ``i`` seeded ``seed + i``); the observation TensorDict ``[N]``."""
        seeds: Any = None if seed is None else [seed + i for i in range(self.num_envs)]
        raw, info = self.env.reset(seed=seeds)
        return self._obs_td(raw, info)

    def step(
        self, action: TensorDictBase | Mapping[NestedKey, torch.Tensor]
    ) -> tuple[TensorDict, TensorDict, np.ndarray, np.ndarray, np.ndarray]:
        """Step with ``action`` (holding ``"action"``, or the heads by key: :meth:`to_env_action`).

        Returns:
            ``(next_obs, obs, reward, terminated, truncated)``: ``next_obs`` is the TRUE final
            observation where an episode ended (its mask is not checked: no action is taken
            there), ``obs`` the one to act on next; float32 rewards and bool flags ``[N]``.
        """
        raw, reward, terminated, truncated, info = self.env.step(self.to_env_action(action))
        self.steps += 1
        self.last_info = info
        obs = self._obs_td(raw, info)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        next_obs = obs
        done = terminated | truncated
        if done.any():
            flags = info.get("_final_obs")
            if flags is None:
                raise RuntimeError(
                    "The vector env ended an episode without info['final_obs']; ppokit needs "
                    "autoreset_mode=SAME_STEP to store the true final observation."
                )
            next_obs = obs.clone()
            rows = np.flatnonzero(flags)
            finals = [info["final_obs"][i] for i in rows]
            index = torch.from_numpy(rows)
            for leaf in self.obs_leaves:  # one write per leaf for all the ended envs
                entry = np.stack([np.asarray(self._pick(f, leaf.path)) for f in finals])
                next_obs.get(self.leaf_key(leaf))[index] = torch.from_numpy(entry).to(
                    _DTYPES[leaf.kind]
                )
        return next_obs, obs, np.asarray(reward, dtype=np.float32), terminated, truncated

    def close(self) -> None:
        """Close the underlying vector env."""
        self.env.close()

    def __enter__(self) -> StructuredVecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
