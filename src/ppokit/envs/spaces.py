"""Which Gymnasium spaces ppokit's networks take, checked without importing torch.

Two families:

- *flat*: a flat ``Box`` (or a uint8 image) observation with a ``Discrete`` or 1-D ``Box``
  action, served by :class:`~ppokit.envs.gym.GymVecEnv` and the collector's fast path;
- *structured*: ``Dict``/``Tuple`` observations (nested too) and ``MultiDiscrete``,
  ``MultiBinary``, ``Box`` of any shape and ``Dict``/``Tuple`` actions, optionally with an
  action mask, served by :class:`~ppokit.envs.structured.StructuredVecEnv`.

:func:`observation_leaves` and :func:`action_heads` describe a structured space as a list of
leaves (one encoder or one distribution head each). The command line calls
:func:`check_spaces` before any heavy import, so a task it cannot train is refused in a
fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ppokit.envs.images import MAX_CHANNELS

__all__ = [
    "SpaceLeaf",
    "action_heads",
    "check_flat_spaces",
    "check_spaces",
    "is_flat",
    "observation_leaves",
]


@dataclass(frozen=True)
class SpaceLeaf:
    """One leaf of a structured space.

    Attributes:
        path: the keys below ``"observation"`` / ``"action"`` (a ``Tuple`` entry is ``"0"``,
            ``"1"``, ...); ``()`` for a space that is not a container.
        kind: observations: ``"vector"`` (float Box, flattened), ``"image"`` (uint8 Box of
            3 dims, channels last), ``"discrete"``, ``"multi_discrete"``, ``"binary"`` or
            ``"mask"`` (the action mask); actions: ``"categorical"``, ``"bernoulli"`` or
            ``"normal"``.
        shape: the leaf's shape per environment (``()`` for Discrete).
        sizes: the number of choices of a ``discrete`` leaf or head ``(n,)``, of each entry
            of a ``multi_discrete`` leaf; ``()`` otherwise.
        low, high: a ``normal`` head's bounds, flattened (``()`` otherwise).
    """

    path: tuple[str, ...]
    kind: str
    shape: tuple[int, ...]
    sizes: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        """``"observation.board"``-style label without the root (``"<root>"`` for ``()``)."""
        return ".".join(self.path) if self.path else "<root>"


def is_flat(observation_space: Any, action_space: Any) -> bool:
    """Whether the flat fast path serves these spaces (flat Box obs, Discrete/1-D Box action).

    Example:
        >>> from gymnasium import spaces
        >>> is_flat(spaces.Box(-1, 1, (3,)), spaces.Discrete(2))
        True
        >>> is_flat(spaces.Dict({"x": spaces.Box(-1, 1, (3,))}), spaces.Discrete(2))
        False
    """
    try:
        check_flat_spaces(observation_space, action_space)
    except ValueError:
        return False
    return True


def check_flat_spaces(observation_space: Any, action_space: Any, *, env_id: str = "env") -> None:
    """Accept a flat ``Box`` or uint8 image observation, a ``Discrete`` or 1-D ``Box`` action.

    Raises:
        ValueError: any other space, naming it.

    Example:
        >>> from gymnasium import spaces
        >>> check_flat_spaces(spaces.Box(-1, 1, (3,)), spaces.MultiDiscrete([2, 2]), env_id="X")
        Traceback (most recent call last):
        ...
        ValueError: X has action space MultiDiscrete([2 2]); the flat path supports Discrete ...
    """
    from gymnasium import spaces

    from ppokit.envs.images import image_layout, is_image_space

    if is_image_space(observation_space):
        image_layout(observation_space.shape)  # refuses a layout the CNN cannot read
    elif not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(
            f"{env_id} has observation space {observation_space}; ppokit's MLP policies need a "
            "flat Box observation, its CNN a uint8 image (C, H, W) or (H, W, C). Wrap the env "
            "(e.g. gymnasium.wrappers.FlattenObservation)."
        )
    if isinstance(action_space, spaces.Discrete):
        if action_space.start != 0:
            raise ValueError(
                f"{env_id} has Discrete action space starting at {action_space.start}; "
                "ppokit supports Discrete(n) starting at 0."
            )
        return
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return
    raise ValueError(
        f"{env_id} has action space {action_space}; the flat path supports Discrete and 1-D "
        "Box action spaces (structured spaces go through StructuredVecEnv)."
    )


def check_spaces(
    observation_space: Any,
    action_space: Any,
    *,
    env_id: str = "env",
    mask_key: str = "action_mask",
) -> None:
    """Accept the flat spaces, or structured ones whose every leaf ppokit can encode or act in.

    Raises:
        ValueError: an unsupported space or leaf, named with its path.

    Example:
        >>> from gymnasium import spaces
        >>> check_spaces(spaces.Box(-1, 1, (3,)), spaces.MultiDiscrete([2, 2]), env_id="X")
        >>> check_spaces(spaces.Dict({"t": spaces.Text(5)}), spaces.Discrete(2), env_id="X")
        Traceback (most recent call last):
        ...
        ValueError: X: observation leaf 't' is Text(...; supported leaves are Box, Discrete, ...
    """
    if is_flat(observation_space, action_space):
        check_flat_spaces(observation_space, action_space, env_id=env_id)  # Discrete start
        return
    from ppokit.envs.images import image_layout, is_image_space

    if is_image_space(observation_space):  # a whole-observation image must have a clear layout
        image_layout(observation_space.shape)
    observation_leaves(observation_space, env_id=env_id, mask_key=mask_key)
    action_heads(action_space, env_id=env_id)


_OBS_HELP = (
    "supported leaves are Box, Discrete, MultiDiscrete (1-D) and MultiBinary, inside Dict "
    "and Tuple spaces; wrap the env to convert the others"
)


def observation_leaves(
    space: Any, *, env_id: str = "env", mask_key: str = "action_mask"
) -> list[SpaceLeaf]:
    """The leaves of an observation space, in Gymnasium's key order (nested depth first).

    A ``Dict`` entry named ``mask_key`` at the top level is the action mask (kind
    ``"mask"``): never encoded, never normalised.

    Example:
        >>> from gymnasium import spaces
        >>> obs = spaces.Dict({"pos": spaces.Box(-1, 1, (2,)), "room": spaces.Discrete(4),
        ...                    "action_mask": spaces.MultiBinary(3)})
        >>> [(leaf.name, leaf.kind) for leaf in observation_leaves(obs)]
        [('action_mask', 'mask'), ('pos', 'vector'), ('room', 'discrete')]
    """
    from gymnasium import spaces

    out: list[SpaceLeaf] = []

    def visit(sp: Any, path: tuple[str, ...]) -> None:
        where = f"{env_id}: observation leaf {'.'.join(path) or '<root>'!r}"
        if isinstance(sp, spaces.Dict):
            for key, sub in sp.spaces.items():
                if path == () and key == mask_key:
                    out.append(SpaceLeaf((key,), "mask", _mask_shape(sub, f"{env_id}: {key!r}")))
                else:
                    visit(sub, (*path, str(key)))
        elif isinstance(sp, spaces.Tuple):
            for i, sub in enumerate(sp.spaces):
                visit(sub, (*path, str(i)))
        elif isinstance(sp, spaces.Discrete):
            out.append(SpaceLeaf(path, "discrete", (), (int(sp.n),)))
        elif isinstance(sp, spaces.MultiDiscrete) and len(sp.nvec.shape) == 1:
            out.append(
                SpaceLeaf(path, "multi_discrete", tuple(sp.shape), tuple(int(n) for n in sp.nvec))
            )
        elif isinstance(sp, spaces.MultiBinary):
            out.append(SpaceLeaf(path, "binary", tuple(sp.shape)))
        elif isinstance(sp, spaces.Box):
            image = str(sp.dtype) == "uint8" and len(sp.shape) == 3
            if image and sp.shape[-1] > MAX_CHANNELS:
                # the leaf encoder reads (H, W, C); a (C, H, W) leaf would be misread silently
                raise ValueError(
                    f"{where} is a uint8 image of shape {tuple(sp.shape)}; image leaves must "
                    f"be channels last (H, W, C) with at most {MAX_CHANNELS} channels. "
                    "Transpose it (gymnasium.wrappers.TransformObservation) or make it float."
                )
            out.append(SpaceLeaf(path, "image" if image else "vector", tuple(sp.shape)))
        else:
            raise ValueError(f"{where} is {_short(sp)}; {_OBS_HELP}.")
        if out and 0 in out[-1].shape:
            raise ValueError(f"{where} has an empty shape {out[-1].shape}; drop that leaf.")

    visit(space, ())
    return out


def action_heads(space: Any, *, env_id: str = "env") -> list[SpaceLeaf]:
    """One distribution head per action leaf; a ``MultiDiscrete`` gives one per entry.

    Example:
        >>> from gymnasium import spaces
        >>> act = spaces.Dict({"move": spaces.MultiDiscrete([3, 2]),
        ...                    "fire": spaces.MultiBinary(2)})
        >>> [(h.name, h.kind, h.sizes) for h in action_heads(act)][1:]
        [('move.0', 'categorical', (3,)), ('move.1', 'categorical', (2,))]
    """
    from gymnasium import spaces

    out: list[SpaceLeaf] = []

    def visit(sp: Any, path: tuple[str, ...]) -> None:
        where = f"{env_id}: action leaf {'.'.join(path) or '<root>'!r}"
        if isinstance(sp, spaces.Dict):
            for key, sub in sp.spaces.items():
                visit(sub, (*path, str(key)))
        elif isinstance(sp, spaces.Tuple):
            for i, sub in enumerate(sp.spaces):
                visit(sub, (*path, str(i)))
        elif isinstance(sp, spaces.Discrete):
            if sp.start != 0:
                raise ValueError(
                    f"{where} is Discrete starting at {sp.start}; ppokit supports Discrete(n) "
                    "starting at 0."
                )
            out.append(SpaceLeaf(path, "categorical", (), (int(sp.n),)))
        elif isinstance(sp, spaces.MultiDiscrete) and len(sp.nvec.shape) == 1:
            if any(int(s) != 0 for s in sp.start):
                raise ValueError(f"{where} is MultiDiscrete with a nonzero start; use start=0.")
            for i, n in enumerate(sp.nvec):
                out.append(SpaceLeaf((*path, str(i)), "categorical", (), (int(n),)))
        elif isinstance(sp, spaces.MultiBinary):
            out.append(SpaceLeaf(path, "bernoulli", tuple(sp.shape)))
        elif isinstance(sp, spaces.Box) and str(sp.dtype).startswith("float"):
            low = tuple(float(x) for x in sp.low.reshape(-1))
            high = tuple(float(x) for x in sp.high.reshape(-1))
            out.append(SpaceLeaf(path, "normal", tuple(sp.shape), low=low, high=high))
        else:
            raise ValueError(
                f"{where} is {_short(sp)}; supported action leaves are Discrete, MultiDiscrete "
                "(1-D), MultiBinary and float Box, inside Dict and Tuple spaces."
            )

    visit(space, ())
    return out


def _mask_shape(space: Any, where: str) -> tuple[int, ...]:
    from gymnasium import spaces

    if isinstance(space, (spaces.MultiBinary, spaces.Box)):
        return tuple(space.shape)
    raise ValueError(
        f"{where} (the action mask) is {_short(space)}; expected MultiBinary(n) or a Box of "
        "0/1 values with one flag per action."
    )


def _short(space: Any) -> str:
    text = repr(space)
    return text if len(text) <= 60 else text[:15] + "..."
