"""A rejected call leaves the caller's rollout untouched (issue #15, item 10).

The inputs are checked before the value network runs and nothing is written until every
check has passed, so a caller can fix the data and call again.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from ppokit.value.estimators import GAE, MultiAgentGAE, TD0Estimate, TDLambdaEstimate, VTrace


class CountingCritic(nn.Module):
    """A linear critic that counts its calls (to prove the check came first)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x)


def rollout(batch=4, steps=6):
    gen = torch.Generator().manual_seed(0)
    return TensorDict(
        {
            "observation": torch.randn(batch, steps, 3, generator=gen),
            "mask": torch.ones(batch, steps, dtype=torch.bool),
            "next": {
                "observation": torch.randn(batch, steps, 3, generator=gen),
                "reward": torch.randn(batch, steps, 1, generator=gen),
                "done": torch.zeros(batch, steps, 1, dtype=torch.bool),
                "terminated": torch.zeros(batch, steps, 1, dtype=torch.bool),
            },
        },
        [batch, steps],
    )


def flat_reward(td):
    td["next", "reward"] = td["next", "reward"][..., 0]


def nan_reward(td):
    td["next", "reward"][1, 2] = float("nan")


def float_mask(td):
    td["mask"] = td["mask"].float()


def flag_not_01(td):
    td["next", "done"] = torch.full((4, 6, 1), 2)


BAD = [
    (flat_reward, ValueError, r"reward .* shape \(4, 6\).*reward.unsqueeze\(-1\)"),
    (nan_reward, ValueError, r"\('next', 'reward'\) holds 1 NaN/Inf"),
    (float_mask, TypeError, r"mask 'mask' must be bool .* got torch.float32"),
    (flag_not_01, ValueError, r"done must be a bool tensor or hold only 0 and 1"),
]


@pytest.mark.parametrize("spoil,error,match", BAD, ids=[b[0].__name__ for b in BAD])
@pytest.mark.parametrize("cls", [GAE, TDLambdaEstimate, TD0Estimate])
def test_rejected_call_writes_nothing_and_runs_no_network(cls, spoil, error, match):
    net = CountingCritic()
    critic = TensorDictModule(net, ["observation"], ["state_value"])
    kwargs = {"gamma": 0.9} if cls is TD0Estimate else {"gamma": 0.9, "lmbda": 0.9}
    est = cls(value_network=critic, **kwargs).set_keys(mask="mask")
    td = rollout()
    spoil(td)
    before = td.clone()
    with pytest.raises(error, match=match):
        est(td)
    assert net.calls == 0
    assert set(td.keys(True, True)) == set(before.keys(True, True))
    for key in before.keys(True, True):
        torch.testing.assert_close(td[key], before[key], rtol=0, atol=0, equal_nan=True)


def test_bad_network_output_writes_nothing():
    # the value's shape can only be checked after the network ran: still nothing is written
    critic = TensorDictModule(lambda x: x.sum(-1), ["observation"], ["state_value"])
    td = rollout()
    keys = set(td.keys(True, True))
    with pytest.raises(ValueError, match=r"value 'state_value' has shape \(4, 6\).*trailing"):
        GAE(gamma=0.9, lmbda=0.9, value_network=critic)(td)
    assert set(td.keys(True, True)) == keys


def test_vtrace_missing_log_prob_is_caught_before_the_network():
    from tensordict.nn import ProbabilisticTensorDictModule, ProbabilisticTensorDictSequential

    net = CountingCritic()
    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(nn.Linear(3, 1), ["observation"], ["loc"]),
        ProbabilisticTensorDictModule(
            ["loc"],
            ["action"],
            distribution_class=torch.distributions.Normal,
            distribution_kwargs={"scale": 1.0},
        ),
    )
    td = rollout()
    td["action"] = torch.zeros(4, 6, 1)
    est = VTrace(
        gamma=0.9,
        actor_network=actor,
        value_network=TensorDictModule(net, ["observation"], ["state_value"]),
    )
    with pytest.raises(KeyError, match=r"'action_log_prob' is missing"):
        est(td)
    assert net.calls == 0 and "state_value" not in td.keys()
    td["action_log_prob"] = torch.zeros(4, 6, 2)
    with pytest.raises(
        ValueError,
        match=r"sample_log_prob 'action_log_prob' must be a tensor of shape \(4, 6\) or "
        r"\(4, 6, 1\), got torch.Size\(\[4, 6, 2\]\)",
    ):
        est(td)
    assert net.calls == 0


def test_magae_team_signal_of_wrong_shape():
    td = TensorDict(
        {
            "state_value": torch.zeros(2, 5, 3, 1),
            "next": {
                "state_value": torch.zeros(2, 5, 3, 1),
                "reward": torch.zeros(2, 5, 2, 1),  # 2 "agents" against a value with 3
                "done": torch.zeros(2, 5, 2, 1, dtype=torch.bool),
            },
        },
        [2, 5],
    )
    with pytest.raises(
        ValueError, match=r"reward has shape \(2, 5, 2, 1\); with a per-agent value"
    ):
        MultiAgentGAE(gamma=0.9, lmbda=0.9, value_network=None)(td)
    assert "advantage" not in td.keys()
