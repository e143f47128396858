"""Single-process behaviour and input checks of ppokit.distributed (no processes spawned)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _dist_helpers import build
from torch import nn

from ppokit.distributed import (
    RunningStatsMerger,
    World,
    global_mean_weight,
    global_moments,
    global_standardize,
    init_distributed,
    rank_seed,
    unwrap_ddp,
    world_from_env,
    wrap_ddp,
)
from ppokit.distributed.stats import _unmerge, merge_moments
from ppokit.objectives.functional import standardize
from ppokit.train.normalization import RunningMeanStd

TORCHRUN_ENV = {
    "RANK": "1",
    "WORLD_SIZE": "4",
    "LOCAL_RANK": "1",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
}


# ---------------------------------------------------------------------------- World
def test_world_defaults_to_one_process_and_collectives_are_identity() -> None:
    # the one test of World's defaults (tests/train/test_trainer.py had a second, weaker copy)
    w = World()
    identity = (w.rank, w.world_size, w.local_rank, w.is_main, w.is_distributed)
    assert identity == (0, 1, 0, True, False)
    assert w.device == torch.device("cpu")
    x = torch.tensor([1.0, -2.0])
    assert w.all_reduce_mean(x) is x and w.all_reduce_sum(x) is x
    assert torch.equal(w.all_reduce_mean(x), torch.tensor([1.0, -2.0]))  # values untouched
    assert w.any(True) and not w.any(False)
    assert w.broadcast_object("a") == "a"
    assert w.all_gather(x)[0] is x
    w.barrier()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rank": 2, "world_size": 2},
        {"world_size": 0},
        {"rank": -1, "world_size": 2},
        {"local_rank": -1},
    ],
)
def test_world_rejects_impossible_ranks(kwargs) -> None:
    with pytest.raises(ValueError, match="is impossible"):
        World(**kwargs)


def test_world_rejects_non_int_rank() -> None:
    with pytest.raises(TypeError, match=r"World.rank must be an int, got '0'"):
        World(rank="0")  # type: ignore[arg-type]


def test_multi_rank_world_without_process_group_says_how_to_create_it() -> None:
    with pytest.raises(RuntimeError, match="init_distributed"):
        World(rank=0, world_size=2).all_reduce_sum(torch.ones(1))


# ---------------------------------------------------------------------------- env / init
def test_world_from_env_reads_torchrun_variables() -> None:
    assert world_from_env({}) is None
    w = world_from_env(TORCHRUN_ENV)
    assert (w.rank, w.world_size, w.local_rank, w.is_main) == (1, 4, 1, False)


def test_world_from_env_rejects_a_partial_environment() -> None:
    env = {k: v for k, v in TORCHRUN_ENV.items() if k != "MASTER_PORT"}
    with pytest.raises(ValueError, match=r"Partial .*\['MASTER_PORT'\] are not"):
        world_from_env(env)


def test_world_from_env_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match=r"RANK='one' is not an integer"):
        world_from_env({**TORCHRUN_ENV, "RANK": "one"})
    with pytest.raises(ValueError, match=r"Impossible torch\.distributed environment RANK=4"):
        world_from_env({**TORCHRUN_ENV, "RANK": "4"})


def test_init_distributed_without_torchrun_is_one_process(monkeypatch) -> None:
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    w = init_distributed(device="cpu")
    assert w == World()


def test_init_distributed_checks_timeout_and_device(monkeypatch) -> None:
    monkeypatch.setenv("PPOKIT_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"PPOKIT_DIST_TIMEOUT='soon' is not a number"):
        init_distributed(device="cpu")
    with pytest.raises(ValueError, match="positive number of seconds, got -1"):
        init_distributed(device="cpu", timeout=-1)
    monkeypatch.delenv("PPOKIT_DIST_TIMEOUT")
    with pytest.raises(ValueError, match="must be 'cpu' or 'cuda', got meta"):
        init_distributed(device="meta")


# ---------------------------------------------------------------------------- seeds
def test_rank_seed_keeps_rank_zero_and_spreads_the_others() -> None:
    assert rank_seed(5, 0) == 5
    seeds = [rank_seed(s, r) for s in range(4) for r in range(1, 33)]
    assert len(set(seeds)) == len(seeds)  # no two (seed, rank) pairs share a stream
    assert all(0 <= s < 2**31 for s in seeds)
    assert rank_seed(3, 2) == rank_seed(3, 2)  # deterministic
    assert rank_seed(0, 1) != 1 and rank_seed(1, 1) != rank_seed(0, 1)


@pytest.mark.parametrize(
    ("seed", "rank", "match"),
    [
        (-1, 0, "seed must be an int >= 0"),
        (1, -2, "rank must be an int >= 0"),
        (1.5, 0, "seed must be an int"),
    ],
)
def test_rank_seed_rejects_bad_input(seed, rank, match) -> None:
    with pytest.raises(ValueError, match=match):
        rank_seed(seed, rank)


# ---------------------------------------------------------------------------- statistics
def test_global_standardize_in_one_process_is_the_loss_normalisation() -> None:
    x = torch.tensor([[3.0], [-1.0], [0.5], [8.0]])
    torch.testing.assert_close(global_standardize(x, World()), standardize(x))
    mask = torch.tensor([[True], [False], [True], [True]])
    torch.testing.assert_close(global_standardize(x, World(), mask), standardize(x, mask))


def test_global_moments_hand_worked() -> None:
    # values 2, 4, 9: mean 5; squared deviations 9 + 1 + 16 = 26; unbiased var 26 / 2 = 13
    mean, var, n = global_moments(torch.tensor([2.0, 4.0, 9.0]), World())
    assert (float(mean), float(var), int(n)) == (5.0, 13.0, 3)


def test_global_standardize_constant_and_single_values_stay_finite() -> None:
    # std 0 is clamped at eps: a constant advantage becomes 0, not NaN
    assert global_standardize(torch.full((4, 1), 2.0), World()).abs().max() == 0
    assert torch.isfinite(global_standardize(torch.tensor([[5.0]]), World())).all()


def test_global_moments_rejects_bad_masks() -> None:
    x = torch.zeros(4, 1)
    with pytest.raises(ValueError, match=r"must be a bool tensor, got torch\.float32"):
        global_moments(x, World(), torch.ones(4, 1))
    with pytest.raises(ValueError, match=r"mask of shape \(3, 1\) does not broadcast"):
        global_moments(x, World(), torch.ones(3, 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="expects a tensor, got list"):
        global_moments([1.0], World())  # type: ignore[arg-type]


def test_global_mean_weight_in_one_process_is_one() -> None:
    for mask in (torch.tensor([True, False, True]), torch.zeros(4, 1, dtype=torch.bool)):
        weight = global_mean_weight(mask, World())
        # a rank with no valid sample of none in all: 0 valid / max(0, 1) total
        want = 1.0 if mask.any() else 0.0
        assert weight.dtype == torch.get_default_dtype() and weight.dim() == 0
        assert float(weight) == want


def test_global_mean_weight_rejects_a_non_bool_mask() -> None:
    with pytest.raises(TypeError, match=r"bool mask .* got torch\.float32; .*torch\.ones"):
        global_mean_weight(torch.ones(3), World())
    with pytest.raises(TypeError, match="got list"):
        global_mean_weight([True], World())  # type: ignore[arg-type]


def test_unmerge_inverts_chan_merge() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 3)), rng.normal(2.0, 3.0, size=(5, 3))
    merged = merge_moments(a.mean(0), a.var(0), 7.0, b.mean(0), b.var(0), 5.0)
    mean, var, n = _unmerge(*merged, a.mean(0), a.var(0), 7.0)
    assert n == 5.0
    np.testing.assert_allclose(mean, b.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, b.var(0), rtol=1e-10)


def test_merger_in_one_process_leaves_stats_alone() -> None:
    rms = RunningMeanStd((2,))
    merger = RunningStatsMerger(rms, World())
    rms.update(np.array([[1.0, 2.0], [3.0, 6.0]]))
    before = (rms.mean.copy(), rms.var.copy(), rms.count)
    merger.merge()
    np.testing.assert_array_equal(rms.mean, before[0])
    assert rms.count == before[2]


def test_merger_rejects_objects_without_moments() -> None:
    with pytest.raises(TypeError, match="has no 'mean'"):
        RunningStatsMerger(object(), World())


# ---------------------------------------------------------------------------- DDP helpers
def test_wrap_ddp_in_one_process_changes_nothing() -> None:
    actor, critic = build("discrete")
    inner = critic.module
    wrap_ddp(actor, critic, world=World())
    assert critic.module is inner


def test_wrap_ddp_rejects_shared_parameters() -> None:
    from tensordict.nn import TensorDictModule

    from ppokit import ActorValueOperator, Categorical, ProbabilisticActor, ValueOperator

    trunk = TensorDictModule(nn.Linear(3, 8), ["observation"], ["hidden"])
    head = ProbabilisticActor(
        TensorDictModule(nn.Linear(8, 2), ["hidden"], ["logits"]),
        in_keys=["logits"],
        distribution_class=Categorical,
    )
    model = ActorValueOperator(trunk, head, ValueOperator(nn.Linear(8, 1), in_keys=["hidden"]))
    with pytest.raises(ValueError, match="share parameters"):
        wrap_ddp(model.get_policy_operator(), model.get_value_operator(), world=World())


def test_wrap_ddp_accepts_a_shared_cnn_trunk() -> None:
    # the CNN builder's SharedTrunk runs once per loss evaluation: DDP can wrap it once
    from types import SimpleNamespace

    from ppokit.train.build_cnn import build_cnn_actor_critic

    env = SimpleNamespace(obs_shape=(1, 36, 36), discrete=True, num_actions=2)
    actor, critic = build_cnn_actor_critic(env)
    assert wrap_ddp(actor, critic, world=World()) == (actor, critic)


def test_wrap_ddp_checks_its_arguments() -> None:
    actor, critic = build("discrete")
    with pytest.raises(TypeError, match=r"expects a ppokit\.distributed\.World, got int"):
        wrap_ddp(actor, critic, world=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="argument 1 is a str"):
        wrap_ddp(actor, "critic", world=World())  # type: ignore[arg-type]


def test_unwrap_ddp_swaps_wrappers_out_and_back() -> None:
    from torch.nn.parallel import DistributedDataParallel

    class FakeDDP(DistributedDataParallel):  # a DDP without a process group, for the swap only
        def __init__(self, module: nn.Module) -> None:
            nn.Module.__init__(self)
            self.module = module

    actor, critic = build("continuous")
    plain_keys = sorted(actor.state_dict())
    inner = actor.module[0].module
    actor.module[0].module = FakeDDP(inner)
    assert sorted(actor.state_dict()) != plain_keys  # DDP inserts a "module." level
    with unwrap_ddp(actor, critic):
        assert actor.module[0].module is inner
        assert sorted(actor.state_dict()) == plain_keys
    assert isinstance(actor.module[0].module, FakeDDP)
