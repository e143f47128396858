"""TorchRL 0.14.1's constructor keywords on ppokit's losses, with TorchRL's numbers.

Each case builds both losses on the same modules and data (the parity grid's builders) and
compares the outputs; bad values are refused with messages that say what to do.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from loss_builders import critic, discrete_actor
from tensordict import TensorDict
from test_loss_parity_torchrl import build, make_data
from torch.testing import assert_close

from ppokit import ClipPPOLoss, PPOLoss

torchrl_objectives = pytest.importorskip("torchrl.objectives")


def _both(
    ours_kw: dict,
    theirs_kw: dict | None = None,
    *,
    kind: str = "normal",
    td=None,
    cls: str = "ClipPPOLoss",
):
    torch.manual_seed(11)  # the same modules on every call
    actor, value, policy, value_op = build(kind, "separate")
    if td is None:
        td = make_data(policy, value_op, computed=False, deterministic=False, seed=2)
    ours = {"ClipPPOLoss": ClipPPOLoss, "PPOLoss": PPOLoss}[cls](actor, value, **ours_kw)
    theirs = getattr(torchrl_objectives, cls)(
        actor, value, **(ours_kw if theirs_kw is None else theirs_kw)
    )
    torch.manual_seed(5)
    a = ours(td)
    torch.manual_seed(5)
    b = theirs(td)
    return a, b


def _assert_outputs_match(a, b, keys=None):
    keys = [k for k in b.keys() if k in a.keys()] if keys is None else keys
    assert keys
    for key in keys:
        assert_close(a[key].reshape(b[key].shape), b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_every_torchrl_keyword_is_accepted():
    for name in ("PPOLoss", "ClipPPOLoss"):
        theirs = inspect.signature(getattr(torchrl_objectives, name).__init__).parameters
        ours = inspect.signature(
            {"PPOLoss": PPOLoss, "ClipPPOLoss": ClipPPOLoss}[name].__init__
        ).parameters
        missing = [
            k
            for k, p in theirs.items()
            if p.kind is not inspect.Parameter.VAR_KEYWORD and k not in ours
        ]
        assert not missing, (name, missing)


@pytest.mark.parametrize("reduction", [None, "sum", "none"])
def test_reduction_none_means_mean_as_in_torchrl(reduction):
    a, b = _both({"reduction": reduction})
    _assert_outputs_match(a, b, ["loss_objective", "loss_critic", "loss_entropy"])
    if reduction is None:
        a_mean, _ = _both({"reduction": "mean"})
        assert torch.equal(a["loss_objective"], a_mean["loss_objective"])


@pytest.mark.parametrize("eps", [(0.1, 0.3), (0.2, 0.2), (0.05, 0.5)])
def test_asymmetric_clip_matches_torchrl(eps):
    a, b = _both({"clip_epsilon": eps})
    _assert_outputs_match(a, b, ["loss_objective", "clip_fraction", "loss_critic"])


def test_asymmetric_clip_is_scheduled_by_its_two_buffers():
    actor, value, policy, value_op = build("normal", "separate")
    td = make_data(policy, value_op, computed=False, deterministic=False, seed=3)
    ours = ClipPPOLoss(actor, value, clip_epsilon=(0.1, 0.3))
    theirs = torchrl_objectives.ClipPPOLoss(actor, value, clip_epsilon=(0.1, 0.3))
    for loss in (ours, theirs):
        loss.clip_epsilon_low = 0.02
        loss.clip_epsilon_high = 0.6
    torch.manual_seed(0)
    a = ours(td)
    torch.manual_seed(0)
    _assert_outputs_match(a, theirs(td), ["loss_objective", "clip_fraction"])
    with pytest.raises(
        AttributeError,
        match="asymmetric clip_epsilon; schedule 'clip_epsilon_low' / 'clip_epsilon_high'",
    ):
        ours.clip_epsilon = 0.2
    symmetric = ClipPPOLoss(actor, value)
    with pytest.raises(AttributeError, match="symmetric clip_epsilon; schedule 'clip_epsilon'"):
        symmetric.clip_epsilon_high = 0.3


@pytest.mark.parametrize(
    "eps, match",
    [
        ((0.3, 0.2), r"must have eps_low <= eps_high .* got \(0.3, 0.2\); swap them"),
        ((0.2, 1.2), r"clip_epsilon\[1\] must be a number in \(0, 1\), got 1.2"),
        ((0.0, 0.2), r"clip_epsilon\[0\] must be a number in \(0, 1\), got 0.0"),
        ((0.2,), r"clip_epsilon as a tuple must be \(eps_low, eps_high\), got \(0.2,\)"),
    ],
)
def test_bad_clip_tuples_are_refused(eps, match):
    with pytest.raises(ValueError, match=match):
        ClipPPOLoss(discrete_actor(), critic(), clip_epsilon=eps)


def test_clip_value_as_a_tensor_matches_torchrl():
    a, b = _both({"clip_value": torch.tensor(0.15)}, kind="discrete")
    _assert_outputs_match(a, b, ["loss_critic", "value_clip_fraction", "loss_objective"])


def test_log_explained_variance_off_drops_the_entry_as_in_torchrl():
    a, b = _both({"log_explained_variance": False})
    assert "explained_variance" not in a.keys() and "explained_variance" not in b.keys()
    _assert_outputs_match(a, b, ["loss_objective", "loss_critic"])


def test_actor_and_critic_aliases_and_device():
    actor, value, _, _ = build("discrete", "separate")
    loss = ClipPPOLoss(actor=actor, critic=value, device="cpu")
    assert loss.actor_network is actor and loss.critic_network is value
    assert loss.entropy_coeff.device == torch.device("cpu")
    with pytest.raises(TypeError, match=r"Got both actor_network=.* and actor=.*pass only one"):
        ClipPPOLoss(actor, actor=discrete_actor())


def test_normalize_advantage_exclude_dims_matches_torchrl():
    # two agents with very different advantage scales: each is standardised on its own
    actor, value, policy, value_op = build("discrete", "separate")
    g = torch.Generator().manual_seed(0)
    td = TensorDict({"observation": torch.randn(6, 2, 5, generator=g)}, [6, 2])
    with torch.no_grad():
        policy(td)
        value_op(td)
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    td["advantage"] = torch.randn(6, 2, 1, generator=g) * torch.tensor([[1.0], [50.0]])
    td["value_target"] = torch.randn(6, 2, 1, generator=g)
    kw = {"normalize_advantage": True, "normalize_advantage_exclude_dims": (-2,)}
    a, b = _both(kw, kind="discrete", td=td)
    _assert_outputs_match(a, b, ["loss_objective", "clip_fraction", "loss_critic"])
    plain, _ = _both({"normalize_advantage": True}, kind="discrete", td=td)
    assert not torch.allclose(plain["loss_objective"], a["loss_objective"])
    with pytest.raises(TypeError, match="normalize_advantage_exclude_dims must be a tuple"):
        ClipPPOLoss(actor, value, normalize_advantage_exclude_dims="agents")


def test_actor_only_loss_matches_torchrl():
    actor, _, policy, value_op = build("normal", "separate")
    td = make_data(policy, value_op, computed=False, deterministic=False, seed=7)
    ours = ClipPPOLoss(actor)
    theirs = torchrl_objectives.ClipPPOLoss(actor, None)
    torch.manual_seed(1)
    a = ours(td)
    torch.manual_seed(1)
    b = theirs(td)
    assert "loss_critic" not in a.keys() and "loss_critic" not in b.keys()
    _assert_outputs_match(a, b, ["loss_objective", "loss_entropy", "clip_fraction"])
    assert ours.critic_coef == 0.0


def test_unsupported_torchrl_keywords_are_refused_not_ignored():
    # advantage_norm and delay_actor are implemented: tests/objectives/test_keywords_torchrl.py
    actor, value = discrete_actor(), critic()
    with pytest.raises(TypeError, match=r"gamma is not a loss option.*make_value_estimator"):
        ClipPPOLoss(actor, value, gamma=0.9)


# --------------------------------------------------------------------------- per-token
def _token_data(with_value: bool):
    from tensordict.nn import TensorDictModule
    from torch import nn

    torchrl_modules = pytest.importorskip("torchrl.modules")
    torch.manual_seed(3)
    actor = torchrl_modules.ProbabilisticActor(
        TensorDictModule(nn.Linear(3, 7), ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    value = torchrl_modules.ValueOperator(nn.Linear(3, 1), in_keys=["summary"])
    g = torch.Generator().manual_seed(0)
    td = TensorDict(
        {
            "observation": torch.randn(4, 5, 3, generator=g),
            "summary": torch.randn(4, 3, generator=g),
        },
        [4],
    )
    with torch.no_grad():
        actor(td)
        for p in actor.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    td["advantage"] = torch.randn(4, 5, 1, generator=g)
    if with_value:
        td["value_target"] = torch.randn(4, 1, generator=g)
    return actor, (value if with_value else None), td.exclude("logits")


@pytest.mark.parametrize("with_value", [False, True])
def test_per_token_log_probs_match_torchrl(with_value):
    # log-probs [B, T] (one per token) with the advantage [B, T, 1], batch [B]
    actor, value, td = _token_data(with_value)
    kw = {"clip_epsilon": 0.1, "entropy_coeff": 0.05}
    ours = ClipPPOLoss(actor, value, **kw)
    theirs = torchrl_objectives.ClipPPOLoss(actor, value, **kw)
    a, b = ours(td), theirs(td)
    keys = ["loss_objective", "loss_entropy", "entropy", "clip_fraction", "kl_approx"]
    if with_value:
        keys.append("loss_critic")
    _assert_outputs_match(a, b, keys)
    assert float(a["clip_fraction"]) > 0  # the case exercises the clip


def test_per_token_log_probs_need_a_matching_advantage():
    actor, _, td = _token_data(False)
    td["advantage"] = torch.randn(4, 1)  # would broadcast silently over tokens
    with pytest.raises(
        ValueError,
        match=r"Per-token log-probs \(4, 5\) need an advantage of "
        r"shape \(4, 5, 1\) and no mask",
    ):
        ClipPPOLoss(actor)(td)
