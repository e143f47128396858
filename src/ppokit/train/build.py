"""The networks and optimizer a run starts from, built from its configuration.

:func:`build_actor_critic` makes separate actor and critic MLPs for an env's spaces;
:func:`build_optimizer` the Adam over their (unique) parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from tensordict.nn import TensorDictModule
from torch import nn

from ppokit.envs.structured import StructuredVecEnv

if TYPE_CHECKING:
    from ppokit.objectives.ppo import ClipPPOLoss
    from ppokit.train.settings.config import TrainConfig

__all__ = [
    "GaussianHead",
    "SpacesLike",
    "actor_from_net",
    "build_actor_critic",
    "build_for_config",
    "build_loss",
    "build_optimizer",
    "unique_params",
]


class SpacesLike(Protocol):
    """What the builder reads from an env (:class:`~ppokit.envs.gym.GymVecEnv` has it)."""

    obs_shape: tuple[int, ...]
    discrete: bool
    num_actions: int


class GaussianHead(nn.Module):
    """``loc = net(x)``, ``scale = exp(log_std)``: a state-independent std, as in the PPO paper's
    MuJoCo experiments (Schulman et al. 2017) and CleanRL/SB3's continuous policies.

    Shapes: ``x [*B, obs]`` -> ``loc, scale [*B, action_dim]``.

    Example:
        >>> head = GaussianHead(nn.Linear(3, 2), 2, init_log_std=0.0)
        >>> [t.shape for t in head(torch.zeros(5, 3))]
        [torch.Size([5, 2]), torch.Size([5, 2])]
    """

    def __init__(self, net: nn.Module, action_dim: int, *, init_log_std: float) -> None:
        super().__init__()
        self.net = net
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.net(obs)
        return loc, self.log_std.exp().expand_as(loc)


def build_actor_critic(
    env: SpacesLike | StructuredVecEnv,
    *,
    hidden_sizes: tuple[int, ...] = (64, 64),
    activation: str = "tanh",
    init_log_std: float = 0.0,
    ortho_init: bool = True,
    share_trunk: bool = True,
    recurrent: str = "none",
    recurrent_size: int = 128,
    recurrent_shared: bool = False,
    precision: str = "float32",
) -> tuple[Any, Any]:
    """Separate actor and critic MLPs for ``env`` (ppokit modules, TorchRL keys).

    Discrete actions: ``Categorical(logits)``; Box actions: ``IndependentNormal(loc, scale)``
    with a learned state-independent log-std. Orthogonal init, policy head gain 0.01, value
    head gain 1 ("The 37 Implementation Details of PPO", Huang et al. 2022); with
    ``ortho_init=False`` torch's default ``nn.Linear`` init instead (rl-zoo's tuned MuJoCo
    settings use it). The actor reads ``"observation" [*B, obs]`` and writes ``"action"``
    (``[*B]`` or ``[*B, A]``) and ``"action_log_prob" [*B]``; the critic writes
    ``"state_value" [*B, 1]``. ``recurrent="lstm"``/``"gru"``: an encoder MLP, a
    ``recurrent_size`` core (one shared by both with ``recurrent_shared``) and linear heads
    (:mod:`ppokit.train.recurrent.build`).

    Image observations (rank 3) get the Nature CNN instead
    (:func:`~ppokit.train.build_cnn.build_cnn_actor_critic`; ``share_trunk``: one trunk for
    both, the default); ``hidden_sizes``, ``activation`` and ``ortho_init`` are for the MLPs;
    ``precision`` (``"float32"`` or ``"bfloat16"``, :mod:`ppokit.train.precision`) is the
    CNN's arithmetic.

    Example:
        >>> from tensordict import TensorDict
        >>> from ppokit.envs.gym import GymVecEnv
        >>> env = GymVecEnv("CartPole-v1", 1)
        >>> actor, critic = build_actor_critic(env)
        >>> td = actor(TensorDict({"observation": torch.zeros(1, 4)}, [1]))
        >>> td["action"].shape, critic(td)["state_value"].shape
        (torch.Size([1]), torch.Size([1, 1]))
        >>> env.close()
    """
    from ppokit.modules.actors import ValueOperator
    from ppokit.modules.mlp import MLP

    if isinstance(env, StructuredVecEnv):  # Dict/Tuple/MultiDiscrete/masks: composite heads
        from ppokit.train.structured.training import build_structured_actor_critic

        return build_structured_actor_critic(
            env,
            hidden_sizes=hidden_sizes,
            activation=activation,
            init_log_std=init_log_std,
            ortho_init=ortho_init,
        )

    if len(env.obs_shape) == 3 and recurrent == "none":  # images: the Nature CNN
        from ppokit.train.build_cnn import build_cnn_actor_critic

        return build_cnn_actor_critic(
            env, share_trunk=share_trunk, init_log_std=init_log_std, precision=precision
        )

    activations = {"tanh": nn.Tanh, "relu": nn.ReLU}
    if activation not in activations:
        raise ValueError(f"activation must be one of {sorted(activations)}, got {activation!r}.")
    act_cls = activations[activation]
    if recurrent != "none":  # (images too: CNN -> core -> heads)
        from ppokit.train.recurrent.build import build_recurrent_actor_critic

        return build_recurrent_actor_critic(
            env,
            kind=recurrent,
            recurrent_size=recurrent_size,
            shared=recurrent_shared,
            hidden_sizes=tuple(hidden_sizes),
            activation=act_cls,
            init_log_std=init_log_std,
            ortho_init=ortho_init,
            share_trunk=share_trunk,
            precision=precision,
        )
    obs_dim = int(np.prod(env.obs_shape))
    cells = tuple(hidden_sizes)
    # output gains only exist for the orthogonal init (MLP rejects them otherwise)
    policy_init: dict[str, Any] = {"output_gain": 0.01} if ortho_init else {"init": "default"}
    value_init: dict[str, Any] = {"output_gain": 1.0} if ortho_init else {"init": "default"}
    net = MLP(obs_dim, env.num_actions, num_cells=cells, activation_class=act_cls, **policy_init)
    actor = actor_from_net(env, net, init_log_std=init_log_std)
    value_net = MLP(obs_dim, 1, num_cells=cells, activation_class=act_cls, **value_init)
    critic = ValueOperator(value_net, in_keys=["observation"])
    return actor, critic


def build_for_config(env: SpacesLike | StructuredVecEnv, cfg: TrainConfig) -> tuple[Any, Any]:
    """:func:`build_actor_critic` with a run's network fields: the one place that maps them,
    so the trainer and :func:`~ppokit.train.deploy.policy.load_policy` build the same layout.

    Example:
        >>> from ppokit.envs.gym import GymVecEnv
        >>> from ppokit.train.settings.config import TrainConfig
        >>> with GymVecEnv("CartPole-v1", 1) as env:
        ...     actor, critic = build_for_config(env, TrainConfig(hidden_sizes=(8,)))
        >>> critic.module[0].out_features
        8
    """
    return build_actor_critic(
        env,
        hidden_sizes=cfg.hidden_sizes,
        activation=cfg.activation,
        init_log_std=cfg.init_log_std,
        ortho_init=cfg.ortho_init,
        share_trunk=cfg.share_trunk,
        recurrent=cfg.recurrent,
        recurrent_size=cfg.recurrent_size,
        recurrent_shared=cfg.recurrent_shared,
        precision=cfg.precision,
    )


def actor_from_net(env: SpacesLike, net: nn.Module, *, init_log_std: float) -> Any:
    """The flat-action actor around ``net`` (``"observation"`` -> ``num_actions`` outputs).

    Discrete actions: the outputs are ``Categorical`` logits; Box actions: they are the
    ``IndependentNormal``'s mean, with a learned state-independent log-std
    (:class:`GaussianHead`). The MLP and CNN builders both end in it.

    Example:
        >>> from types import SimpleNamespace
        >>> from tensordict import TensorDict
        >>> env = SimpleNamespace(obs_shape=(3,), discrete=False, num_actions=2)
        >>> actor = actor_from_net(env, nn.Linear(3, 2), init_log_std=0.0)
        >>> actor(TensorDict({"observation": torch.zeros(4, 3)}, [4]))["action"].shape
        torch.Size([4, 2])
    """
    from ppokit.modules.actors import ProbabilisticActor
    from ppokit.modules.distributions import Categorical, IndependentNormal

    if env.discrete:
        params = TensorDictModule(net, in_keys=["observation"], out_keys=["logits"])
        return ProbabilisticActor(
            params, in_keys=["logits"], distribution_class=Categorical, return_log_prob=True
        )
    head = GaussianHead(net, env.num_actions, init_log_std=init_log_std)
    params = TensorDictModule(head, in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        params, in_keys=["loc", "scale"], distribution_class=IndependentNormal, return_log_prob=True
    )


def unique_params(*modules: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``modules`` in order, each once (a shared trunk is not stepped twice).

    Example:
        >>> shared = nn.Linear(2, 2)
        >>> len(unique_params(shared, nn.Sequential(shared)))
        2
    """
    seen: set[int] = set()
    out = []
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def build_optimizer(params: list[nn.Parameter], *, lr: float, eps: float) -> torch.optim.Adam:
    """Adam over ``params``; torch's fused kernel where the build offers it.

    The fused kernel does the whole update in one call: cheaper for many small tensors.

    Example:
        >>> opt = build_optimizer([nn.Parameter(torch.zeros(3))], lr=1e-3, eps=1e-5)
        >>> opt.param_groups[0]["eps"]
        1e-05
    """
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):  # no fused kernel for these tensors in this build
        return torch.optim.Adam(params, lr=lr, eps=eps)


def build_loss(
    actor: nn.Module, critic: nn.Module, cfg: TrainConfig, *, normalize_advantage: bool
) -> ClipPPOLoss:
    """The run's ``ClipPPOLoss`` over ``actor`` and ``critic``, with its GAE estimator.

    ``functional=False``: the modules are called as they are, which keeps the hot path free
    of parameter swapping and lets a launcher wrap them in DistributedDataParallel.

    Example:
        >>> from ppokit.envs.gym import GymVecEnv
        >>> from ppokit.train.settings.config import TrainConfig
        >>> with GymVecEnv("CartPole-v1", 1) as env:
        ...     actor, critic = build_actor_critic(env)
        >>> loss = build_loss(actor, critic, TrainConfig(entropy_coef=0.01),
        ...                   normalize_advantage=True)
        >>> round(float(loss.entropy_coef), 6), loss.value_estimator.gamma
        (0.01, 0.99)
    """
    from ppokit.objectives.ppo import ClipPPOLoss

    loss = ClipPPOLoss(
        actor,
        critic,
        clip_epsilon=cfg.clip_epsilon,
        entropy_bonus=True,
        entropy_coef=cfg.entropy_coef,
        critic_coef=cfg.critic_coef,
        loss_critic_type=cfg.loss_critic_type,
        normalize_advantage=normalize_advantage,
        clip_value=cfg.clip_value,
        functional=False,
    )
    loss.make_value_estimator("gae", gamma=cfg.gamma, lmbda=cfg.gae_lambda)
    return loss
