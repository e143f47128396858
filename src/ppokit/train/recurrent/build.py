"""The recurrent actor and critic of ``ppokit train --recurrent {lstm,gru}``.

encoder -> LSTM/GRU core -> linear heads. The encoder is an MLP, or for image observations the
Nature CNN (CleanRL's ``ppo_atari_lstm.py`` layout: CNN -> LSTM -> heads; the rollout keeps
the uint8 frames). With ``shared=True`` actor and critic are made of the very same encoder and
core modules (one state to carry, both losses train the core); otherwise the critic has its
own core, with state keys prefixed ``critic_``, and for images its own CNN unless
``share_trunk`` (one CNN feeding both cores).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from ppokit.modules.recurrent import GRUModule, LSTMModule, RecurrentModuleBase

__all__ = ["RECURRENT_KINDS", "build_recurrent_actor_critic", "make_core"]

#: the ``--recurrent`` choices that build a recurrent core
RECURRENT_KINDS = ("lstm", "gru")
#: the Nature CNN's feature width (the core's input for image observations)
_CNN_FEATURES = 512


def make_core(
    kind: str, input_size: int, hidden_size: int, *, prefix: str = "", ortho_init: bool = True
) -> RecurrentModuleBase:
    """An LSTM/GRU module reading ``prefix + "embed"``, writing ``prefix + "features"``.

    ``ortho_init``: orthogonal weights, zero biases (CleanRL's ``ppo_atari_lstm.py`` choice);
    otherwise torch's default init.

    Example:
        >>> make_core("lstm", 4, 8, prefix="critic_").state_keys
        ('critic_recurrent_state_h', 'critic_recurrent_state_c')
    """
    keys: dict[str, Any] = {"in_key": prefix + "embed", "out_key": prefix + "features"}
    core: RecurrentModuleBase
    if kind == "lstm":
        core = LSTMModule(
            input_size,
            hidden_size,
            h_key=prefix + "recurrent_state_h",
            c_key=prefix + "recurrent_state_c",
            **keys,
        )
    elif kind == "gru":
        core = GRUModule(input_size, hidden_size, state_key=prefix + "recurrent_state", **keys)
    else:
        raise ValueError(f"recurrent must be one of {RECURRENT_KINDS}, got {kind!r}.")
    if ortho_init:
        for name, param in core.rnn.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(param, 1.0)
            else:
                nn.init.zeros_(param)
    return core


def build_recurrent_actor_critic(
    env: Any,
    *,
    kind: str,
    recurrent_size: int,
    shared: bool,
    hidden_sizes: tuple[int, ...],
    activation: type[nn.Module],
    init_log_std: float,
    ortho_init: bool,
    share_trunk: bool = True,
    precision: str = "float32",
) -> tuple[Any, Any]:
    """Actor and critic for ``env``'s spaces around a recurrent core (see the module doc).

    Image observations (rank 3, uint8): a :class:`~ppokit.modules.cnn.NatureCNN` encoder
    (512 features; ``hidden_sizes``, ``activation`` and ``ortho_init`` are for MLPs and
    unused; ``precision`` is its arithmetic). ``shared=True`` needs ``share_trunk=True``
    there (one encoder and core).

    The actor reads ``"observation"``, ``"is_init"`` and the core's state keys, and writes
    ``"action"``, ``"action_log_prob"`` and the next state under ``"next"``; the critic writes
    ``"state_value" [*B, 1]``. Called by :func:`ppokit.train.build.build_actor_critic`.

    Example:
        >>> from ppokit.envs.gym import GymVecEnv
        >>> from ppokit.train.build import build_actor_critic
        >>> with GymVecEnv("CartPole-v1", 1) as env:
        ...     actor, critic = build_actor_critic(env, recurrent="gru", recurrent_size=16)
        >>> sorted(k for k in actor.in_keys if "state" in k)
        ['recurrent_state']
    """
    from ppokit.modules.actors import ProbabilisticActor
    from ppokit.modules.distributions import Categorical, IndependentNormal
    from ppokit.modules.mlp import MLP
    from ppokit.train.build import GaussianHead

    image = len(env.obs_shape) == 3
    if image and shared and not share_trunk:
        raise ValueError(
            "--recurrent-shared shares the CNN encoder with the core, but --no-share-trunk asks "
            "for two CNNs. Drop one of them."
        )
    if not image and not hidden_sizes:
        raise ValueError("a recurrent policy needs at least one encoder layer in hidden_sizes.")
    # as the feed-forward build: output gains exist only for the orthogonal init
    init: dict[str, Any] = {} if ortho_init else {"init": "default"}
    policy_init = {"output_gain": 0.01} if ortho_init else init
    value_init = {"output_gain": 1.0} if ortho_init else init
    embed, encoder_net = (
        _image_encoder(env, share=share_trunk or shared, precision=precision)
        if image
        else _mlp_encoder(env, hidden_sizes, activation, init)
    )

    def encoder(prefix: str) -> TensorDictModule:
        return TensorDictModule(encoder_net(), in_keys=["observation"], out_keys=[prefix + "embed"])

    body = TensorDictSequential(
        encoder(""), make_core(kind, embed, recurrent_size, ortho_init=ortho_init)
    )
    head = MLP(recurrent_size, env.num_actions, num_cells=(), **policy_init)
    if env.discrete:
        params = TensorDictModule(head, in_keys=["features"], out_keys=["logits"])
        dist: dict[str, Any] = {"in_keys": ["logits"], "distribution_class": Categorical}
    else:
        gaussian = GaussianHead(head, env.num_actions, init_log_std=init_log_std)
        params = TensorDictModule(gaussian, in_keys=["features"], out_keys=["loc", "scale"])
        dist = {"in_keys": ["loc", "scale"], "distribution_class": IndependentNormal}
    actor = ProbabilisticActor(TensorDictSequential(body, params), return_log_prob=True, **dist)
    prefix = "" if shared else "critic_"
    critic_body = (
        body
        if shared
        else TensorDictSequential(
            encoder(prefix),
            make_core(kind, embed, recurrent_size, prefix=prefix, ortho_init=ortho_init),
        )
    )
    value = TensorDictModule(
        MLP(recurrent_size, 1, num_cells=(), **value_init),
        in_keys=[prefix + "features"],
        out_keys=["state_value"],
    )
    critic = TensorDictSequential(critic_body, value)
    return actor, critic


def _image_encoder(env: Any, *, share: bool, precision: str) -> tuple[int, Callable[[], nn.Module]]:
    """(features, a maker of the image encoder): the same :class:`SharedTrunk`-wrapped CNN on
    every call with ``share`` (the loss's second pass over a minibatch reuses its output),
    else a new CNN per call."""
    from ppokit.envs.images import image_layout
    from ppokit.modules.cnn import NatureCNN, SharedTrunk
    from ppokit.train.precision import compute_dtype

    shape = tuple(env.obs_shape)
    layout = image_layout(shape)
    dtype = compute_dtype(precision)

    def cnn() -> nn.Module:
        image = (shape[0], shape[1], shape[2])
        return NatureCNN(image, layout=layout, features=_CNN_FEATURES, compute_dtype=dtype)

    if not share:
        return _CNN_FEATURES, cnn
    trunk = SharedTrunk(cnn())
    return _CNN_FEATURES, lambda: trunk


def _mlp_encoder(
    env: Any, hidden_sizes: tuple[int, ...], activation: type[nn.Module], init: dict[str, Any]
) -> tuple[int, Callable[[], nn.Module]]:
    """(features, a maker of a new MLP encoder ``obs -> hidden_sizes[-1]``, activated)."""
    from ppokit.modules.mlp import MLP

    obs_dim, embed = int(np.prod(env.obs_shape)), hidden_sizes[-1]

    def mlp() -> nn.Module:
        net = MLP(obs_dim, embed, num_cells=hidden_sizes[:-1], activation_class=activation, **init)
        return nn.Sequential(net, activation())

    return embed, mlp
