"""The trainer as a library: env sources (id, module:Id, callable, VectorEnv), user networks,
env kwargs, config fields as keyword arguments, the renamed fields, the documented example."""

from __future__ import annotations

import json
import re
import textwrap
import uuid
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import nn

from ppokit import Categorical, ProbabilisticActor, ValueOperator
from ppokit.train.api import train
from ppokit.train.cli.arguments import resolve_train_config
from ppokit.train.cli.main import main
from ppokit.train.deploy.policy import load_policy
from ppokit.train.settings.config import TrainConfig, config_from_dict, num_iterations
from ppokit.train.trainer import PPOTrainer

DOC = Path(__file__).resolve().parents[2] / "docs" / "guide" / "library.md"

# A module that registers a tiny env when imported: what `--env module:EnvId` is for.
_ENV_MODULE = '''
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Sign(gym.Env):
    """Observe x in [-1, 1]; action 1 earns 1 when x > 0, action 0 when x <= 0."""

    def __init__(self, length=8):
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.x = self.np_random.uniform(-1, 1, (1,)).astype(np.float32)
        return self.x, {}

    def step(self, action):
        reward = float(int(action) == int(self.x[0] > 0))
        self.t += 1
        self.x = self.np_random.uniform(-1, 1, (1,)).astype(np.float32)
        return self.x, reward, self.t >= self.length, False, {}


gym.register("{env_id}", entry_point=Sign)
'''


@pytest.fixture
def env_module(tmp_path, monkeypatch):
    """(module name, env id) of a fresh module on sys.path that registers its env on import."""
    name = f"ppokit_test_envs_{uuid.uuid4().hex[:8]}"
    env_id = f"Sign{uuid.uuid4().hex[:6]}-v0"
    (tmp_path / f"{name}.py").write_text(_ENV_MODULE.replace("{env_id}", env_id))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, env_id
    gym.envs.registry.pop(env_id, None)


class Sign(gym.Env):
    """The same task as the module's, for the callable and VectorEnv sources."""

    def __init__(self, length: int = 8) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.x = self.np_random.uniform(-1, 1, (1,)).astype(np.float32)
        return self.x, {}

    def step(self, action):
        reward = float(int(action) == int(self.x[0] > 0))
        self.t += 1
        self.x = self.np_random.uniform(-1, 1, (1,)).astype(np.float32)
        return self.x, reward, self.t >= self.length, False, {}


_SMALL = dict(num_envs=4, num_steps=32, num_epochs=2, num_minibatches=2, progress=False)


def _learns(summary: dict) -> bool:
    # random play scores 4 of 8 on average; a learnt policy nearly 8
    return summary["eval_return_mean"] >= 7


def test_module_env_id_imports_the_module_and_learns(env_module, tmp_path):
    module, env_id = env_module
    assert env_id not in gym.envs.registry  # only the import registers it
    result = train(
        f"{module}:{env_id}",
        run_dir=tmp_path / "run",
        total_steps=4096,
        lr=3e-3,
        eval_episodes=8,
        **_SMALL,
    )
    assert result.summary["env"] == f"{module}:{env_id}"
    assert _learns(result.summary), result.summary


def test_cli_module_env_and_env_kwargs(env_module, tmp_path, capsys):
    module, env_id = env_module
    run = tmp_path / "run"
    argv = [
        "train",
        "--env",
        f"{module}:{env_id}",
        "--env-kwargs",
        '{"length": 5}',
        "--total-steps",
        "256",
        "--num-envs",
        "2",
        "--num-steps",
        "64",
        "--eval-episodes",
        "3",
        "--no-progress",
        "--run-dir",
        str(run),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "eager update" in out and 'ppokit: gymnasium.make kwargs {"length": 5}' in out
    saved = json.loads((run / "config.json").read_text())
    assert saved["env"] == f"{module}:{env_id}" and saved["env_kwargs"] == {"length": 5}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_lengths"] == [5, 5, 5]  # the kwarg reached the env
    # eval rebuilds the env from the saved config, kwargs included
    assert main(["eval", str(run), "--episodes", "2"]) == 0


def test_env_kwargs_flag_merges_over_the_config_files(tmp_path):
    conf = tmp_path / "conf.json"
    conf.write_text(
        json.dumps({"env_kwargs": {"max_episode_steps": 50, "sutton_barto_reward": True}})
    )
    argv = ["--env", "CartPole-v1", "--config", str(conf), "--run-dir", str(tmp_path / "r")]
    cfg, _, _ = resolve_train_config([*argv, "--env-kwargs", '{"max_episode_steps": 20}'])
    # the flag's key wins, the file's other key stays
    assert cfg.env_kwargs == {"max_episode_steps": 20, "sutton_barto_reward": True}
    cfg, _, _ = resolve_train_config(argv)
    assert cfg.env_kwargs == {"max_episode_steps": 50, "sutton_barto_reward": True}


def test_ant_preset_kwargs_reach_the_env_and_the_flag_overrides_them(tmp_path):
    pytest.importorskip("mujoco")
    run = ["--env", "Ant-v5", "--run-dir", str(tmp_path / "r")]
    cfg, _, _ = resolve_train_config(run)
    trainer = PPOTrainer(cfg=replace(cfg, num_envs=1, eval_episodes=0), progress=False)
    assert trainer.env.obs_shape == (27,)  # 105 with the contact forces
    trainer.env.close()
    flag = '{"include_cfrc_ext_in_observation": true, "ctrl_cost_weight": 0.3}'
    cfg, _, _ = resolve_train_config([*run, "--env-kwargs", flag])
    assert cfg.env_kwargs == {"include_cfrc_ext_in_observation": True, "ctrl_cost_weight": 0.3}


def test_env_kwargs_reach_gymnasium_make(tmp_path):
    trainer = PPOTrainer(
        env="CartPole-v1",
        env_kwargs={"max_episode_steps": 7},
        run_dir=tmp_path / "run",
        total_steps=256,
        eval_episodes=2,
        progress=False,
    )
    assert trainer.cfg.env_kwargs == {"max_episode_steps": 7}
    summary = trainer.train().summary
    assert max(summary["eval_lengths"]) <= 7


def test_callable_env_with_user_networks_learns(tmp_path):
    torch.manual_seed(0)
    actor = ProbabilisticActor(
        nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 2)),
        in_keys=["observation"],
        out_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    critic = ValueOperator(
        nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)), in_keys=["observation"]
    )
    before = [p.detach().clone() for p in actor.parameters()]
    trainer = PPOTrainer(
        env=Sign,
        actor=actor,
        critic=critic,
        run_dir=tmp_path / "run",
        total_steps=4096,
        lr=3e-3,
        eval_episodes=8,
        **_SMALL,
    )
    assert trainer.actor is actor and trainer.critic is critic  # used, not copied
    assert trainer.cfg.env == "Sign" and trainer.update_kind == "eager"
    result = trainer.train()
    assert any(not torch.equal(p, q) for p, q in zip(actor.parameters(), before, strict=True))
    assert _learns(result.summary), result.summary
    # the weights load back into the user's network
    fresh = ProbabilisticActor(
        nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 2)),
        in_keys=["observation"],
        out_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    loaded, _, cfg = load_policy(tmp_path / "run", actor=fresh, env=Sign)
    assert loaded is fresh and cfg.env == "Sign"
    for p, q in zip(fresh.parameters(), actor.parameters(), strict=True):
        assert torch.equal(p, q)


def test_torchrl_actor_and_critic(tmp_path):
    from tensordict.nn import TensorDictModule
    from torchrl.modules import ProbabilisticActor as TorchRLActor
    from torchrl.modules import ValueOperator as TorchRLValue

    params = TensorDictModule(nn.Linear(1, 2), in_keys=["observation"], out_keys=["logits"])
    actor = TorchRLActor(
        params,
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    critic = TorchRLValue(nn.Linear(1, 1), in_keys=["observation"])
    trainer = PPOTrainer(
        env=Sign,
        actor=actor,
        critic=critic,
        run_dir=tmp_path / "run",
        total_steps=256,
        eval_episodes=2,
        **_SMALL,
    )
    result = trainer.train()
    assert result.env_steps == 256 and np.isfinite(result.summary["eval_return_mean"])


def test_vector_env_sets_num_envs_and_needs_an_eval_env(tmp_path):
    envs = SyncVectorEnv([Sign] * 3, autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="pass eval_env="):
        PPOTrainer(env=envs, run_dir=tmp_path / "a", total_steps=96, num_steps=32, progress=False)
    with pytest.raises(ValueError, match="num_envs=4 disagrees with the VectorEnv"):
        PPOTrainer(env=envs, run_dir=tmp_path / "b", num_envs=4, eval_episodes=0)
    trainer = PPOTrainer(
        env=envs,
        eval_env=Sign,
        run_dir=tmp_path / "c",
        total_steps=192,
        num_steps=32,
        progress=False,
        eval_episodes=2,
    )
    assert trainer.cfg.num_envs == 3 and trainer.env.env is envs
    result = trainer.train()
    assert result.env_steps == 192 and result.summary["eval_episodes"] == 2


def test_vector_env_with_next_step_autoreset_is_refused(tmp_path):
    envs = SyncVectorEnv([Sign] * 2)  # Gymnasium's default: NEXT_STEP
    with pytest.raises(ValueError, match=r"needs AutoresetMode\.SAME_STEP"):
        PPOTrainer(env=envs, run_dir=tmp_path / "run", eval_episodes=0)
    envs.close()


def test_bad_sources_and_networks_are_refused(tmp_path):
    with pytest.raises(TypeError, match="An env source is a Gymnasium id"):
        PPOTrainer(env=42, run_dir=tmp_path / "a")
    with pytest.raises(TypeError, match=r"actor must be a torch\.nn\.Module"):
        PPOTrainer(env="CartPole-v1", actor=lambda td: td, run_dir=tmp_path / "b")
    with pytest.raises(ValueError, match=r"env_kwargs=.* only runs for a Gymnasium id"):
        PPOTrainer(env=Sign, env_kwargs={"length": 3}, run_dir=tmp_path / "c")
    with pytest.raises(KeyError, match="Unknown config field 'learning_rate'"):
        PPOTrainer(env="CartPole-v1", learning_rate=1e-3, run_dir=tmp_path / "d")


def test_compile_that_cannot_be_honoured_fails_with_the_reason(tmp_path, capsys):
    from ppokit.objectives.ppo import ClipPPOLoss
    from ppokit.train.update import make_update_step

    actor = ProbabilisticActor(
        nn.Linear(1, 2),
        in_keys=["observation"],
        out_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    loss = ClipPPOLoss(actor, ValueOperator(nn.Linear(1, 1), in_keys=["observation"]))
    params = list(loss.parameters())
    # the fused graph runs Adam's rule: another optimizer is refused, with FusedPPOUpdate's
    # own reason chained, instead of quietly training eagerly
    with pytest.raises(ValueError, match=r"compile=True cannot be honoured: .*Adam") as info:
        make_update_step(loss, torch.optim.SGD(params, lr=0.1), params, compile=True)
    assert isinstance(info.value.__cause__, TypeError)
    assert (
        make_update_step(loss, torch.optim.SGD(params, lr=0.1), params, compile=False).kind
        == "eager"
    )


def test_old_field_names_are_read_with_a_warning(tmp_path, capsys):
    with pytest.warns(FutureWarning) as record:
        cfg = config_from_dict({"ent_coef": 0.02, "vf_coef": 0.7})
    assert [str(w.message).split(":")[0] for w in record] == [
        "Config field 'ent_coef' is deprecated",
        "Config field 'vf_coef' is deprecated",
    ]
    assert (cfg.entropy_coef, cfg.critic_coef) == (0.02, 0.7)
    with pytest.raises(KeyError, match="given twice"), pytest.warns(FutureWarning):
        config_from_dict({"entropy_coef": 0.1, "ent_coef": 0.2})
    with pytest.warns(FutureWarning):
        trainer = PPOTrainer(
            env="CartPole-v1", vf_coef=0.25, run_dir=tmp_path / "a", eval_episodes=0
        )
    assert float(trainer.loss.critic_coef) == 0.25
    run = tmp_path / "cli"
    with pytest.warns(FutureWarning, match="--ent-coef is deprecated: use --entropy-coef"):
        code = main(
            [
                "train",
                "--env",
                "CartPole-v1",
                "--ent-coef",
                "0.03",
                "--total-steps",
                "256",
                "--eval-episodes",
                "0",
                "--no-progress",
                "--run-dir",
                str(run),
            ]
        )
    assert code == 0
    assert json.loads((run / "config.json").read_text())["entropy_coef"] == 0.03


def test_one_iteration_count_for_config_trainer_and_world_size(tmp_path):
    # 1000 steps, batch 8 x 32 = 256: ceil(1000 / 256) = 4 iterations in one process,
    # ceil(1000 / 512) = 2 per rank with two ranks
    cfg = TrainConfig(total_steps=1000)
    assert num_iterations(total_steps=1000, batch_size=cfg.batch_size) == 4
    assert num_iterations(total_steps=1000, batch_size=cfg.batch_size, world_size=2) == 2
    trainer = PPOTrainer(cfg, run_dir=tmp_path / "run", eval_episodes=0)
    assert trainer.num_iterations == 4


def test_the_documented_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(textwrap.dedent(blocks[1]), str(DOC), "exec"), namespace)  # env + networks
    exec(compile(textwrap.dedent(blocks[2]), str(DOC), "exec"), namespace)  # VectorEnv
    assert namespace["result"].summary["eval_return_mean"] > 12
