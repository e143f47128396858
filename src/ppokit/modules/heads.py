"""Actor and critic for structured spaces: leaf encoders, an MLP, one distribution per head.

The actor is a tensordict ``ProbabilisticTensorDictSequential`` whose distribution is a
``CompositeDistribution`` with one head per action leaf (``Categorical`` or, with an action
mask, ``MaskedCategorical`` for ``Discrete`` and each ``MultiDiscrete`` entry;
``IndependentBernoulli`` for ``MultiBinary``, ``MaskedBernoulli`` with a mask per flag;
``IndependentNormal`` with a state-independent
log-std, or ``TanhNormal`` within the bounds, for ``Box``). PPO's loss scores it as any
composite policy: the heads' log-probs are summed per sample, their entropies logged per head
and summed, and ``entropy_coeff`` may weigh each head (:mod:`ppokit.objectives.composite`).
The heads share one MLP over the concatenated leaf features (a MultiDiscrete's heads are the
factored policy of Vinyals et al.'s StarCraft II agents and of Huang & Ontañón 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from tensordict.nn import (
    CompositeDistribution,
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from tensordict.utils import NestedKey
from torch import nn

from ppokit.modules.actors import ValueOperator
from ppokit.modules.distributions import (
    Categorical,
    IndependentNormal,
    MaskedCategorical,
    TanhNormal,
)
from ppokit.modules.distributions.bernoulli import IndependentBernoulli
from ppokit.modules.distributions.masked_bernoulli import MaskedBernoulli
from ppokit.modules.encoders import LeafLike, MultiLeafEncoder, build_encoder
from ppokit.modules.mlp import MLP

__all__ = [
    "HeadLike",
    "PolicyHeads",
    "head_key",
    "mask_width",
    "structured_actor",
    "structured_critic",
]


class HeadLike(Protocol):
    """An action head (:class:`ppokit.envs.spaces.SpaceLeaf` has these)."""

    @property
    def path(self) -> tuple[str, ...]: ...
    @property
    def kind(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def sizes(self) -> tuple[int, ...]: ...
    @property
    def low(self) -> tuple[float, ...]: ...
    @property
    def high(self) -> tuple[float, ...]: ...
    @property
    def name(self) -> str: ...


def head_key(head: HeadLike) -> NestedKey:
    """Where a head's action lives: ``"action"`` for a single leaf, else ``("action", *path)``."""
    return ("action", *head.path) if head.path else "action"


def _width(head: HeadLike) -> int:
    return head.sizes[0] if head.kind == "categorical" else math.prod(head.shape)


def mask_width(head: HeadLike) -> int:
    """A head's flags in the action mask: one per choice of a categorical, two per flag of a
    Bernoulli (allow 0, allow 1).

    Raises:
        ValueError: a Gaussian head (masks do not apply to ``Box`` actions).
    """
    if head.kind == "categorical":
        return head.sizes[0]
    if head.kind == "bernoulli":
        return 2 * math.prod(head.shape)
    raise ValueError(
        f"An action mask applies to Discrete, MultiDiscrete and MultiBinary actions; action "
        f"leaf {head.name!r} is a Box (kind {head.kind!r})."
    )


class PolicyHeads(nn.Module):
    """``(*leaves[, mask]) -> per-head parameters``: encoder, MLP, split per head.

    Outputs, head by head: ``logits [B, n]`` (and the head's ``mask [B, n]`` when masked) for
    a categorical, ``logits [B, *shape]`` (and ``mask [B, *shape, 2]`` when masked) for a
    Bernoulli, ``loc, scale [B, *shape]`` for a Gaussian (``scale = exp(log_std)``,
    state-independent).

    Args:
        encoder: the leaves' encoder.
        heads: the action heads.

    Keyword Args:
        masked: whether the last input is the concatenated ``[B, M]`` action mask
            (categorical and Bernoulli heads only; :func:`mask_width` flags each).
        num_cells, activation_class, init, output_gain: the MLP's (see :class:`MLP`).
        init_log_std: the Gaussians' initial log-std.
    """

    def __init__(
        self,
        encoder: MultiLeafEncoder,
        heads: Sequence[HeadLike],
        *,
        masked: bool,
        num_cells: Sequence[int],
        activation_class: Callable[[], nn.Module],
        ortho_init: bool,
        init_log_std: float,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.kinds = [h.kind for h in heads]
        self.shapes = [tuple(h.shape) for h in heads]
        self.widths = [_width(h) for h in heads]
        self.masked = masked
        self.mask_widths = [mask_width(h) for h in heads] if masked else []
        init: dict[str, Any] = {"output_gain": 0.01} if ortho_init else {"init": "default"}
        self.mlp = MLP(
            encoder.out_features,
            sum(self.widths),
            num_cells=tuple(num_cells),
            activation_class=activation_class,
            **init,
        )
        self.log_std = nn.ParameterDict(
            {
                str(i): nn.Parameter(torch.full(h.shape, float(init_log_std)))
                for i, h in enumerate(heads)
                if h.kind == "normal"
            }
        )

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves, mask = (inputs[:-1], inputs[-1]) if self.masked else (inputs, None)
        out = self.mlp(self.encoder(*leaves)).split(self.widths, dim=-1)
        masks = mask.split(self.mask_widths, dim=-1) if mask is not None else None
        params: list[torch.Tensor] = []
        batch = out[0].shape[:1]
        for i, (kind, shape, raw) in enumerate(zip(self.kinds, self.shapes, out)):
            if kind == "categorical":
                params.append(raw)
                if masks is not None:
                    params.append(masks[i])
            elif kind == "bernoulli":
                params.append(raw.reshape(*batch, *shape))
                if masks is not None:  # per flag: (allow 0, allow 1)
                    params.append(masks[i].reshape(*batch, *shape, 2))
            else:
                loc = raw.reshape(*batch, *shape)
                params += [loc, self.log_std[str(i)].exp().expand_as(loc)]
        return tuple(params)


def structured_actor(
    leaves: Sequence[LeafLike],
    heads: Sequence[HeadLike],
    *,
    leaf_keys: Sequence[NestedKey],
    mask_key: NestedKey | None = None,
    encoders: Mapping[str, nn.Module] | None = None,
    num_cells: Sequence[int] = (64, 64),
    activation_class: Callable[[], nn.Module] = nn.Tanh,
    ortho_init: bool = True,
    init_log_std: float = 0.0,
    bounded: bool = False,
) -> ProbabilisticTensorDictSequential:
    """A composite-distribution actor over ``heads``, reading the leaves at ``leaf_keys``.

    Args:
        leaves: the observation leaves (mask excluded), in input order.
        heads: the action heads (:func:`ppokit.envs.spaces.action_heads`).

    Keyword Args:
        leaf_keys: each leaf's TensorDict key, e.g. ``("observation", "pos")``.
        mask_key: the action mask's key (categorical and Bernoulli heads; None: no mask):
            ``[B, M]``, the heads' flags concatenated (:func:`mask_width`).
        encoders: user encoders by leaf name (see :func:`build_encoder`).
        num_cells, activation_class, ortho_init, init_log_std: the network's.
        bounded: ``Box`` heads are ``TanhNormal`` within the bounds instead of a Gaussian
            whose actions are clipped when sent to the env.

    Writes each head's action at :func:`head_key` and its log-prob beside it
    (``"<key>_log_prob"``).

    Raises:
        ValueError: a mask with a Gaussian head, or ``bounded`` with an infinite bound.

    Example:
        >>> from tensordict import TensorDict
        >>> from gymnasium import spaces
        >>> from ppokit.envs.spaces import action_heads, observation_leaves
        >>> leaves = observation_leaves(spaces.Box(-1, 1, (3,)))
        >>> heads = action_heads(spaces.MultiDiscrete([3, 2]))
        >>> actor = structured_actor(leaves, heads, leaf_keys=[("observation", "obs")])
        >>> td = actor(TensorDict({"observation": {"obs": torch.zeros(4, 3)}}, [4]))
        >>> td["action", "0"].shape, td["action", "1_log_prob"].shape
        (torch.Size([4]), torch.Size([4]))
    """
    if mask_key is not None:
        for head in heads:
            mask_width(head)  # refuses a Box head, naming it
    net = PolicyHeads(
        build_encoder(leaves, encoders=encoders),
        heads,
        masked=mask_key is not None,
        num_cells=num_cells,
        activation_class=activation_class,
        ortho_init=ortho_init,
        init_log_std=init_log_std,
    )
    out_keys: list[NestedKey] = []
    dist_map: dict[NestedKey, Any] = {}
    extra: dict[NestedKey, dict[str, Any]] = {}
    for head in heads:
        key = head_key(head)
        where = ("params", *((key,) if isinstance(key, str) else key))
        if head.kind == "categorical":
            names = ["logits", "mask"] if mask_key is not None else ["logits"]
            dist_map[key] = MaskedCategorical if mask_key is not None else Categorical
        elif head.kind == "bernoulli":
            names = ["logits", "mask"] if mask_key is not None else ["logits"]
            dist_map[key] = MaskedBernoulli if mask_key is not None else IndependentBernoulli
            extra[key] = {"event_dims": len(head.shape)}
        else:
            names = ["loc", "scale"]
            dist_map[key], extra[key] = _box_head(head, bounded)
        out_keys += [(*where, n) for n in names]
    in_keys = [*leaf_keys, *([mask_key] if mask_key is not None else [])]
    module = TensorDictModule(net, in_keys=in_keys, out_keys=out_keys)
    sampler = ProbabilisticTensorDictModule(
        in_keys=["params"],
        out_keys=list(dist_map),
        distribution_class=CompositeDistribution,
        distribution_kwargs={"distribution_map": dist_map, "extra_kwargs": extra},
        return_log_prob=True,
        default_interaction_type=InteractionType.RANDOM,
    )
    return ProbabilisticTensorDictSequential(module, sampler)


def _box_head(head: HeadLike, bounded: bool) -> tuple[type, dict[str, Any]]:
    event = {"event_dims": len(head.shape)}
    if not bounded:
        return IndependentNormal, event
    if not all(math.isfinite(x) for x in (*head.low, *head.high)):
        raise ValueError(
            f"Action leaf {head.name!r} is a Box with infinite bounds; a bounded (TanhNormal) "
            "head needs finite low and high. Use bounded=False (a Gaussian whose actions are "
            "clipped) or give the env finite bounds."
        )
    low = torch.tensor(head.low).reshape(head.shape)
    high = torch.tensor(head.high).reshape(head.shape)
    return TanhNormal, {**event, "low": low, "high": high}


def structured_critic(
    leaves: Sequence[LeafLike],
    *,
    leaf_keys: Sequence[NestedKey],
    encoders: Mapping[str, nn.Module] | None = None,
    num_cells: Sequence[int] = (64, 64),
    activation_class: Callable[[], nn.Module] = nn.Tanh,
    ortho_init: bool = True,
) -> ValueOperator:
    """``state_value [B, 1]`` from the leaves: its own encoders and MLP.

    Example:
        >>> from tensordict import TensorDict
        >>> from gymnasium import spaces
        >>> from ppokit.envs.spaces import observation_leaves
        >>> leaves = observation_leaves(spaces.Dict({"a": spaces.Discrete(3)}))
        >>> critic = structured_critic(leaves, leaf_keys=[("observation", "a")])
        >>> critic(TensorDict({"observation": {"a": torch.tensor([0, 2])}}, [2]))[
        ...     "state_value"].shape
        torch.Size([2, 1])
    """
    encoder = build_encoder(leaves, encoders=encoders)
    init: dict[str, Any] = {"output_gain": 1.0} if ortho_init else {"init": "default"}
    mlp = MLP(
        encoder.out_features,
        1,
        num_cells=tuple(num_cells),
        activation_class=activation_class,
        **init,
    )
    return ValueOperator(_EncodedMLP(encoder, mlp), in_keys=list(leaf_keys))


class _EncodedMLP(nn.Module):
    """``(*leaves) -> mlp(encoder(*leaves))`` (``nn.Sequential`` passes one input only)."""

    def __init__(self, encoder: MultiLeafEncoder, mlp: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.mlp = mlp

    def forward(self, *leaves: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoder(*leaves))
