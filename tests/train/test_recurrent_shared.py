"""Actor and critic on one shared encoder and recurrent core (``--recurrent-shared``): the
sequence re-run with resets against a step-by-step loop, one state carried, both losses
training the core, and a whole run with checkpoint, resume and ``load_policy``."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch
from recurrent_steps import step_loop_against_sequence

from ppokit.modules.recurrent import recurrent_modules
from ppokit.train.build import build_actor_critic
from ppokit.train.deploy.policy import load_policy
from ppokit.train.evaluation.evaluate import evaluate_policy
from ppokit.train.recurrent.state import PolicyState
from ppokit.train.trainer import PPOTrainer

B, T = 3, 7
#: a two-env CartPoleNoVel run of 32-step iterations, small networks
SMALL_RUN = dict(
    env="ppokit/CartPoleNoVel-v1",
    recurrent_size=8,
    hidden_sizes=(8,),
    num_envs=2,
    num_steps=16,
    num_minibatches=2,
    num_epochs=2,
    eval_episodes=0,
    progress=False,
)


def _shared(kind: str, discrete: bool = True):
    env = SimpleNamespace(obs_shape=(3,), discrete=discrete, num_actions=2)
    return build_actor_critic(
        env, recurrent=kind, recurrent_size=5, recurrent_shared=True, hidden_sizes=(6,)
    )


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_shared_core_sequence_with_resets_matches_step_loop(kind: str) -> None:
    torch.manual_seed(0)
    actor, critic = _shared(kind)
    (core,) = recurrent_modules(actor, critic)  # one core, reached from both
    state = PolicyState(actor, critic, batch=B)
    assert state.keys == list(core.state_keys)  # one state to carry, no critic_ keys
    obs = torch.randn(B, T, 3)
    is_init = torch.zeros(B, T, 1, dtype=torch.bool)
    is_init[0, 2], is_init[1, 5], is_init[2, 1], is_init[2, 4] = True, True, True, True
    logits, value = step_loop_against_sequence(actor, critic, obs, is_init)
    # both losses reach the shared core: the value loss alone and the policy term alone
    for out in (value.square().sum(), logits[..., 0].sum()):
        core.rnn.zero_grad()
        out.backward(retain_graph=True)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in core.parameters())


def test_shared_run_resumes_deterministically_and_loads(tmp_path) -> None:
    opts = dict(SMALL_RUN, recurrent="gru", recurrent_shared=True, recurrent_seq_len=8)
    opts.update(num_epochs=1, checkpoint_every=1)
    first = tmp_path / "first"
    PPOTrainer(run_dir=first, total_steps=64, **opts).train()
    # two resumes from the same checkpoint take the very same steps (weights, optimizer,
    # shuffling and env seeds restored; the carried state restarts with the envs)
    params = []
    for name in ("a", "b"):
        shutil.copytree(first, tmp_path / name)
        resumed = PPOTrainer(run_dir=tmp_path / name, total_steps=96, resume=True, **opts)
        assert resumed.iteration == 2 and bool(resumed.recurrent.state.is_init.all())
        assert resumed.train().iterations == 3
        params.append(torch.cat([p.detach().flatten() for p in resumed.params]))
    assert torch.equal(params[0], params[1])
    actor, obs_norm, cfg = load_policy(tmp_path / "a")
    assert cfg.recurrent_shared and len(PolicyState(actor, batch=1).keys) == 1
    result = evaluate_policy(actor, "ppokit/CartPoleNoVel-v1", episodes=2, obs_normalizer=obs_norm)
    assert len(result.returns) == 2 and all(r >= 1 for r in result.returns)


@pytest.mark.parametrize(("kind", "shared"), [("lstm", True), ("gru", False)])
def test_resumed_trainer_updates_exactly_as_the_uninterrupted_one(tmp_path, kind, shared) -> None:
    """Weights, optimizer moments, shuffling stream: the resumed trainer's update on a
    rollout is bit-identical to the update the uninterrupted trainer makes on it."""
    opts = dict(SMALL_RUN, recurrent=kind, recurrent_shared=shared, recurrent_seq_len=4)
    opts.update(anneal_lr=False)  # the two trainers plan different numbers of iterations
    uninterrupted = PPOTrainer(run_dir=tmp_path, total_steps=64, **opts)
    uninterrupted.train()  # checkpoints at its end
    resumed = PPOTrainer(run_dir=tmp_path, total_steps=96, resume=True, **opts)
    rollout = uninterrupted.collect()
    copy = rollout.clone()
    uninterrupted.update(rollout)
    resumed.update(copy)
    for a, b in zip(uninterrupted.params, resumed.params, strict=True):
        assert torch.equal(a, b)
    moments = [resumed.optimizer.state[p]["exp_avg_sq"] for p in resumed.params]
    for p, m in zip(uninterrupted.params, moments, strict=True):
        assert torch.equal(uninterrupted.optimizer.state[p]["exp_avg_sq"], m)
