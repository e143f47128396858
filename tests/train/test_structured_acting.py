"""The structured actor on tensors: the same rollout as the actor called as a TensorDict module."""

from __future__ import annotations

import pytest
import torch
from structured_toys import ImageAndMixedAction, InvertBits, MaskedBits, MatchMultiDiscrete
from tensordict.nn import InteractionType, set_interaction_type
from torch.testing import assert_close

from ppokit.envs.structured import StructuredVecEnv
from ppokit.train.normalization import ObservationNormalizer
from ppokit.train.structured.acting import StructuredActing
from ppokit.train.structured.training import StructuredCollector, build_structured_actor_critic


def rollout(env_id, actor, *, tensordict_route: bool):
    env = StructuredVecEnv(env_id, 3)
    norm = ObservationNormalizer(env.obs_shape, enabled=env.obs_shape[0] > 0)
    # a forward hook is something the tensor route does not reproduce: the actor is then
    # called as a TensorDict module (the route before the tensor one)
    hook = actor.register_forward_hook(lambda *_: None) if tensordict_route else None
    torch.manual_seed(7)
    try:
        collector = StructuredCollector(env, actor, num_steps=12, obs_normalizer=norm, seed=3)
        data = collector.collect().clone()
        data2 = collector.collect().clone()  # a second rollout reuses the buffers
    finally:
        if hook is not None:
            hook.remove()
        env.close()
    return data, data2


@pytest.mark.parametrize(
    "env_id",
    [
        "ppokit/TicTacToe-v0",  # masked Discrete, Dict observation
        MatchMultiDiscrete,  # MultiDiscrete heads, a discrete and a Box leaf
        InvertBits,  # MultiBinary
        MaskedBits,  # masked MultiBinary
        ImageAndMixedAction,  # image leaf, Dict action of a Discrete and a Box
    ],
)
def test_tensor_route_gives_the_tensordict_route_rollout_exactly(env_id):
    env = StructuredVecEnv(env_id, 1)
    torch.manual_seed(0)
    actor, _ = build_structured_actor_critic(env)
    env.close()
    assert StructuredActing.for_actor(actor) is not None  # the tensor route serves it
    fast = rollout(env_id, actor, tensordict_route=False)
    reference = rollout(env_id, actor, tensordict_route=True)
    for got, want in zip(fast, reference):
        assert set(got.keys(True, True)) == set(want.keys(True, True))
        for key in want.keys(True, True):
            assert torch.equal(got[key], want[key]), key  # bit for bit: same draws, same ops
    # independent of both routes: the composite distribution rebuilt from the stored
    # observations scores the stored actions as the stored per-head log-probs
    data = fast[0].reshape(-1)
    with torch.no_grad(), set_interaction_type(InteractionType.RANDOM):
        scored = actor.get_dist(data.select("observation")).log_prob(data.select("action"))
    keys = list(actor.log_prob_keys)
    for key in keys:
        assert_close(data[key], scored[key])
    assert_close(data["action_log_prob"], sum(data[k] for k in keys))


def test_a_foreign_actor_has_no_tensor_route():
    from tensordict.nn import TensorDictModule

    assert StructuredActing.for_actor(TensorDictModule(torch.nn.Linear(2, 2), ["a"], ["b"])) is None


@pytest.mark.parametrize("env_id", ["ppokit/TicTacToe-v0", ImageAndMixedAction])
def test_a_diverged_network_is_named_not_sent_to_the_env(env_id):
    env = StructuredVecEnv(env_id, 2)
    actor, _ = build_structured_actor_critic(env)
    with torch.no_grad():
        for p in actor.parameters():
            p.fill_(float("nan"))
    collector = StructuredCollector(env, actor, num_steps=2, seed=0)
    # the tensor route defers the heads' value checks, then rebuilds them checked
    with pytest.raises(ValueError, match="NaN"):
        collector.collect()
    assert env.steps == 0  # no action reached the env
    env.close()


@pytest.mark.parametrize("env_id", ["ppokit/TicTacToe-v0", ImageAndMixedAction])
def test_the_composite_loss_takes_the_direct_path_with_the_same_numbers(env_id):
    from ppokit import ClipPPOLoss

    env = StructuredVecEnv(env_id, 2)
    torch.manual_seed(0)
    actor, critic = build_structured_actor_critic(env)
    data = StructuredCollector(env, actor, num_steps=6, seed=0).collect().reshape(-1)
    env.close()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the actor so the ratios differ from 1
        for p in actor.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    data["advantage"] = torch.randn(12, 1, generator=g)
    data["value_target"] = torch.randn(12, 1, generator=g)

    def losses_and_grads(loss):
        out = loss(data.clone())
        total = sum(v for k, v in out.items() if k.startswith("loss_"))
        return out, torch.autograd.grad(total, list(loss.parameters()))

    direct = ClipPPOLoss(actor, critic, entropy_coeff=0.01)
    assert direct.execution_path == "direct"
    fast = losses_and_grads(direct)
    hook = actor.register_forward_hook(lambda *_: None)  # sends the call through tensordict
    slow = ClipPPOLoss(actor, critic, entropy_coeff=0.01)
    assert slow.execution_path == "tensordict"
    reference = losses_and_grads(slow)
    hook.remove()
    assert set(fast[0].keys(True, True)) == set(reference[0].keys(True, True))
    for key in reference[0].keys(True, True):
        assert torch.equal(fast[0][key], reference[0][key]), key
    for got, want in zip(fast[1], reference[1]):
        assert torch.equal(got, want)


def test_an_action_mapping_missing_a_head_is_named():
    env = StructuredVecEnv(MatchMultiDiscrete, 1)  # MultiDiscrete([3, 4]): heads "0" and "1"
    env.reset(seed=0)
    with pytest.raises(KeyError, match=r"no entry \('action', '1'\)"):
        env.step({("action", "0"): torch.tensor([0])})
    env.close()


def test_the_flat_tensor_policy_leaves_composite_actors_to_tensordict():
    from gymnasium import spaces

    from ppokit.envs.spaces import action_heads, observation_leaves
    from ppokit.modules.heads import structured_actor
    from ppokit.train.collect.acting import TensorPolicy

    # a composite actor reading the one "observation" tensor, as the flat path feeds it: the
    # flat TensorPolicy hands its distribution leaf tensors, not the "params" sub-tree, so it
    # declines and the actor is called through tensordict
    actor = structured_actor(
        observation_leaves(spaces.Box(-1, 1, (3,))),
        action_heads(spaces.MultiDiscrete([3, 2])),
        leaf_keys=["observation"],
    )
    assert TensorPolicy.for_actor(actor, sampling=False) is None
    assert TensorPolicy.for_actor(actor) is None
