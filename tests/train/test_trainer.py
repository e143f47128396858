"""PPOTrainer: a short learning run, exact state round trip, LR schedule, target-KL stop."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from ppokit.train.records.metrics import read_progress_csv
from ppokit.train.settings.config import num_iterations, preset_config
from ppokit.train.trainer import PPOTrainer, load_policy


def _small(tmp_path, **kw):
    values = dict(total_steps=512, progress=False, eval_episodes=0, checkpoint_every=1)
    values.update(kw)
    return preset_config(kw.pop("env", "CartPole-v1"), **values)


def test_short_cartpole_run_clearly_improves(tmp_path):
    # random play scores about 22 on CartPole; the defaults reach ~150+ by 15k steps
    cfg = preset_config("CartPole-v1", total_steps=15_000, progress=False, eval_episodes=10)
    result = PPOTrainer(cfg, run_dir=tmp_path / "run").train()
    s = result.summary
    assert (
        s["env_steps"]
        == result.env_steps
        == num_iterations(total_steps=cfg.total_steps, batch_size=cfg.batch_size) * cfg.batch_size
    )
    assert s["eval_episodes"] == 10
    assert s["eval_return_mean"] > 100, s
    rows = read_progress_csv(tmp_path / "run" / "progress.csv")
    early = [r["episode_return_mean"] for r in rows[:5]]
    late = [r["episode_return_mean"] for r in rows[-5:]]
    assert sum(late) / 5 > 3 * sum(early) / 5
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in (
        "env",
        "seed",
        "env_steps",
        "wall_seconds",
        "sps",
        "eval_return_mean",
        "eval_return_std",
        "eval_episodes",
    ):
        assert key in saved
    assert saved["env"] == "CartPole-v1" and saved["seed"] == 1


def test_run_dir_layout_and_logged_scalars(tmp_path):
    run = tmp_path / "run"
    PPOTrainer(_small(tmp_path, total_steps=768, keep_checkpoint_every=2), run_dir=run).train()
    assert json.loads((run / "config.json").read_text())["total_steps"] == 768
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest.pt", "step_512.pt"]
    assert any((run / "tb").iterdir())
    rows = read_progress_csv(run / "progress.csv")
    assert [int(r["env_steps"]) for r in rows] == [256, 512, 768]
    for key in (
        "loss_objective",
        "loss_critic",
        "loss_entropy",
        "entropy",
        "clip_fraction",
        "kl_approx",
        "ESS",
        "explained_variance",
        "grad_norm",
        "lr",
        "sps",
        "episode_return_mean",
    ):
        assert key in rows[0], key
    assert all(math.isfinite(r["loss_critic"]) for r in rows)
    # linear annealing: lr_i = lr0 * (1 - (i - 1) / 3) for the 3 iterations
    lr0 = 1e-3
    assert [round(r["lr"], 8) for r in rows] == [lr0, round(lr0 * 2 / 3, 8), round(lr0 / 3, 8)]


def test_state_dict_round_trip_is_exact(tmp_path):
    cfg = _small(tmp_path, total_steps=256 * 2)
    a = PPOTrainer(cfg, run_dir=tmp_path / "a")
    a.train()
    b = PPOTrainer(cfg, run_dir=tmp_path / "a", resume=True)
    assert (b.iteration, b.env_steps) == (2, 512)
    for pa, pb in zip(a.params, b.params):
        assert torch.equal(pa, pb)
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    assert torch.equal(a.shuffle_gen.get_state(), b.shuffle_gen.get_state())
    # both continue identically on the same data: same minibatch order, same update
    ro = b.collector.collect()
    ro_copy = ro.clone()
    a.update(ro_copy)
    b.update(ro)
    for pa, pb in zip(a.params, b.params):
        torch.testing.assert_close(pa, pb)


def test_resume_rejects_a_changed_environment_or_network(tmp_path):
    cfg = _small(tmp_path, total_steps=256)
    PPOTrainer(cfg, run_dir=tmp_path / "r").train()
    with pytest.raises(ValueError, match=r"hidden_sizes=\(64, 64\).*\(32,\)"):
        PPOTrainer(
            _small(tmp_path, total_steps=256, hidden_sizes=(32,)),
            run_dir=tmp_path / "r",
            resume=True,
        )


def test_normalizer_statistics_saved_and_used_frozen(tmp_path):
    run = tmp_path / "pend"
    cfg = preset_config(
        "Pendulum-v1",
        total_steps=512,
        num_steps=128,
        num_minibatches=4,
        num_epochs=1,
        obs_norm=True,
        reward_scale=True,
        progress=False,
        eval_episodes=0,
    )
    trainer = PPOTrainer(cfg, run_dir=run)
    trainer.train()
    _, obs_norm, loaded_cfg = load_policy(run)
    assert loaded_cfg.env == "Pendulum-v1"
    np.testing.assert_array_equal(obs_norm.rms.mean, trainer.obs_norm.rms.mean)
    assert obs_norm.rms.count == trainer.obs_norm.rms.count > 500
    before = obs_norm.rms.count
    obs_norm.normalize(torch.randn(10, 3) * 100)
    assert obs_norm.rms.count == before  # frozen for evaluation
    assert trainer.reward_scaler.rms.count > 500


def test_target_kl_stops_the_epochs_early(tmp_path):
    cfg = _small(tmp_path, total_steps=256 * 3, target_kl=1e-9, num_epochs=10, num_minibatches=4)
    PPOTrainer(cfg, run_dir=tmp_path / "kl").train()
    rows = read_progress_csv(tmp_path / "kl" / "progress.csv")
    # the first minibatch of an epoch runs at KL 0 (policy unchanged); the second exceeds 1e-9
    assert all(r["minibatch_updates"] < 10 * 4 for r in rows)
    assert all(r["epochs_completed"] == 0 for r in rows)


def test_recompute_advantage_each_epoch_runs_and_differs(tmp_path):
    cfg = _small(tmp_path, total_steps=256, num_epochs=3)
    t1 = PPOTrainer(cfg, run_dir=tmp_path / "a")
    ro1 = t1.collect()  # each trainer seeds the global RNGs when built: build, then collect
    t2 = PPOTrainer(dataclasses.replace(cfg, recompute_advantage=True), run_dir=tmp_path / "b")
    ro2 = t2.collect()
    assert torch.equal(ro1["observation"], ro2["observation"])  # same seed, same data
    t1.update(ro1)
    t2.update(ro2)
    # after the update, the rollout's advantages differ: the second was recomputed with the
    # critic as trained by epochs 1-2
    assert not torch.allclose(ro1["advantage"], ro2["advantage"])


def test_same_seed_same_run_bit_for_bit(tmp_path):
    cfg = _small(tmp_path, total_steps=512)
    a = PPOTrainer(cfg, run_dir=tmp_path / "a")
    a.train()
    b = PPOTrainer(cfg, run_dir=tmp_path / "b")
    b.train()
    for pa, pb in zip(a.params, b.params):
        assert torch.equal(pa, pb)
    c = PPOTrainer(dataclasses.replace(cfg, seed=2), run_dir=tmp_path / "c")
    c.train()
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.params, c.params))


def test_mujoco_preset_short_run(tmp_path):
    # the MuJoCo path (Box actions, obs normalisation, reward scaling) end to end, briefly
    cfg = preset_config(
        "Hopper-v5",
        total_steps=1024,
        num_steps=512,
        num_minibatches=8,
        num_epochs=2,
        progress=False,
        eval_episodes=2,
    )
    result = PPOTrainer(cfg, run_dir=tmp_path / "hopper").train()
    s = result.summary
    assert s["env_steps"] == 1024 and s["eval_episodes"] == 2
    assert math.isfinite(s["eval_return_mean"])
    rows = read_progress_csv(tmp_path / "hopper" / "progress.csv")
    assert [int(r["minibatch_updates"]) for r in rows] == [16, 16]
    assert all(math.isfinite(r["loss_critic"]) and r["entropy"] > 0 for r in rows)


def test_ortho_init_switch():
    from ppokit.envs.gym import GymVecEnv
    from ppokit.train.build import build_actor_critic

    env = GymVecEnv("Pendulum-v1", 1)
    torch.manual_seed(0)
    ortho_actor, _ = build_actor_critic(env, hidden_sizes=(32, 32))
    torch.manual_seed(0)
    plain_actor, plain_critic = build_actor_critic(env, hidden_sizes=(32, 32), ortho_init=False)
    env.close()

    def linears(module):
        return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]

    # orthogonal: the 32x32 hidden layer has W W^T = 2 I (gain sqrt 2), biases 0, and the
    # policy head is scaled by 0.01
    hidden = linears(ortho_actor)[1].weight.detach()
    torch.testing.assert_close(hidden @ hidden.T, 2 * torch.eye(32), atol=1e-4, rtol=0)
    assert all(float(m.bias.abs().max()) == 0 for m in linears(ortho_actor))
    assert float(linears(ortho_actor)[-1].weight.abs().max()) < 0.02
    # torch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and biases, not orthogonal
    for layer in linears(plain_actor) + linears(plain_critic):
        bound = 1 / math.sqrt(layer.in_features)
        assert float(layer.weight.abs().max()) <= bound and float(layer.bias.abs().max()) > 0
    hidden = linears(plain_actor)[1].weight.detach()
    assert not torch.allclose(hidden @ hidden.T, 2 * torch.eye(32), atol=0.5)


def test_anneal_clip_sets_the_loss_clip_range_each_iteration(tmp_path):
    # 4 iterations of 256 steps, clip 0.2: iteration k uses 0.2 * (1 - (k - 1) / 4), so the
    # last one runs at 0.2 * 1 / 4 = 0.05; without the flag the loss keeps 0.2
    cfg = _small(tmp_path, total_steps=256 * 4, clip_epsilon=0.2, anneal_clip=True)
    trainer = PPOTrainer(cfg, run_dir=tmp_path / "a")
    assert [round(trainer.clip_epsilon(k), 6) for k in (1, 2, 3, 4)] == [0.2, 0.15, 0.1, 0.05]
    trainer.train()
    assert float(trainer.loss.clip_epsilon) == pytest.approx(0.05)
    still = PPOTrainer(dataclasses.replace(cfg, anneal_clip=False), run_dir=tmp_path / "b")
    still.train()
    assert float(still.loss.clip_epsilon) == pytest.approx(0.2)
