"""Recurrent training: state stored and reset by the collector, advantages from the re-run
critic, sequence minibatches, bad options refused, resume, evaluation with state, and a
memory task only a recurrent policy solves (the short CI version of the POMDP targets)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from ppokit.envs.gym import GymVecEnv
from ppokit.modules.recurrent import set_recurrent_mode
from ppokit.train.build import build_actor_critic, build_loss
from ppokit.train.collect.collector import RolloutCollector
from ppokit.train.deploy.policy import load_policy
from ppokit.train.evaluation.evaluate import evaluate_policy
from ppokit.train.records.checkpoint import load_checkpoint
from ppokit.train.recurrent.sequences import RecurrentRollout
from ppokit.train.settings.config import TrainConfig
from ppokit.train.settings.validation import check_config
from ppokit.train.trainer import PPOTrainer


class CueEnv(gym.Env):
    """A cue (+1 or -1) is shown at the first step, then zeros; at the last of ``length``
    steps the action must name the cue (reward 1, else 0). Without memory the best expected
    return is 0.5."""

    def __init__(self, length: int = 3) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return np.array([2.0 * self.cue - 1.0, 0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        last = self.t >= self.length - 1
        reward = float(last and int(action) == self.cue)
        obs = np.array([0.0, 1.0 if self.t == self.length - 1 else 0.0], np.float32)
        return obs, reward, last, False, {}


def _collector(kind: str = "gru", num_envs: int = 2, num_steps: int = 8):
    env = GymVecEnv(lambda: CueEnv(4), num_envs)
    actor, critic = build_actor_critic(env, recurrent=kind, recurrent_size=8)
    rec = RecurrentRollout.for_modules(actor, critic, num_envs=num_envs, seq_len=4)
    assert rec is not None
    collector = RolloutCollector(env, actor, num_steps=num_steps, seed=0, recurrent=rec)
    return env, actor, critic, rec, collector


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_collector_stores_state_resets_on_done_and_reproduces_log_probs(kind: str) -> None:
    torch.manual_seed(0)
    env, actor, _critic, rec, collector = _collector(kind)
    first = collector.collect().clone()
    second = collector.collect().clone()
    env.close()
    keys = rec.state.keys
    assert any(k.startswith("critic_") for k in keys)  # the critic's own core is carried too
    for ro in (first, second):
        done = ro["next", "done"]
        is_init = ro["is_init"]
        assert torch.equal(is_init[:, 1:], done[:, :-1])  # is_init marks the step after done
        for key in keys:
            state, nxt = ro[key], ro["next", key]
            keep = (~done[:, :-1]).float()[..., None]
            torch.testing.assert_close(state[:, 1:], nxt[:, :-1] * keep)
            assert state[:, 1:][~done[:, :-1, 0]].abs().sum() > 0  # carried, not reset
    assert first["is_init"][:, 0].all()
    # carried across rollouts: the second starts where the first ended
    for key in keys:
        keep = (~first["next", "done"][:, -1]).float()[..., None]
        torch.testing.assert_close(second[key][:, 0], first["next", key][:, -1] * keep)
    # the stored states are exact: re-running the sequences scores the sampled actions with
    # the log-probs the collector recorded
    with set_recurrent_mode(True), torch.no_grad():
        for ro in (first, second):
            dist = actor.get_dist(ro.clone())
            torch.testing.assert_close(
                dist.log_prob(ro["action"]), ro["action_log_prob"], rtol=1e-5, atol=1e-5
            )


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_tensor_acting_path_equals_the_tensordict_path(kind: str) -> None:
    """The collector's tensor path (RecurrentActing) and the TensorDict module calls give the
    same rollout from the same seed: same networks, same draws."""
    rollouts = []
    for tensor_path in (True, False):
        torch.manual_seed(0)
        env, _actor, _critic, rec, collector = _collector(kind)
        torch.manual_seed(1)
        assert rec.acting is not None
        if not tensor_path:
            rec.acting = None
        rollouts.append((collector.collect().clone(), collector.collect().clone()))
        env.close()
    for fast, slow in zip(*rollouts):
        for key in ("action", "action_log_prob", "is_init", *rec.state.keys):
            torch.testing.assert_close(fast[key], slow[key], rtol=1e-6, atol=1e-6)


def _plain_gae(reward, value, next_value, done, terminated, gamma, lmbda):
    """Reference GAE: the backward recursion written out per env and step."""
    n, t = reward.shape[:2]
    adv = torch.zeros(n, t, 1)
    for i in range(n):
        running = 0.0
        for s in reversed(range(t)):
            not_term, not_done = 1.0 - float(terminated[i, s]), 1.0 - float(done[i, s])
            delta = reward[i, s] + gamma * next_value[i, s] * not_term - value[i, s]
            running = delta + gamma * lmbda * not_done * running
            adv[i, s] = running
    return adv


def test_advantage_from_rerun_critic_and_plain_gae() -> None:
    torch.manual_seed(1)
    env, actor, critic, rec, collector = _collector("lstm", num_steps=12)
    rollout = collector.collect()
    env.close()
    loss = build_loss(
        actor, critic, TrainConfig(gamma=0.9, gae_lambda=0.8), normalize_advantage=True
    )
    rec.estimate_advantage(loss.value_estimator, rollout)
    value, next_value = rollout["state_value"], rollout["next", "state_value"]
    done = rollout["next", "done"]
    # V(s_{t+1}) one step from the stored state == the sequence re-run's V at t + 1
    same = ~done[:, :-1, 0]
    torch.testing.assert_close(next_value[:, :-1][same], value[:, 1:][same], rtol=1e-5, atol=1e-6)
    ref = _plain_gae(
        rollout["next", "reward"], value, next_value, done, rollout["next", "terminated"], 0.9, 0.8
    )
    torch.testing.assert_close(rollout["advantage"], ref, rtol=1e-5, atol=1e-6)


def test_sequence_rows_keep_time_order() -> None:
    env, _actor, _critic, rec, collector = _collector("gru", num_envs=2, num_steps=8)
    rollout = collector.collect()
    env.close()
    rows = rec.rows(rollout, ["observation", "action"])
    assert rows.batch_size == torch.Size([4, 4])  # 2 envs x 8 steps in sequences of 4
    torch.testing.assert_close(rows["observation"][3], rollout["observation"][1, 4:8])
    assert "recurrent_state" in rows.keys() and "is_init" in rows.keys()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"compile": True}, "cannot be combined with --compile"),
        ({"recurrent_seq_len": 5}, "does not divide --num-steps 32"),
        ({"num_envs": 3, "num_minibatches": 2}, "3 sequences do not divide"),
    ],
)
def test_options_a_recurrent_run_cannot_honour_are_refused(overrides: dict, message: str) -> None:
    check_config(TrainConfig(recurrent="gru", num_steps=32, recurrent_seq_len=8))  # fine
    cfg = TrainConfig(recurrent="gru", num_steps=32, **overrides)
    with pytest.raises(ValueError, match=message):
        check_config(cfg)


def test_resume_restores_the_recurrent_run_and_load_policy_plays_with_state(tmp_path) -> None:
    opts = dict(
        env="ppokit/CartPoleNoVel-v1",
        recurrent="lstm",
        recurrent_size=16,
        num_envs=4,
        num_steps=16,
        recurrent_seq_len=8,
        num_minibatches=2,
        num_epochs=2,
        eval_episodes=0,
        progress=False,
        checkpoint_every=1,
    )
    first = PPOTrainer(run_dir=tmp_path, total_steps=128, **opts)
    first.train()
    state = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    resumed = PPOTrainer(run_dir=tmp_path, total_steps=192, resume=True, **opts)
    assert resumed.iteration == 2
    for name, value in resumed.actor.state_dict().items():
        torch.testing.assert_close(value, state["actor"][name])
    assert resumed.optimizer.state_dict()["state"].keys() == state["optimizer"]["state"].keys()
    assert resumed.train().iterations == 3
    actor, obs_norm, cfg = load_policy(tmp_path)
    assert cfg.recurrent == "lstm"
    result = evaluate_policy(actor, "ppokit/CartPoleNoVel-v1", episodes=2, obs_normalizer=obs_norm)
    assert len(result.returns) == 2 and all(r >= 1 for r in result.returns)


def test_memory_task_needs_the_recurrent_core() -> None:
    """Short CI version of the POMDP targets: the cue must be remembered for 3 steps."""
    gym.register("ppokit_test/Cue-v0", entry_point=lambda: CueEnv(4), max_episode_steps=10)
    opts = dict(
        env="ppokit_test/Cue-v0",
        num_envs=8,
        num_steps=16,
        num_minibatches=2,
        num_epochs=4,
        lr=3e-3,
        total_steps=2048,
        eval_episodes=20,
        entropy_coef=0.01,
        progress=False,
        seed=3,
    )
    import tempfile

    rec = PPOTrainer(run_dir=tempfile.mkdtemp(), recurrent="gru", recurrent_size=16, **opts)
    ff = PPOTrainer(run_dir=tempfile.mkdtemp(), **opts)
    rec_return = rec.train().summary["eval_return_mean"]
    ff_return = ff.train().summary["eval_return_mean"]
    # with memory every cue is named (return 1); a feed-forward policy guesses (about 0.5)
    assert rec_return >= 0.95, rec_return
    assert ff_return <= 0.8, ff_return


def test_recurrent_actor_with_a_feed_forward_critic_trains(tmp_path) -> None:
    with GymVecEnv("ppokit/CartPoleNoVel-v1", 1) as env:
        actor, _ = build_actor_critic(env, recurrent="gru", recurrent_size=8)
        _, critic = build_actor_critic(env)
    trainer = PPOTrainer(
        env="ppokit/CartPoleNoVel-v1",
        actor=actor,
        critic=critic,
        run_dir=tmp_path,
        total_steps=512,
        num_steps=32,
        eval_episodes=2,
        progress=False,
    )
    assert trainer.recurrent is not None and trainer.recurrent.critic_keys == []
    assert trainer.train().env_steps == 512


def test_a_recurrent_run_off_the_cpu_is_refused_with_the_fix() -> None:
    with GymVecEnv("ppokit/CartPoleNoVel-v1", 1) as env:
        actor, critic = build_actor_critic(env, recurrent="gru", recurrent_size=8)
    cfg = TrainConfig(recurrent="gru", num_envs=1, num_steps=16, device="auto")
    assert RecurrentRollout.for_config(actor, critic, cfg, device=torch.device("cpu"))
    with pytest.raises(ValueError, match=r"device is 'cuda:0' .* Pass --device cpu"):
        RecurrentRollout.for_config(actor, critic, cfg, device=torch.device("cuda:0"))
