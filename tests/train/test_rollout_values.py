"""Image rollouts store each frame once: values recorded while collecting give GAE's numbers."""

from __future__ import annotations

import torch
from image_toys import EndingImageEnv
from tensordict.nn import set_skip_existing

from ppokit import GAE
from ppokit.envs.gym import GymVecEnv
from ppokit.train.build_cnn import build_cnn_actor_critic
from ppokit.train.collect.collector import RolloutCollector

KEYS = ("state_value", ("next", "state_value"), "advantage", "value_target")


def _collect(record_values: bool, share_trunk: bool):
    torch.manual_seed(0)
    env = GymVecEnv(EndingImageEnv, 3)
    actor, critic = build_cnn_actor_critic(env, share_trunk=share_trunk)
    collector = RolloutCollector(
        env, actor, num_steps=12, seed=5, critic=critic if record_values else None
    )
    rollouts = [collector.collect().clone() for _ in range(2)]  # the 2nd starts mid-episode
    env.close()
    return rollouts, critic


def test_recorded_values_give_the_full_value_pass_numbers() -> None:
    for share_trunk in (True, False):
        old, critic = _collect(False, share_trunk)
        new, _ = _collect(True, share_trunk)
        for before, after in zip(old, new):
            # the same transitions (the critic draws no random numbers) ...
            torch.testing.assert_close(after["action"], before["action"], rtol=0, atol=0)
            torch.testing.assert_close(after["observation"], before["observation"])
            assert ("next", "observation") not in after.keys(True)
            done = before["next", "done"]
            assert done.any() and before["next", "truncated"].any()  # both kinds of end seen
            # ... and the same advantages: the old path runs the critic over every
            # observation and next observation; the new one reads the recorded values
            GAE(gamma=0.9, lmbda=0.8, value_network=critic)(before)
            with set_skip_existing(True):
                GAE(gamma=0.9, lmbda=0.8, value_network=critic)(after)
            for key in KEYS:
                torch.testing.assert_close(after[key], before[key], rtol=1e-5, atol=1e-6)


def test_next_values_are_the_next_steps_values_within_an_episode() -> None:
    (rollout, _), _ = _collect(True, True)
    value, nxt, done = (
        rollout["state_value"],
        rollout["next", "state_value"],
        rollout["next", "done"],
    )
    within = ~done[:, :-1]
    # V(s_t+1) is V of the next step's observation wherever no episode ended (bit for bit)
    assert torch.equal(nxt[:, :-1][within], value[:, 1:][within])
    # where one ended: V of the true final frame, which is not the reset frame after it
    assert not torch.equal(nxt[:, :-1][~within], value[:, 1:][~within])


def test_a_shared_trunk_runs_once_per_step_for_acting_and_values() -> None:
    torch.manual_seed(0)
    env = GymVecEnv(EndingImageEnv, 3)
    actor, critic = build_cnn_actor_critic(env)
    collector = RolloutCollector(env, actor, num_steps=12, seed=5, critic=critic)
    frames: list[int] = []
    trunk = critic.module.net[0].trunk  # the NatureCNN inside the SharedTrunk
    trunk.register_forward_hook(lambda m, args, out: frames.append(args[0].shape[0]))
    rollout = collector.collect()
    env.close()
    ends = int(rollout["next", "done"].sum())
    # 12 steps x 3 envs (actor and critic together), 1 frame per ended episode (its true
    # final frame), and the 3 frames after the last step
    assert sum(frames) == 12 * 3 + ends + 3
    assert len(frames) == 12 + int(rollout["next", "done"].any(0).sum()) + 1


def test_the_trainer_estimates_the_same_advantages_from_recorded_values(tmp_path) -> None:
    from ppokit.train.trainer import PPOTrainer

    out = []
    for recompute in (False, True):  # recompute_advantage keeps the next frames
        trainer = PPOTrainer(
            env=EndingImageEnv,
            run_dir=tmp_path / str(recompute),
            num_envs=2,
            num_steps=10,
            total_steps=40,
            eval_episodes=0,
            progress=False,
            recompute_advantage=recompute,
        )
        assert trainer.values_in_rollout is not recompute
        out.append(trainer.estimate_advantage(trainer.collect()).clone())
        trainer.env.close()
    for key in KEYS:
        torch.testing.assert_close(out[0][key], out[1][key], rtol=1e-5, atol=1e-6)
