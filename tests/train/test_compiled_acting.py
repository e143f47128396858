"""``compile_policy=True``: acting through a torch.compile'd TensorPolicy."""

from __future__ import annotations

import pytest
import torch

from ppokit.envs.gym import GymVecEnv
from ppokit.train.collect.collector import RolloutCollector
from ppokit.train.trainer import build_actor_critic

torch.set_num_threads(1)


def test_compiled_acting_matches_eager_and_still_checks():
    env_id = "Pendulum-v1"
    rollouts, collectors = [], []
    calls: list[int] = []
    for compiled in (False, True):
        env = GymVecEnv(env_id, 3)
        torch.manual_seed(0)
        actor, _ = build_actor_critic(env)
        col = RolloutCollector(env, actor, num_steps=40, seed=3, compile_policy=compiled)
        if compiled:
            inner = col._act._compiled_sample
            col._act._compiled_sample = lambda obs, _f=inner, _c=calls: _c.append(1) or _f(obs)
        torch.manual_seed(123)
        rollouts.append(col.collect().clone())
        collectors.append((col, actor, env))
    # the first step is eager (it learns the batch shape), the other 39 run the graph
    assert len(calls) == 39
    eager, compiled = rollouts
    # same random stream; inductor may round differently (fused multiply-add)
    for key in eager.keys(True, True):
        torch.testing.assert_close(
            compiled.get(key),
            eager.get(key),
            rtol=1e-5,
            atol=1e-5,
            msg=lambda m, k=key: f"{k}: {m}",
        )
    # a broken policy still raises the distribution's own error through the compiled graph
    col, actor, env = collectors[1]
    with torch.no_grad():
        for p in actor.parameters():
            p.fill_(float("nan"))
    with pytest.raises(ValueError, match="loc has 3 NaN/Inf entries"):
        col.collect()
    assert len(calls) > 39  # the failing call went through the compiled path
    for _, _, e in collectors:
        e.close()


def test_categorical_policies_act_eagerly_even_with_compile():
    # a compiled call costs more than the few eager ops of a categorical step (measured)
    env = GymVecEnv("CartPole-v1", 2)
    actor, _ = build_actor_critic(env)
    col = RolloutCollector(env, actor, num_steps=8, seed=0, compile_policy=True)
    col.collect()
    env.close()
    assert col._act is not None and col._act._core is None
