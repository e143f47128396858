"""Truncation bootstraps, termination does not (SB3's ``test_infinite_horizon`` idea).

A task with a constant observation and reward 1 per step cannot tell the critic how much
time is left. If the time limit is a truncation, the task is an infinite-horizon one cut for
convenience, and the value of every state is 1 / (1 - gamma) = 10 for gamma = 0.9: the critic
only learns that if the cut bootstraps from V(final observation). If instead the episode ends
in a terminal state after 20 steps, the best constant value is the average of the true
returns-to-go (1 - 0.9^k) / 0.1 over k = 1..20 seen from the visited states, about 6.
"""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule
from torch import nn

from ppokit.envs.gym import GymVecEnv
from ppokit.modules.actors import ValueOperator
from ppokit.train.collect.collector import RolloutCollector
from ppokit.value.estimators import GAE

GAMMA = 0.9


def _random_policy() -> TensorDictModule:
    def fn(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = obs.shape[0]
        return torch.randint(0, 2, (n,)), torch.full((n,), -0.6931)

    return TensorDictModule(fn, ["observation"], ["action", "action_log_prob"])


def _fit_constant_value(env_id: str) -> float:
    torch.manual_seed(0)
    env = GymVecEnv(env_id, 4)
    critic = ValueOperator(nn.Linear(1, 1), in_keys=["observation"])
    gae = GAE(gamma=GAMMA, lmbda=0.95, value_network=critic)
    opt = torch.optim.Adam(critic.parameters(), lr=0.1)
    # T = 30 does not divide the 20-step episodes, so cuts happen at every phase
    collector = RolloutCollector(env, _random_policy(), num_steps=30, seed=0)
    for _ in range(150):
        rollout = collector.collect()
        with torch.no_grad():
            gae(rollout)
        target = rollout["value_target"].reshape(-1, 1)
        obs = rollout["observation"].reshape(-1, 1)
        for _ in range(5):
            opt.zero_grad()
            loss = (critic.module(obs) - target).pow(2).mean()
            loss.backward()
            opt.step()
    env.close()
    with torch.no_grad():
        return float(critic.module(torch.ones(1, 1)))


def _terminal_reference() -> float:
    # plain-loop reference: states at steps 0..19 of an episode are visited equally often;
    # from step j the return-to-go is sum_{i<20-j} gamma^i
    returns = [sum(GAMMA**i for i in range(20 - j)) for j in range(20)]
    return sum(returns) / len(returns)


def test_truncated_time_limit_learns_infinite_horizon_value():
    value = _fit_constant_value("PpokitTest/ConstantTruncated-v0")
    assert abs(value - 1 / (1 - GAMMA)) < 0.5, value


def test_terminated_episode_learns_the_finite_horizon_value():
    reference = _terminal_reference()  # 6.05
    assert abs(reference - 6.05) < 0.01
    value = _fit_constant_value("PpokitTest/ConstantTerminated-v0")
    assert abs(value - reference) < 0.5, value
    assert value < 1 / (1 - GAMMA) - 3  # clearly not the bootstrapped value
