"""Encoders for structured observations: one per leaf, their features concatenated.

A structured observation (Gymnasium ``Dict``/``Tuple``) reaches the networks as several
tensors, one per leaf. Each leaf gets the encoder its kind calls for (as Stable-Baselines3's
``CombinedExtractor`` does): vectors are flattened, ``Discrete``/``MultiDiscrete`` leaves
one-hot encoded (an index is a label, not a magnitude), images go through a small CNN
(channels last, uint8 scaled to [0, 1]); the features are concatenated into one
``[B, out_features]`` vector for the MLP above. A user may replace any leaf's encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from torch import nn

__all__ = [
    "LEAF_DTYPES",
    "FlattenEncoder",
    "ImageEncoder",
    "LeafLike",
    "MultiLeafEncoder",
    "OneHotEncoder",
    "build_encoder",
    "leaf_encoder",
]

#: the dtype each leaf kind is stored and fed as
LEAF_DTYPES: dict[str, torch.dtype] = {
    "vector": torch.float32,
    "image": torch.uint8,
    "discrete": torch.int64,
    "multi_discrete": torch.int64,
    "binary": torch.float32,
    "mask": torch.bool,
}


class LeafLike(Protocol):
    """An observation leaf (:class:`ppokit.envs.spaces.SpaceLeaf` has these)."""

    @property
    def kind(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def sizes(self) -> tuple[int, ...]: ...
    @property
    def name(self) -> str: ...


class OneHotEncoder(nn.Module):
    """Indices ``[*B]`` (``multi=False``, one size) or ``[*B, k]`` (one size per entry) ->
    one-hot ``[*B, sum(sizes)]``.

    Example:
        >>> OneHotEncoder((3,))(torch.tensor([2, 0]))
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
        >>> OneHotEncoder((2, 3), multi=True)(torch.tensor([[1, 2]]))
        tensor([[0., 1., 0., 0., 1.]])
    """

    def __init__(self, sizes: Sequence[int], *, multi: bool = False) -> None:
        super().__init__()
        self.sizes = tuple(int(n) for n in sizes)
        self.multi = multi
        # offsets place entry i's one-hot block after the blocks of the entries before it
        offsets = torch.tensor([0, *self.sizes[:-1]]).cumsum(0)
        self.offsets: torch.Tensor
        self.register_buffer("offsets", offsets, persistent=False)
        self.total = sum(self.sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.multi:
            return nn.functional.one_hot(x.long(), self.total).float()
        hot = nn.functional.one_hot(x.long() + self.offsets, self.total)
        return hot.sum(-2).float()


class ImageEncoder(nn.Module):
    """uint8 images ``[*B, H, W, C]`` -> ``[*B, features]``: two strided convs, a linear.

    A small network for small images; for Atari-size frames use the Nature CNN.

    Example:
        >>> ImageEncoder((8, 8, 3))(torch.zeros(2, 8, 8, 3, dtype=torch.uint8)).shape
        torch.Size([2, 128])
    """

    def __init__(self, shape: Sequence[int], *, features: int = 128) -> None:
        super().__init__()
        h, w, c = (int(s) for s in shape)
        self.convs = nn.Sequential(
            nn.Conv2d(c, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, c, h, w)).shape[-1]
        self.out = nn.Sequential(nn.Linear(flat, features), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3]
        images = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
        return self.out(self.convs(images)).reshape(*batch, -1)


class FlattenEncoder(nn.Module):
    """``[*B, *shape]`` -> float ``[*B, prod(shape)]`` (a scalar leaf becomes ``[*B, 1]``)."""

    def __init__(self, event_dims: int) -> None:
        super().__init__()
        self.event_dims = int(event_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.event_dims == 0:
            return x.float().unsqueeze(-1)
        return x.flatten(-self.event_dims).float()


def leaf_encoder(leaf: LeafLike) -> nn.Module:
    """The default encoder of one leaf (flatten, one-hot or CNN).

    Raises:
        ValueError: a mask leaf (masks are never encoded) or an unknown kind, naming the leaf.
    """
    if leaf.kind in ("vector", "binary"):
        return FlattenEncoder(len(leaf.shape))
    if leaf.kind == "discrete":
        return OneHotEncoder(leaf.sizes)
    if leaf.kind == "multi_discrete":
        return OneHotEncoder(leaf.sizes, multi=True)
    if leaf.kind == "image":
        return ImageEncoder(leaf.shape)
    raise ValueError(f"Observation leaf {leaf.name!r} of kind {leaf.kind!r} has no encoder.")


class MultiLeafEncoder(nn.Module):
    """Encode each leaf and concatenate: ``(*leaves [*B, *shape]) -> [*B, out_features]``.

    Args:
        encoders: one module per leaf, in the order the leaves are passed.
        out_features: the summed width of their outputs.
    """

    def __init__(self, encoders: Sequence[nn.Module], out_features: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.out_features = int(out_features)

    def forward(self, *leaves: torch.Tensor) -> torch.Tensor:
        return torch.cat([enc(x) for enc, x in zip(self.encoders, leaves)], dim=-1)


def build_encoder(
    leaves: Sequence[LeafLike], *, encoders: Mapping[str, nn.Module] | None = None
) -> MultiLeafEncoder:
    """One encoder per leaf (``encoders[leaf.name]`` where given), concatenated.

    A user encoder takes the leaf ``[*B, *shape]`` in its stored dtype (:data:`LEAF_DTYPES`,
    any number of batch dims ``*B``) and returns ``[*B, F]``; ``F`` is measured with one
    zero input.

    Raises:
        ValueError: ``encoders`` names a leaf that does not exist, or an encoder does not
            return ``[B, F]``.

    Example:
        >>> from ppokit.envs.spaces import observation_leaves
        >>> from gymnasium import spaces
        >>> leaves = observation_leaves(spaces.Dict({"pos": spaces.Box(-1, 1, (2,)),
        ...                                          "room": spaces.Discrete(4)}))
        >>> enc = build_encoder(leaves)
        >>> enc.out_features, enc(torch.zeros(5, 2), torch.zeros(5, dtype=torch.long)).shape
        (6, torch.Size([5, 6]))
    """
    given = dict(encoders or {})
    names = [leaf.name for leaf in leaves]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(
            f"encoders name {unknown}, which are not observation leaves; the leaves are {names}."
        )
    modules, width = [], 0
    for leaf in leaves:
        module = given.get(leaf.name) or leaf_encoder(leaf)
        with torch.no_grad():
            out = module(torch.zeros(1, *leaf.shape, dtype=LEAF_DTYPES[leaf.kind]))
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
            raise ValueError(
                f"The encoder of leaf {leaf.name!r} returned "
                f"{tuple(getattr(out, 'shape', ()))} for one input; expected [B, features]."
            )
        modules.append(module)
        width += int(out.shape[-1])
    return MultiLeafEncoder(modules, width)
