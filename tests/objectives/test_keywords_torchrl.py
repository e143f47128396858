"""``advantage_norm`` and ``delay_actor``: outputs, gradients and state against TorchRL 0.14.1.

Both losses are built on the same modules and data (the parity grid's builders); the
proximal policy is made different from the current one by moving the modules' parameters
after the losses took their target copies.
"""

from __future__ import annotations

import pytest
import torch
from loss_builders import critic, discrete_actor
from test_loss_parity_torchrl import build, make_data
from torch.testing import assert_close

from ppokit import ClipPPOLoss, KLPENPPOLoss, PPOLoss

torchrl_objectives = pytest.importorskip("torchrl.objectives")
torchrl_modules = pytest.importorskip("torchrl.modules")

CLASSES = {"PPOLoss": PPOLoss, "ClipPPOLoss": ClipPPOLoss, "KLPENPPOLoss": KLPENPPOLoss}


def _pair(
    cls: str,
    kind: str,
    kw_ours: dict,
    kw_theirs: dict,
    *,
    computed: bool,
    move_policy: bool = False,
):
    torch.manual_seed(11)
    actor, value, policy, value_op = build(kind, "separate")
    td = make_data(policy, value_op, computed=computed, deterministic=False, seed=2)
    if cls == "KLPENPPOLoss":
        # pi_old's parameters, which KLPEN reads from the data (stored after the policy moved)
        # and a fixed beta: TorchRL 0.14.1 updates beta in place inside forward, so its
        # backward uses the new beta while its loss used the old one (see
        # test_delay_actor_klpen_gradient_by_hand for ppokit's gradient by hand)
        with torch.no_grad():
            actor.module[0](td)
        kw_ours = {"increment": 1.0, "decrement": 1.0, **kw_ours}
        kw_theirs = {"increment": 1.0, "decrement": 1.0, **kw_theirs}
    ours = CLASSES[cls](actor, value, **kw_ours)
    theirs = getattr(torchrl_objectives, cls)(actor, value, **kw_theirs)
    if computed:
        ours.make_value_estimator("gae", gamma=0.9, lmbda=0.8)
        theirs.make_value_estimator(torchrl_objectives.ValueEstimators.GAE, gamma=0.9, lmbda=0.8)
    if move_policy:  # the proximal (target) copies stay where they were
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in actor.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return actor, value, td, ours, theirs


def _run(loss, td, params):
    torch.manual_seed(5)
    out = loss(td.clone())
    total = sum(v.sum() for k, v in out.items() if k.startswith("loss_"))
    grads = torch.autograd.grad(total, params, allow_unused=True)
    return out, grads


def _compare(actor, value, td, ours, theirs, keys):
    params = [*actor.parameters(), *value.parameters()]
    a, ga = _run(ours, td, params)
    b, gb = _run(theirs, td, params)
    for key in keys:
        assert_close(a[key].reshape(b[key].shape), b[key], rtol=1e-5, atol=1e-6, msg=key)
    for x, y in zip(ga, gb, strict=True):
        if y is None:
            assert x is None or not x.any()
        else:
            assert_close(x, y, rtol=1e-5, atol=1e-6)
    return a, b


# --------------------------------------------------------------------------- advantage_norm
def _norm():
    # rate 0.5 and a small floor: the scale moves on these small returns
    return torchrl_modules.PercentileValueNorm(rate=0.5, min_scale=0.01)


@pytest.mark.parametrize("cls", ["PPOLoss", "ClipPPOLoss", "KLPENPPOLoss"])
@pytest.mark.parametrize("computed", [True, False])
def test_advantage_norm_matches_torchrl(cls, computed):
    norm_ours, norm_theirs = _norm(), _norm()
    actor, value, td, ours, theirs = _pair(
        cls,
        "normal",
        {"advantage_norm": norm_ours},
        {"advantage_norm": norm_theirs},
        computed=computed,
    )
    keys = ["loss_objective", "loss_critic", "loss_entropy", "kl_approx"]
    for _ in range(2):  # the second call scales with the statistics the first one updated
        _compare(actor, value, td, ours, theirs, keys)
        for k, v in norm_theirs.state_dict().items():
            assert_close(norm_ours.state_dict()[k], v, msg=k)
    changed = not torch.equal(norm_ours.scale(), _norm().scale())
    # precomputed advantages never update the statistics (several epochs over one rollout)
    assert changed == computed


def test_advantage_norm_divides_the_advantage_and_skips_updates_in_eval_mode():
    norm = _norm()
    actor, value, td, ours, _ = _pair(
        "PPOLoss", "discrete", {"advantage_norm": norm}, {}, computed=True
    )
    with torch.no_grad():
        # linear quantiles of {0, 10}: P5 = 0.5, P95 = 9.5; EMA at rate 0.5 from 0:
        # low = 0.25, high = 4.75, scale = 4.5
        norm.update(torch.tensor([[0.0], [10.0]]))
    scale = norm.scale().clone()
    assert_close(scale, torch.tensor([4.5]))
    ours.eval()
    plain = PPOLoss(actor, value, entropy_bonus=False)
    plain.make_value_estimator("gae", gamma=0.9, lmbda=0.8)
    ours.entropy_bonus = False
    out, ref = ours(td.clone()), plain(td.clone())
    # PPO's plain surrogate is linear in the advantage: dividing A divides loss_objective
    assert_close(out["loss_objective"], ref["loss_objective"] / scale.squeeze())
    assert torch.equal(norm.scale(), scale)


def test_advantage_norm_updates_from_valid_rows_only():
    seen = []

    class Recorder:
        def update(self, value_target):
            seen.append(value_target.clone())

        def scale(self):
            return torch.ones(1)

    _, _, td, ours, _ = _pair(
        "ClipPPOLoss", "discrete", {"advantage_norm": Recorder()}, {}, computed=True
    )
    mask = torch.ones(td.shape, dtype=torch.bool)
    mask[0, :2] = False
    td["shifted_valid"] = mask.unsqueeze(-1)  # one of the masks looked up by default
    ours(td)
    assert len(seen) == 1 and seen[0].shape == (int(mask.sum()), 1)


# --------------------------------------------------------------------------- delay_actor
@pytest.mark.parametrize(
    ("cls", "kind", "extra"),
    [
        ("PPOLoss", "normal", {}),
        ("ClipPPOLoss", "normal", {}),
        ("ClipPPOLoss", "discrete", {"clip_epsilon": (0.1, 0.3), "max_importance_ratio": 1.5}),
        ("ClipPPOLoss", "normal", {"normalize_advantage": True, "reduction": "sum"}),
        ("KLPENPPOLoss", "normal", {}),
        ("KLPENPPOLoss", "discrete", {}),
    ],
)
def test_delay_actor_matches_torchrl(cls, kind, extra):
    kw = {"delay_actor": True, **extra}
    actor, value, td, ours, theirs = _pair(
        cls, kind, kw, dict(kw), computed=False, move_policy=True
    )
    keys = ["loss_objective", "loss_critic", "loss_entropy", "kl_approx"]
    if cls == "ClipPPOLoss":
        keys += ["clip_fraction", "ESS"]
    if cls == "KLPENPPOLoss":
        keys += ["kl"]
    a, _ = _compare(actor, value, td, ours, theirs, keys)
    assert a["kl_approx"].abs() > 1e-4  # the proximal policy differs from the current one
    assert_close(
        ours.target_actor_network_params.flatten_keys().to_dict(),
        theirs.target_actor_network_params.flatten_keys().to_dict(),
    )


def test_delay_actor_klpen_gradient_by_hand():
    # loss = mean(-exp(lp - lp_old) * A + beta * KL(pi_prox || pi)) - 0.01 * mean(H(pi)),
    # with pi_prox the target copy, written out with torch.distributions on the linear head
    actor, _, td, ours, _ = _pair(
        "KLPENPPOLoss", "discrete", {"delay_actor": True}, {}, computed=False, move_policy=True
    )
    ours.increment = 2.0  # beta changes after the forward: the gradient uses beta = 1
    lin = actor.module[0].module
    target = ours.target_actor_network_params.flatten_keys(".")
    obs, action = td["observation"], td["action"]
    pi = torch.distributions.Categorical(logits=obs @ lin.weight.T + lin.bias)
    prox = torch.distributions.Categorical(
        logits=obs @ target["module.0.module.weight"].T + target["module.0.module.bias"]
    )
    ratio = (pi.log_prob(action) - td["action_log_prob"]).exp()
    manual = (
        -ratio * td["advantage"].squeeze(-1) + torch.distributions.kl_divergence(prox, pi)
    ).mean() - 0.01 * pi.entropy().mean()
    expected = torch.autograd.grad(manual, [lin.weight, lin.bias])
    _, grads = _run(ours, td, [lin.weight, lin.bias])
    for x, y in zip(grads, expected, strict=True):
        assert_close(x, y)
    assert float(ours.beta) == 2.0


def test_delay_actor_target_is_a_detached_buffer_copy():
    loss = ClipPPOLoss(discrete_actor(), critic(), delay_actor=True)
    target = loss.target_actor_network_params
    current = loss.actor_network_params
    for key, value in target.items(True, True):
        assert not value.requires_grad
        assert torch.equal(value, current[key])
        assert value.data_ptr() != current[key].data_ptr()
    ids = {id(p) for p in loss.parameters()}
    assert not any(id(v) in ids for v in target.values(True, True))
    assert any(k.startswith("target_actor_network_params") for k in loss.state_dict())
    assert ClipPPOLoss(discrete_actor(), critic()).target_actor_network_params is None


def test_delay_actor_with_an_unmoved_policy_is_plain_ppo():
    # pi_prox = pi_old = pi: every ratio is 1, as without delay_actor
    torch.manual_seed(0)
    actor, value, policy, value_op = build("discrete", "separate")
    td = make_data(policy, value_op, computed=False, deterministic=False, seed=2)
    with torch.no_grad():
        td["action_log_prob"] = actor.get_dist(td.clone()).log_prob(td["action"])
    a = ClipPPOLoss(actor, value, delay_actor=True)(td.clone())
    b = ClipPPOLoss(actor, value)(td.clone())
    for key in ("loss_objective", "kl_approx", "clip_fraction", "ESS"):
        assert_close(a[key], b[key], msg=key)


# --------------------------------------------------------------------------- errors
def test_both_normalisations_are_refused():
    with pytest.raises(ValueError, match="mutually exclusive"):
        ClipPPOLoss(discrete_actor(), critic(), normalize_advantage=True, advantage_norm=_norm())


def test_delay_actor_needs_functional():
    with pytest.raises(ValueError, match="delay_actor=True requires functional=True"):
        ClipPPOLoss(discrete_actor(), critic(), functional=False, delay_actor=True)


@pytest.mark.parametrize("bad", [object(), 2.0, torch.ones(1)])
def test_bad_advantage_norm_is_refused(bad):
    with pytest.raises(TypeError, match=r"advantage_norm must be .*update\(value_target\)"):
        ClipPPOLoss(discrete_actor(), critic(), advantage_norm=bad)


def test_delay_actor_must_be_a_bool():
    with pytest.raises(TypeError, match="delay_actor must be a bool"):
        ClipPPOLoss(discrete_actor(), critic(), delay_actor="yes")


def test_update_target_actor_follows_torchrl_soft_update():
    kw = {"delay_actor": True}
    actor, _, _, ours, theirs = _pair(
        "ClipPPOLoss", "normal", kw, dict(kw), computed=False, move_policy=True
    )
    updater = torchrl_objectives.SoftUpdate(theirs, eps=0.9)
    # SoftUpdate's init_ hard-copies the source into the target; ours with eps=0
    ours.update_target_actor(eps=0.0)
    for eps in (None, 0.9):
        if eps is not None:
            with torch.no_grad():
                for p in actor.parameters():
                    p.mul_(1.5)
            updater.step()
            ours.update_target_actor(eps=eps)
        assert_close(
            ours.target_actor_network_params.flatten_keys().to_dict(),
            theirs.target_actor_network_params.flatten_keys().to_dict(),
        )


def test_update_target_actor_needs_delay_actor_and_a_valid_eps():
    with pytest.raises(ValueError, match="delay_actor=True"):
        ClipPPOLoss(discrete_actor(), critic()).update_target_actor()
    with pytest.raises(ValueError, match=r"eps must be in \[0, 1\]"):
        ClipPPOLoss(discrete_actor(), critic(), delay_actor=True).update_target_actor(eps=2.0)
