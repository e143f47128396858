"""ClipPPOLoss's modes: masks, functional vs plain, shared trunks, the advantage computed
inside, second-order meta-gradients, deterministic scoring."""

from __future__ import annotations

import warnings

import pytest
import torch
from loss_builders import OBS, critic, discrete_actor, make_batch, total_loss
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictSequential,
    set_interaction_type,
)
from torch import distributions as D
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close

from ppokit import ClipPPOLoss


# --------------------------------------------------------------------------- masks
def test_mask_excludes_samples_everywhere():
    actor_net, critic_net = nn.Linear(OBS, 4), nn.Linear(OBS, 1)
    actor = discrete_actor(actor_net)
    td = make_batch(actor, (10,))
    mask = torch.tensor([True] * 6 + [False] * 4)
    padded = td.clone()
    padded["shifted_valid"] = mask
    padded["advantage"][~mask] = float("nan")  # padding may hold garbage
    loss = ClipPPOLoss(actor, critic(critic_net), normalize_advantage=True, clip_value=0.1)
    got = loss(padded)
    want = loss(td[:6])
    for key in want.keys():
        assert_close(got[key], want[key], msg=key)
    loss.set_keys(mask="valid")
    with pytest.raises(KeyError, match="mask key was set to 'valid'"):
        loss(padded)
    padded["valid"] = mask.float()
    with pytest.raises(ValueError, match="must be a bool tensor"):
        loss(padded)


# --------------------------------------------------------------------------- modes
def test_functional_and_plain_modes_agree_and_train_same_tensors():
    actor_net, critic_net = nn.Linear(OBS, 4), nn.Linear(OBS, 1)
    actor, crit = discrete_actor(actor_net), critic(critic_net)
    td = make_batch(actor)
    f = ClipPPOLoss(actor, crit, functional=True)
    p = ClipPPOLoss(actor, crit, functional=False)
    assert f.functional and not p.functional
    of, op = f(td), p(td)
    for key in of.keys():
        assert_close(of[key], op[key])
    module_params = {id(t) for t in list(actor.parameters()) + list(crit.parameters())}
    for loss in (f, p):
        assert {id(t) for t in loss.parameters()} == module_params
        assert len(list(loss.parameters())) == len(module_params)
    # a step of an optimizer built on loss.parameters() moves the modules themselves
    opt = torch.optim.SGD(f.parameters(), lr=0.5)
    before = actor_net.weight.detach().clone()
    opt.zero_grad()
    total_loss(f(td)).backward()
    opt.step()
    assert not torch.equal(before, actor_net.weight)
    assert_close(p(td)["loss_objective"], f(td)["loss_objective"])


def test_state_dict_holds_each_tensor_once():
    loss = ClipPPOLoss(discrete_actor(), critic())
    # each parameter once, plus the schedulable coefficients (0-d buffers, as in TorchRL)
    coefficients = ["clip_epsilon", "critic_coeff", "entropy_coeff"]
    assert sorted(loss.state_dict()) == sorted(
        [n for n, _ in loss.named_parameters()] + coefficients
    )
    assert len(loss.state_dict()) == 4 + 3


# --------------------------------------------------------------------------- shared trunk
class _Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(OBS, 6), nn.Tanh())

    def forward(self, x):
        return self.net(x)


def _shared_model():
    trunk = TensorDictModule(_Trunk(), ["observation"], ["hidden"])
    actor_head = ProbabilisticTensorDictSequential(
        TensorDictModule(nn.Linear(6, 4), ["hidden"], ["logits"]),
        ProbabilisticTensorDictModule(
            ["logits"], ["action"], distribution_class=D.Categorical, return_log_prob=True
        ),
    )
    value_head = TensorDictModule(nn.Linear(6, 1), ["hidden"], ["state_value"])
    return trunk, actor_head, value_head


def _option(option: int):
    trunk, actor_head, value_head = _shared_model()
    # acting uses the flattened policy (trunk, head, distribution): tensordict cannot call a
    # probabilistic sequence nested in another one, though get_dist(), all the loss uses, can
    acting = ProbabilisticTensorDictSequential(trunk, *actor_head.module)
    if option == 1:  # two calls on the common module
        return trunk, acting, TensorDictSequential(trunk, value_head), acting
    # one call: the whole model (which samples an action on its way) then the head
    model = TensorDictSequential(trunk, actor_head, value_head)
    return trunk, ProbabilisticTensorDictSequential(model, actor_head), value_head, acting


@pytest.mark.parametrize("option", [1, 2])
@pytest.mark.parametrize("functional", [True, False])
def test_separate_losses_blocks_critic_gradient_into_trunk(option, functional):
    trunk, policy, value, acting = _option(option)
    td = make_batch(acting)
    trunk_params = list(trunk.parameters())
    for separate in (False, True):
        loss = ClipPPOLoss(policy, value, separate_losses=separate, functional=functional)
        out = loss(td)
        grads = torch.autograd.grad(
            out["loss_critic"], trunk_params, allow_unused=True, retain_graph=True
        )
        total = sum(0.0 if g is None else float(g.abs().sum()) for g in grads)
        if separate:
            assert total == 0.0
        else:
            assert total > 0.0
        # the policy loss trains the trunk in both cases
        grads = torch.autograd.grad(out["loss_objective"], trunk_params, retain_graph=True)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        # the value head is trained by the critic loss in both cases
        head = [p for p in value.parameters() if all(p is not t for t in trunk_params)]
        grads = torch.autograd.grad(out["loss_critic"], head)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_shared_trunk_options_agree_and_score_the_stored_action():
    trunk, actor_head, value_head = _shared_model()
    acting = ProbabilisticTensorDictSequential(trunk, *actor_head.module)
    td = make_batch(acting)
    base = ClipPPOLoss(acting, TensorDictSequential(trunk, value_head))(td)
    # option 2 on the same modules: the model samples fresh actions inside, yet every
    # result must match option 1, whatever the random draws.
    model = TensorDictSequential(trunk, actor_head, value_head)
    loss2 = ClipPPOLoss(ProbabilisticTensorDictSequential(model, actor_head), value_head)
    for seed in range(3):
        torch.manual_seed(seed)
        out = loss2(td)
        for key in ("loss_objective", "loss_critic", "loss_entropy", "kl_approx"):
            assert_close(out[key], base[key], msg=key)
    # hand check of the objective on the stored action
    hidden = trunk.module(td["observation"])
    logp = torch.log_softmax(actor_head.module[0].module(hidden), -1)
    lw = logp.gather(-1, td["action"][:, None]).squeeze(-1) - td["action_log_prob"]
    r = lw.exp()[:, None]
    a = td["advantage"]
    assert_close(base["loss_objective"], (-torch.minimum(r * a, r.clamp(0.8, 1.2) * a)).mean())


def test_option_two_without_advantage_explains_itself():
    _, policy, value, acting = _option(2)
    td = make_batch(acting).exclude("advantage")
    td["next"] = TensorDict(
        {
            "observation": td["observation"],
            "reward": torch.ones(8, 1),
            "done": torch.zeros(8, 1, dtype=torch.bool),
            "terminated": torch.zeros(8, 1, dtype=torch.bool),
        },
        [8],
    )
    with pytest.raises(KeyError, match="compute the advantage beforehand"):
        ClipPPOLoss(policy, value)(td)


# --------------------------------------------------------------------------- advantage inside
def _rollout(actor, n_envs=3, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n_envs, t + 1, OBS, generator=g)
    td = TensorDict({"observation": obs[:, :-1]}, [n_envs, t])
    done = torch.rand(n_envs, t, 1, generator=g) < 0.2
    term = done & (torch.rand(n_envs, t, 1, generator=g) < 0.5)
    td["next"] = TensorDict(
        {
            "observation": obs[:, 1:],
            "reward": torch.randn(n_envs, t, 1, generator=g),
            "done": done,
            "terminated": term,
        },
        [n_envs, t],
    )
    with torch.no_grad():
        actor(td)
    return td


def test_advantage_computed_inside_matches_gae_beforehand():
    from ppokit import GAE

    actor, crit = discrete_actor(), critic()
    td = _rollout(actor)
    loss = ClipPPOLoss(actor, crit)
    inside = loss(td)
    assert "advantage" not in td.keys(), "the input must not be modified"
    given = td.clone()
    GAE(gamma=0.99, lmbda=0.95, value_network=crit)(given)
    outside = loss(given)
    for key in inside.keys():
        assert_close(inside[key], outside[key], msg=key)
    # the estimator runs on detached critic parameters: only the critic loss trains them
    inside = loss(td)
    grads = torch.autograd.grad(
        inside["loss_objective"], list(crit.parameters()), allow_unused=True
    )
    assert all(g is None or float(g.abs().sum()) == 0 for g in grads)
    # another estimator changes the result, and keys are forwarded to it
    loss.make_value_estimator("td0", gamma=0.5)
    assert not torch.allclose(loss(td)["loss_objective"], outside["loss_objective"])
    with pytest.raises(ValueError, match="td42"):
        loss.make_value_estimator("td42")


@pytest.mark.parametrize("functional", [True, False])
def test_estimator_follows_set_keys(functional):
    actor, crit = discrete_actor(), critic()
    td = _rollout(actor)
    expected = ClipPPOLoss(actor, crit, functional=functional)(td)
    renamed = td.clone()
    renamed.rename_key_(("next", "reward"), ("next", "r"))
    loss = ClipPPOLoss(actor, crit, functional=functional)
    loss.set_keys(reward="r")
    _ = loss.value_estimator
    loss.set_keys(reward="r")
    assert_close(loss(renamed)["loss_objective"], expected["loss_objective"])


# --------------------------------------------------------------------------- meta-RL
def test_second_order_meta_gradient_matches_torch_func():
    torch.set_default_dtype(torch.float64)
    try:
        actor_net, critic_net = nn.Linear(OBS, 4), nn.Linear(OBS, 1)
        actor, crit = discrete_actor(actor_net), critic(critic_net)
        inner_td = make_batch(actor, (6,), seed=1, dtype=torch.float64)
        outer_td = make_batch(actor, (6,), seed=2, dtype=torch.float64)
        lr = 0.3
        loss = ClipPPOLoss(actor, crit, entropy_coef=0.1)
        params = TensorDict.from_module(loss)
        # the parameters; the loss's coefficient buffers are constants of the loss
        keys = [k for k in params.keys(True, True) if params.get(k).requires_grad]
        leaves = [params.get(k) for k in keys]
        assert len(leaves) == 4
        inner = total_loss(loss(inner_td))
        grads = torch.autograd.grad(inner, leaves, create_graph=True)
        adapted = params.clone(False)
        for key, g in zip(keys, grads):
            adapted.set(key, params.get(key) - lr * g)
        with adapted.to_module(loss):
            outer = total_loss(loss(outer_td))
        meta = torch.autograd.grad(outer, leaves)

        # torch.func reference: the same PPO loss written as a pure function of raw weights
        def ppo(p, td):
            logits = torch.func.functional_call(
                actor_net, {"weight": p[0], "bias": p[1]}, (td["observation"],)
            )
            v = torch.func.functional_call(
                critic_net, {"weight": p[2], "bias": p[3]}, (td["observation"],)
            )
            logp = torch.log_softmax(logits, -1)
            lw = logp.gather(-1, td["action"][:, None]) - td["action_log_prob"][:, None]
            a = td["advantage"]
            obj = -torch.minimum(lw.exp() * a, lw.exp().clamp(0.8, 1.2) * a).mean()
            ent = -(logp.exp() * logp).sum(-1).mean()
            crit_loss = F.smooth_l1_loss(v, td["value_target"])
            return obj - 0.1 * ent + crit_loss

        def outer_of(p):
            g = torch.func.grad(ppo)(p, inner_td)
            return ppo(tuple(x - lr * gx for x, gx in zip(p, g)), outer_td)

        raw = (actor_net.weight, actor_net.bias, critic_net.weight, critic_net.bias)
        ref = torch.func.grad(outer_of)(tuple(t.detach() for t in raw))
        by_id = dict(zip([id(t) for t in leaves], meta))
        for r, t in zip(ref, raw):
            assert_close(by_id[id(t)], r)
        # the second-order term matters: a first-order answer would differ
        assert not torch.allclose(
            by_id[id(raw[0])], torch.autograd.grad(total_loss(loss(outer_td)), [raw[0]])[0]
        )
    finally:
        torch.set_default_dtype(torch.float32)


def test_deterministic_interaction_does_not_change_scoring():
    actor = discrete_actor()
    td = make_batch(actor)
    loss = ClipPPOLoss(actor, critic())
    base = loss(td)
    with set_interaction_type(InteractionType.DETERMINISTIC):
        again = loss(td)
    assert_close(base["loss_objective"], again["loss_objective"])


def test_no_warnings_on_the_happy_path():
    actor = discrete_actor()
    td = make_batch(actor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ClipPPOLoss(actor, critic())(td)
