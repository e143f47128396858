"""--precision bfloat16: the CNN trunk trains in bfloat16, everything else stays float32, and
what cannot honour it is refused up front."""

from __future__ import annotations

import pytest
import torch
from image_toys import EndingImageEnv

from ppokit.internals import hardware
from ppokit.modules.cnn import NatureCNN
from ppokit.train import precision
from ppokit.train.trainer import PPOTrainer

SMALL = dict(num_envs=2, num_steps=16, num_minibatches=2, num_epochs=2, total_steps=64)
needs_cuda = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


@pytest.fixture
def native(monkeypatch) -> None:
    """Assume bfloat16 units (the tests check ppokit's arithmetic, not this CPU's speed)."""
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: (True, "assumed"))


def _cnns(trainer: PPOTrainer) -> list[NatureCNN]:
    return [m for m in trainer.actor.modules() if isinstance(m, NatureCNN)]


@pytest.mark.parametrize("device", DEVICES)
def test_a_bfloat16_run_trains_the_cnn_in_bfloat16(tmp_path, native, device) -> None:
    trainer = PPOTrainer(
        env=EndingImageEnv, run_dir=tmp_path, eval_episodes=0, progress=False, device=device,
        precision="bfloat16", **SMALL,
    )  # fmt: skip
    (cnn,) = _cnns(trainer)  # one trunk, shared with the critic
    seen: list[tuple[torch.dtype, bool]] = []
    cnn.convs[0].register_forward_hook(
        lambda m, args, out: seen.append((out.dtype, torch.is_grad_enabled()))
    )
    trainer.train()
    # acting (no gradient) and the updates (gradient) both ran the convolutions in bfloat16
    assert {dtype for dtype, _ in seen} == {torch.bfloat16}
    assert {grad for _, grad in seen} == {True, False}
    assert all(p.dtype == torch.float32 for p in trainer.params)
    for state in trainer.optimizer.state.values():
        assert state["exp_avg"].dtype == torch.float32
    # the run directory records it, and the policy loads with it
    from ppokit.train.deploy.policy import load_policy

    actor, _, cfg = load_policy(tmp_path, env=EndingImageEnv)
    assert cfg.precision == "bfloat16"
    assert [m.compute_dtype for m in actor.modules() if isinstance(m, NatureCNN)] == [
        torch.bfloat16
    ]


def test_bfloat16_and_float32_runs_start_alike(tmp_path, native) -> None:
    # same seed, same weights: the first rollout's actions may differ only where bfloat16
    # rounding tips a sample, and the first update moves the weights by nearly the same step
    def first_update(name: str) -> list[torch.Tensor]:
        trainer = PPOTrainer(
            env=EndingImageEnv, run_dir=tmp_path / name, eval_episodes=0, progress=False,
            device="cpu", precision=name, **SMALL,
        )  # fmt: skip
        before = [p.detach().clone() for p in trainer.params]
        rollout = trainer.estimate_advantage(trainer.collect())
        trainer.update(rollout)
        return [p.detach() - b for p, b in zip(trainer.params, before, strict=True)]

    f32, bf16 = first_update("float32"), first_update("bfloat16")
    flat32, flat16 = torch.cat([d.flatten() for d in f32]), torch.cat([d.flatten() for d in bf16])
    assert float(torch.nn.functional.cosine_similarity(flat32, flat16, dim=0)) > 0.95
    assert not torch.equal(flat32, flat16)


def test_flat_observations_refuse_bfloat16(tmp_path, native) -> None:
    with pytest.raises(ValueError, match=r"applies to the Nature CNN of image observations"):
        PPOTrainer(env="CartPole-v1", run_dir=tmp_path, precision="bfloat16", progress=False)


def test_hardware_without_bfloat16_units_is_refused(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        precision, "native_bfloat16", lambda device: (False, "CPU without AVX512-BF16 or AMX")
    )
    from ppokit.train.cli.main import main

    code = main(
        ["train", "--env", "ALE/Breakout-v5", "--precision", "bfloat16", "--device", "cpu",
         "--run-dir", str(tmp_path / "r"), "--no-progress"]
    )  # fmt: skip
    assert code != 0
    err = capsys.readouterr().err
    assert "CPU without AVX512-BF16 or AMX has no native bfloat16 arithmetic" in err
    assert "--precision float32" in err


def test_the_hardware_probe(monkeypatch) -> None:
    monkeypatch.setattr(hardware, "_torch_series", lambda: (2, 13))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert hardware.native_bfloat16("cpu") == (False, "CPU without AVX512-BF16 or AMX")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert hardware.native_bfloat16("cpu") == (True, "CPU with AMX")
    # a torch whose private probes were never checked: not trusted
    monkeypatch.setattr(hardware, "_torch_series", lambda: (3, 0))
    native, found = hardware.native_bfloat16("cpu")
    assert not native and "were not checked" in found


def test_export_of_a_bfloat16_run_computes_in_float32(tmp_path, native) -> None:
    from ppokit.train.deploy.export import export_policy, load_exported
    from ppokit.train.deploy.policy import load_policy

    trainer = PPOTrainer(
        env="ALE/Breakout-v5", run_dir=tmp_path, eval_episodes=0, progress=False, device="cpu",
        precision="bfloat16", num_envs=2, num_steps=16, num_minibatches=1, num_epochs=1,
        total_steps=32,
    )  # fmt: skip
    trainer.train()
    out = export_policy(tmp_path, "exported-program", tmp_path / "policy.pt2")
    program = torch.export.load(str(out))
    assert "bfloat16" not in program.graph_module.code  # no autocast, no cast to bfloat16
    policy = load_exported(out)
    actor, _, _ = load_policy(tmp_path)
    (cnn,) = [m for m in actor.modules() if isinstance(m, NatureCNN)]
    frames = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    cnn.compute_dtype = None
    with torch.no_grad():
        f32_logits = actor.module[0](frames.float())  # the policy net: trunk + logits
    torch.testing.assert_close(policy(frames.float()), f32_logits.argmax(-1))


def test_the_compiled_update_computes_in_bfloat16_too(tmp_path, native) -> None:
    # one rollout, three updates from the same initial weights (same seed): the fused compiled
    # update with bfloat16 must land on the eager bfloat16 update, not on the float32 one
    def make(name: str, *, compile: bool) -> PPOTrainer:
        return PPOTrainer(
            env=EndingImageEnv, run_dir=tmp_path / f"{name}{compile}", eval_episodes=0,
            progress=False, device="cpu", precision=name, compile=compile, **SMALL,
        )  # fmt: skip

    eager16 = make("bfloat16", compile=False)
    rollout = eager16.estimate_advantage(eager16.collect())

    def step(trainer: PPOTrainer) -> torch.Tensor:
        before = [p.detach().clone() for p in trainer.params]
        trainer.update(rollout.clone())
        return torch.cat([(p.detach() - b).flatten() for p, b in zip(trainer.params, before)])

    fused16 = make("bfloat16", compile=True)
    assert fused16.update_kind == "fused"
    e16, f16 = step(eager16), step(fused16)
    e32 = step(make("float32", compile=False))
    # measured: fused-vs-eager bfloat16 0.3% apart, bfloat16-vs-float32 14% (Adam's first
    # steps divide by the gradients' own size, so rounding moves them visibly)
    assert float((f16 - e16).norm() / e16.norm()) < 0.02
    assert float((f16 - e32).norm() / e32.norm()) > 0.05


def test_a_recurrent_image_policy_runs_its_cnn_in_bfloat16(tmp_path, native) -> None:
    trainer = PPOTrainer(
        env=EndingImageEnv, run_dir=tmp_path, eval_episodes=0, progress=False, device="cpu",
        precision="bfloat16", recurrent="lstm", recurrent_size=16, num_envs=2, num_steps=8,
        num_minibatches=1, num_epochs=1, total_steps=16,
    )  # fmt: skip
    (cnn,) = _cnns(trainer)  # one CNN under both cores (--share-trunk)
    seen: list[torch.dtype] = []
    cnn.convs[0].register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    trainer.train()
    assert seen and set(seen) == {torch.bfloat16}
