"""Actor and critic for image observations: a Nature CNN trunk with a policy and a value head.

:func:`~ppokit.train.build.build_actor_critic` calls :func:`build_cnn_actor_critic` when the
env's observations are images (rank 3). By default the actor and the critic share one trunk,
as in the PPO paper's Atari network and CleanRL's ``ppo_atari.py``: both losses train it, and
:func:`~ppokit.train.build.unique_params` keeps the optimizer from stepping it twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from ppokit.envs.images import image_layout
from ppokit.modules.cnn import NatureCNN, ReuseNextStep, SharedTrunk, orthogonal_linear

if TYPE_CHECKING:
    from ppokit.train.build import SpacesLike

__all__ = ["build_cnn_actor_critic"]


def build_cnn_actor_critic(
    env: SpacesLike,
    *,
    share_trunk: bool = True,
    init_log_std: float = 0.0,
    precision: str = "float32",
) -> tuple[Any, Any]:
    """CNN actor and critic for ``env``'s image observations (keys as the MLP builder's).

    The actor reads ``"observation" [*B, C, H, W]`` (or ``HWC``; uint8, scaled to ``[0, 1]``
    inside) and writes ``"action"`` and ``"action_log_prob" [*B]``; the critic writes
    ``"state_value" [*B, 1]``. Heads: orthogonal, gain 0.01 (policy) and 1 (value).

    Args:
        env: anything with ``obs_shape``, ``discrete`` and ``num_actions``.

    Keyword Args:
        share_trunk: one CNN for both heads (default); False builds two.
        init_log_std: initial log-std of a Box-action (Gaussian) policy.
        precision: the CNN's arithmetic, ``"float32"`` or ``"bfloat16"`` (mixed precision,
            :mod:`ppokit.train.precision`).

    Raises:
        ValueError: the observation shape is no supported image layout (names the shape).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> from tensordict import TensorDict
        >>> env = SimpleNamespace(obs_shape=(4, 84, 84), discrete=True, num_actions=6)
        >>> actor, critic = build_cnn_actor_critic(env)
        >>> td = TensorDict({"observation": torch.zeros(3, 4, 84, 84, dtype=torch.uint8)}, [3])
        >>> actor(td)["action"].shape, critic(td)["state_value"].shape
        (torch.Size([3]), torch.Size([3, 1]))
        >>> actor.module[0].module[0] is critic.module.net[0]  # the shared trunk (a SharedTrunk)
        True
    """
    from ppokit.modules.actors import ValueOperator
    from ppokit.train.build import actor_from_net
    from ppokit.train.precision import compute_dtype

    shape = tuple(env.obs_shape)
    layout = image_layout(shape)
    image_shape = (shape[0], shape[1], shape[2])
    features = 512
    dtype = compute_dtype(precision)
    trunk: nn.Module = NatureCNN(image_shape, layout=layout, features=features, compute_dtype=dtype)
    critic_trunk: nn.Module
    if share_trunk:  # run once per minibatch for both heads (SharedTrunk's memo)
        trunk = critic_trunk = SharedTrunk(trunk)
    else:
        critic_trunk = NatureCNN(image_shape, layout=layout, features=features, compute_dtype=dtype)
    policy_net = nn.Sequential(trunk, orthogonal_linear(features, env.num_actions, gain=0.01))
    actor = actor_from_net(env, policy_net, init_log_std=init_log_std)
    # GAE's value pass runs the CNN once per distinct frame (ReuseNextStep)
    value_net = ReuseNextStep(nn.Sequential(critic_trunk, orthogonal_linear(features, 1, gain=1.0)))
    critic = ValueOperator(value_net, in_keys=["observation"])
    return actor, critic
