"""Training on structured spaces: toy optima, masks end to end, checkpoints, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from structured_toys import TOY, ImageAndMixedAction, InfoMaskGame, InvertBits, MatchMultiDiscrete
from torch.testing import assert_close

from ppokit.envs.structured import StructuredVecEnv
from ppokit.train.deploy.policy import load_policy
from ppokit.train.evaluation.evaluate import evaluate_policy
from ppokit.train.normalization import ObservationNormalizer
from ppokit.train.structured.training import normalize_leaves
from ppokit.train.trainer import PPOTrainer


def learned_return(env_cls, steps: int, seed: int, tmp_path) -> float:
    trainer = PPOTrainer(
        env=env_cls, run_dir=tmp_path / f"s{seed}", seed=seed, total_steps=steps, **TOY
    )
    trainer.train()
    return evaluate_policy(trainer.actor, env_cls, episodes=100, seed=1000 + seed).mean


@pytest.mark.parametrize("env_cls", [MatchMultiDiscrete, InvertBits])
def test_toy_optimum_learned_within_5_percent(env_cls, tmp_path):
    # the optimum is a mean return of exactly 1.0 (every entry right)
    assert learned_return(env_cls, 1024, 1, tmp_path) >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("env_cls", [MatchMultiDiscrete, InvertBits])
def test_toy_optimum_learned_within_5_percent_over_seeds(env_cls, tmp_path):
    returns = [learned_return(env_cls, 4096, seed, tmp_path) for seed in (1, 2, 3)]
    assert min(returns) >= 0.95, returns


def test_masked_training_acts_legally_and_reloads(tmp_path):
    pytest.importorskip("pettingzoo")
    trainer = PPOTrainer(
        env="ppokit/TicTacToe-v0",
        run_dir=tmp_path,
        total_steps=256,
        num_envs=4,
        num_steps=32,
        eval_episodes=0,
        progress=False,
    )
    rollout = trainer.collect()
    mask = rollout["observation", "action_mask"]
    action = rollout["action"]
    assert mask.shape == (4, 32, 9) and mask.dtype == torch.bool
    assert mask.gather(-1, action.unsqueeze(-1)).all()  # every sampled move is legal
    assert torch.isfinite(rollout["action_log_prob"]).all()
    trainer.train()
    actor, _obs_norm, _cfg = load_policy(tmp_path)
    res = evaluate_policy(actor, "ppokit/TicTacToe-v0", episodes=20, seed=0)
    assert len(res.returns) == 20 and set(res.returns) <= {-1.0, 0.0, 1.0}
    venv = StructuredVecEnv("ppokit/TicTacToe-v0", 20)
    evaluate_policy(actor, venv.env, episodes=20, seed=0)  # a VectorEnv source, closed after
    assert sum(venv.env.get_attr("illegal_moves")) == 0


def test_info_mask_training_never_plays_an_illegal_action(tmp_path):
    trainer = PPOTrainer(
        env=InfoMaskGame,
        run_dir=tmp_path,
        total_steps=128,
        num_envs=2,
        num_steps=16,
        eval_episodes=0,
        progress=False,
    )
    rollout = trainer.collect()
    # an illegal action would have scored -1; with the mask every reward is +1
    assert (rollout["next", "reward"] == 1.0).all()
    assert rollout["observation", "action_mask"].sum(-1).eq(2).all()


def test_only_vector_leaves_are_normalised():
    with StructuredVecEnv(MatchMultiDiscrete, 2) as env:
        obs = env.reset(seed=0)
        obs.set("noise", torch.tensor([[0.0, 2.0], [2.0, 4.0]]))
        norm = ObservationNormalizer(env.obs_shape, clip=10.0)
        out = normalize_leaves(env, obs, norm, update=True)
    # per-entry mean [1, 3], std [1, 1] (population): [[-1, -1], [1, 1]] (eps-close)
    assert_close(out["noise"], torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), atol=1e-3, rtol=0)
    assert torch.equal(out["target"], obs["target"])  # one-hot leaves are left alone
    assert np.allclose(norm.rms.mean, [1.0, 3.0], atol=1e-3)


def test_image_leaf_and_mixed_dict_action_train_and_evaluate(tmp_path):
    trainer = PPOTrainer(
        env=ImageAndMixedAction,
        run_dir=tmp_path,
        total_steps=128,
        num_envs=2,
        num_steps=32,
        obs_norm=True,
        eval_episodes=2,
        progress=False,
    )
    rollout = trainer.collect()
    assert rollout["observation", "img"].dtype == torch.uint8  # images are never normalised
    assert rollout["action", "push"].shape == (2, 32, 2)
    assert rollout["action", "pick"].dtype == torch.int64
    heads = rollout["action", "pick_log_prob"] + rollout["action", "push_log_prob"]
    assert_close(rollout["action_log_prob"], heads)  # the stored total is the heads' sum
    assert trainer.obs_norm.rms.mean.shape == (3,)  # only "vec" is normalised
    result = trainer.train()
    assert len(result.summary["eval_returns"]) == 2


@pytest.mark.slow
def test_tictactoe_masked_policy_wins_or_draws_95_percent(tmp_path):
    pytest.importorskip("pettingzoo")
    trainer = PPOTrainer(env="ppokit/TicTacToe-v0", run_dir=tmp_path, progress=False)
    trainer.train()
    venv = StructuredVecEnv("ppokit/TicTacToe-v0", 1000)
    result = evaluate_policy(trainer.actor, venv.env, episodes=1000, seed=10_000)
    returns = np.array(result.returns)
    assert sum(venv.env.get_attr("illegal_moves")) == 0
    assert (returns >= 0).mean() >= 0.95, (returns == 1).mean()
