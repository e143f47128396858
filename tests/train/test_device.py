"""--device: resolution, the up-front CUDA error, the per-step host-to-device copy, checkpoints
loading on either device. Tests marked ``cuda`` need a GPU (benchmarks/gpu_check.sh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppokit.train.device import HostToDevice, module_device, resolve_device
from ppokit.train.records.checkpoint import load_checkpoint
from ppokit.train.settings.config import TrainConfig, validate_config

needs_cuda = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


@pytest.mark.parametrize(
    ("name", "available", "want"),
    [
        ("auto", False, "cpu"),
        ("auto", True, "cuda"),
        ("cpu", True, "cpu"),
        ("cuda", True, "cuda"),
        ("cuda:1", True, "cuda:1"),
    ],
)
def test_resolution(name: str, available: bool, want: str) -> None:
    assert resolve_device(name, cuda_available=available) == torch.device(want)


@pytest.mark.parametrize("name", ["gpu", "cpu:0", "cuda:x", "", "mps"])
def test_unknown_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"--device must be one of auto, cpu, cuda"):
        resolve_device(name, cuda_available=True)


def test_cuda_without_cuda_says_how_to_fix() -> None:
    with pytest.raises(ValueError, match=r"CUDA is not available here.*--device cpu"):
        resolve_device("cuda", cuda_available=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_config_with_cuda_is_refused_before_anything_starts(tmp_path) -> None:
    with pytest.raises(ValueError, match="--device cuda was asked for"):
        validate_config(TrainConfig(device="cuda"))
    from ppokit.train.trainer import PPOTrainer

    with pytest.raises(ValueError, match="--device cuda was asked for"):
        PPOTrainer(env="CartPole-v1", run_dir=tmp_path / "run", device="cuda")
    assert not (tmp_path / "run").exists()  # nothing was written


def test_cli_refuses_cuda_without_cuda(tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from ppokit.train.cli.main import main

    code = main(
        ["train", "--env", "CartPole-v1", "--device", "cuda", "--run-dir", str(tmp_path / "r")]
    )
    assert code != 0
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_device_field_is_validated_as_a_choice() -> None:
    with pytest.raises(ValueError, match=r"--device must be one of \['auto', 'cpu', 'cuda'\]"):
        validate_config(TrainConfig(device="tpu"))  # type: ignore[arg-type]


def test_host_to_device_on_the_cpu_is_a_view() -> None:
    mover = HostToDevice((2, 4), np.uint8, torch.device("cpu"))
    arr = np.arange(8, dtype=np.uint8).reshape(2, 4)
    out = mover(arr)
    assert not mover.pinned and out.dtype == torch.uint8
    arr[0, 0] = 99  # no copy was made
    assert int(out[0, 0]) == 99


@pytest.mark.parametrize("device", DEVICES)
def test_a_run_trains_and_its_checkpoint_loads_on_the_cpu(tmp_path, device: str) -> None:
    from ppokit.train.deploy.policy import load_policy
    from ppokit.train.trainer import PPOTrainer

    trainer = PPOTrainer(
        env="CartPole-v1",
        run_dir=tmp_path,
        total_steps=256,
        eval_episodes=2,
        progress=False,
        device=device,
    )
    assert trainer.device.type == device
    assert module_device(trainer.actor).type == device
    rollout = trainer.collect()
    assert rollout.get("observation").device.type == device
    result = trainer.train()
    assert result.env_steps >= 256
    state = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")  # map_location="cpu"
    assert all(t.device.type == "cpu" for t in state["actor"].values())
    actor, _, cfg = load_policy(tmp_path)
    assert cfg.device == device and module_device(actor).type == "cpu"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cpu_checkpoint_resumes_on_cuda(tmp_path) -> None:
    from ppokit.train.trainer import PPOTrainer

    PPOTrainer(
        env="CartPole-v1",
        run_dir=tmp_path,
        total_steps=256,
        eval_episodes=0,
        progress=False,
        device="cpu",
    ).train()
    resumed = PPOTrainer(
        env="CartPole-v1",
        run_dir=tmp_path,
        total_steps=512,
        eval_episodes=0,
        progress=False,
        device="cuda",
        resume=True,
    )
    assert module_device(resumed.actor).type == "cuda"
    assert resumed.train().env_steps == 512


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pinned_copy_to_cuda() -> None:
    mover = HostToDevice((2, 4, 84, 84), np.uint8, torch.device("cuda"))
    arr = np.random.default_rng(0).integers(0, 256, (2, 4, 84, 84), dtype=np.uint8)
    out = mover(arr)
    assert mover.pinned and out.device.type == "cuda" and out.dtype == torch.uint8
    np.testing.assert_array_equal(out.cpu().numpy(), arr)


def test_the_device_branch_of_the_collector_collects_the_same_rollout() -> None:
    # the branch a GPU run takes (observations through HostToDevice, the policy on the
    # device, the rollout moved once), forced on the CPU: it must collect what the plain
    # CPU path collects from the same seeds
    from ppokit.envs.gym import GymVecEnv
    from ppokit.train.build import build_actor_critic
    from ppokit.train.collect.collector import RolloutCollector

    rollouts = []
    for forced in (False, True):
        torch.manual_seed(0)
        env = GymVecEnv("CartPole-v1", 2)
        actor, _ = build_actor_critic(env)
        collector = RolloutCollector(env, actor, num_steps=16, seed=3)
        if forced:
            collector._device = torch.device("cpu")
            collector._to_device = HostToDevice((2, 4), np.float32, torch.device("cpu"))
        rollouts.append(collector.collect().clone())
        env.close()
    for key in rollouts[0].keys(True, True):
        torch.testing.assert_close(rollouts[1].get(key), rollouts[0].get(key))
