"""ClipPPOLoss forward + backward: ppokit vs the hand-written floor vs TorchRL.

Run: ``python benchmarks/bench_loss.py [--rounds 61] [--round-seconds 0.03] [--compile]
[--setups mb64 b2048 trunk]``

Times are the CPU time of the (single) working thread by default (``--clock wall`` for
wall-clock), so that other jobs on a shared machine do not inflate one candidate's rounds.

Every candidate runs on the very same ``nn.Module`` objects, distribution class and data, on
one thread; one call is ``zero grads -> loss -> sum of loss_* -> backward``. Candidates:

* ``floor``: the same math written by hand on the raw ``nn.Module``s (no TensorDict, no
  checks, no diagnostics): the fastest a PPO loss on these networks can be in eager PyTorch.
* ``floor+diag``: the floor plus the detached diagnostics every PPO loss here also returns
  (entropy, clip fraction, approximate KL, ESS, explained variance, ratio max/mean).
* ``ppokit``: ``ppokit.ClipPPOLoss`` with its defaults (functional, input checks on).
* ``torchrl``: ``torchrl.objectives.ClipPPOLoss`` 0.14.1 (skipped if not installed).
* ``ppokit compiled`` (``--compile``): ``ppokit.compile_loss(loss)``.

Setups (the issue's):

* ``mb64``: minibatch 64, obs 17, act 6, separate 64x64 tanh actor and critic, diagonal
  Gaussian (loc and softplus scale from the actor), the MuJoCo default.
* ``b2048``: the same with a batch of 2048.
* ``trunk``: TorchRL's own PPO benchmark: shared 3x128 tanh trunk (8 -> 64 features), 2x128
  actor and critic heads, TanhNormal (``safe_tanh=False``, Monte-Carlo entropy), batch
  ``[128, 10]``. The critic is ``Seq(trunk, head)``, so the trunk runs twice per call in
  every candidate, floor included.

Numbers are checked before timing: ppokit's losses equal the floor's (and TorchRL's).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from tensordict.nn import (
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictModuleBase,
    TensorDictSequential,
)
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, machine_line, paired_ratio, print_table
from ppokit import MLP, ClipPPOLoss, IndependentNormal, NormalParamExtractor, TanhNormal

CLIP_EPS, ENT_COEF, CRIT_COEF = 0.2, 0.01, 1.0


@dataclass
class Setup:
    """Networks, TensorDict modules, data and the hand-written floor of one benchmark setup."""

    name: str
    actor: ProbabilisticTensorDictSequential
    critic: TensorDictModuleBase
    data: TensorDict
    floor: Callable[[bool], dict[str, torch.Tensor]]
    params: list[nn.Parameter]


def _floor_terms(dist, log_prob, old_log_prob, adv, value, value_target, entropy, diag):
    # The textbook clipped PPO loss (Schulman et al. 2017) with the same options as the losses
    # under test: mean reduction, smooth-L1 critic, entropy bonus.
    log_w = (log_prob - old_log_prob).unsqueeze(-1)
    gain1 = log_w.exp() * adv
    gain2 = log_w.clamp(math.log1p(-CLIP_EPS), math.log1p(CLIP_EPS)).exp() * adv
    out = {
        "loss_objective": -torch.minimum(gain1, gain2).mean(),
        "loss_entropy": -ENT_COEF * entropy.mean(),
        "loss_critic": CRIT_COEF * F.smooth_l1_loss(value, value_target),
    }
    if diag:
        with torch.no_grad():
            lw = log_w.detach()
            out["entropy"] = entropy.detach().mean()
            out["clip_fraction"] = (
                ((lw < math.log1p(-CLIP_EPS)) | (lw > math.log1p(CLIP_EPS))).float().mean()
            )
            out["kl_approx"] = (-lw).mean()
            flat = lw.reshape(-1)
            out["ESS"] = (2 * flat.logsumexp(0) - (2 * flat).logsumexp(0)).exp() / flat.numel()
            ratio = lw.exp()
            out["max_ratio"], out["mean_ratio"] = ratio.max(), ratio.mean()
            v = value.detach()
            out["explained_variance"] = 1 - (value_target - v).var(unbiased=False) / (
                value_target.var(unbiased=False) + torch.finfo(v.dtype).eps
            )
    return out


def separate_setup(name: str, batch: int, *, obs_dim: int = 17, act_dim: int = 6) -> Setup:
    actor_net = nn.Sequential(MLP(obs_dim, 2 * act_dim, num_cells=(64, 64)), NormalParamExtractor())
    critic_net = MLP(obs_dim, 1, num_cells=(64, 64), output_gain=1.0)
    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        ProbabilisticTensorDictModule(
            in_keys=["loc", "scale"],
            out_keys=["action"],
            distribution_class=IndependentNormal,
            return_log_prob=True,
        ),
    )
    critic = TensorDictModule(critic_net, in_keys=["observation"], out_keys=["state_value"])
    data = _acted_data(actor, torch.randn(batch, obs_dim), (batch,))

    def floor(diag: bool) -> dict[str, torch.Tensor]:
        obs = data["observation"]
        loc, scale = actor_net(obs)
        dist = IndependentNormal(loc, scale)
        log_prob = dist.log_prob(data["action"])
        value = critic_net(obs)
        return _floor_terms(
            dist,
            log_prob,
            data["action_log_prob"],
            data["advantage"],
            value,
            data["value_target"],
            dist.entropy(),
            diag,
        )

    params = [*actor_net.parameters(), *critic_net.parameters()]
    return Setup(name, actor, critic, data, floor, params)


def trunk_setup(
    name: str = "trunk",
    batch: tuple[int, int] = (128, 10),
    *,
    obs_dim: int = 8,
    act_dim: int = 4,
    hidden: int = 64,
    cells: int = 128,
) -> Setup:
    trunk_net = MLP(obs_dim, hidden, num_cells=(cells,) * 3, init="default")
    actor_head = MLP(hidden, 2 * act_dim, num_cells=(cells,) * 2, init="default")
    value_head = MLP(hidden, 1, num_cells=(cells,) * 2, init="default")
    extractor = NormalParamExtractor()
    trunk = TensorDictModule(trunk_net, in_keys=["observation"], out_keys=["hidden"])
    actor = ProbabilisticTensorDictSequential(
        trunk,
        TensorDictModule(actor_head, in_keys=["hidden"], out_keys=["param"]),
        TensorDictModule(extractor, in_keys=["param"], out_keys=["loc", "scale"]),
        ProbabilisticTensorDictModule(
            in_keys=["loc", "scale"],
            out_keys=["action"],
            distribution_class=TanhNormal,
            distribution_kwargs={"safe_tanh": False},
            return_log_prob=True,
        ),
    )
    critic = TensorDictSequential(
        trunk, TensorDictModule(value_head, in_keys=["hidden"], out_keys=["state_value"])
    )
    data = _acted_data(actor, torch.randn(*batch, obs_dim), batch)

    def floor(diag: bool) -> dict[str, torch.Tensor]:
        obs = data["observation"]
        loc, scale = extractor(actor_head(trunk_net(obs)))
        dist = TanhNormal(loc, scale, safe_tanh=False)
        log_prob = dist.log_prob(data["action"])
        _, mc_log_prob = dist.rsample_and_log_prob(torch.Size([1]))
        value = value_head(trunk_net(obs))  # the critic module runs the trunk again
        return _floor_terms(
            dist,
            log_prob,
            data["action_log_prob"],
            data["advantage"],
            value,
            data["value_target"],
            -mc_log_prob.mean(0),
            diag,
        )

    params = [*trunk_net.parameters(), *actor_head.parameters(), *value_head.parameters()]
    return Setup(name, actor, critic, data, floor, params)


def _acted_data(actor, obs: torch.Tensor, batch: tuple[int, ...]) -> TensorDict:
    g = torch.Generator().manual_seed(0)
    td = TensorDict({"observation": obs}, batch_size=batch)
    with torch.no_grad():
        actor(td)
        for p in actor.parameters():  # move the policy so that some ratios get clipped
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    td["advantage"] = torch.randn(*batch, 1, generator=g)
    td["value_target"] = torch.randn(*batch, 1, generator=g)
    return td.select("observation", "action", "action_log_prob", "advantage", "value_target")


def _step(params: list[nn.Parameter], losses: Callable[[], dict]) -> Callable[[], None]:
    def run() -> None:
        for p in params:
            p.grad = None
        out = losses()
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()

    return run


def build_candidates(setup: Setup, *, with_compile: bool) -> dict[str, Callable[[], None]]:
    data = setup.data
    loss = ClipPPOLoss(
        setup.actor,
        setup.critic,
        clip_epsilon=CLIP_EPS,
        entropy_coef=ENT_COEF,
        critic_coef=CRIT_COEF,
    )
    cands = {
        "floor": _step(setup.params, lambda: setup.floor(False)),
        "floor+diag": _step(setup.params, lambda: setup.floor(True)),
        "ppokit": _step(setup.params, lambda: loss(data)),
    }
    _check_same_numbers(setup, loss)
    try:
        from torchrl.objectives import ClipPPOLoss as TorchRLClipPPOLoss
    except ImportError:
        print("torchrl not installed: the torchrl column is skipped")
    else:
        theirs = TorchRLClipPPOLoss(
            setup.actor,
            setup.critic,
            clip_epsilon=CLIP_EPS,
            entropy_coeff=ENT_COEF,
            critic_coeff=CRIT_COEF,
        )
        _check_same_numbers(setup, theirs)
        cands["torchrl"] = _step(setup.params, lambda: theirs(data))
    if with_compile:
        from ppokit.fast.compile import compile_loss

        compiled = compile_loss(
            ClipPPOLoss(
                setup.actor,
                setup.critic,
                clip_epsilon=CLIP_EPS,
                entropy_coef=ENT_COEF,
                critic_coef=CRIT_COEF,
            )
        )
        _check_same_numbers(setup, compiled)
        cands["ppokit compiled"] = _step(setup.params, lambda: compiled(data))
    return cands


def _check_same_numbers(setup: Setup, loss: Callable) -> None:
    # The MC entropy (trunk setup) draws a sample: same seed for both sides.
    torch.manual_seed(0)
    ref = setup.floor(True)
    torch.manual_seed(0)
    got = loss(setup.data)
    for key in ("loss_objective", "loss_critic", "loss_entropy", "clip_fraction", "kl_approx"):
        torch.testing.assert_close(
            got[key].detach().reshape(()),
            ref[key].detach(),
            rtol=1e-5,
            atol=1e-6,
            msg=f"{type(loss).__name__}: {key}",
        )


SETUPS: dict[str, Callable[[], Setup]] = {
    "mb64": lambda: separate_setup("mb64: batch 64, obs 17/act 6, 64x64 tanh", 64),
    "b2048": lambda: separate_setup("b2048: batch 2048, obs 17/act 6, 64x64 tanh", 2048),
    "trunk": lambda: trunk_setup("trunk: [128, 10], shared 3x128 trunk, TanhNormal"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=61)
    parser.add_argument(
        "--round-seconds",
        type=float,
        default=0.03,
        help="time of one candidate's timing in a round",
    )
    parser.add_argument("--compile", action="store_true", help="add ppokit.compile_loss")
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: CPU time of this thread (robust on a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(machine_line())
    print(f"{args.clock} time per forward+backward, {args.rounds} interleaved rounds")
    rows, mins, paired = [], [], []
    for key in args.setups:
        setup = SETUPS[key]()
        cands = build_candidates(setup, with_compile=args.compile)
        samples = interleaved(
            cands, rounds=args.rounds, clock=args.clock, stat="samples", target_s=args.round_seconds
        )
        rows.append((setup.name, {n: statistics.median(v) for n, v in samples.items()}))
        mins.append((setup.name, {n: min(v) for n, v in samples.items()}))
        paired.append(
            (setup.name, {n: paired_ratio(samples, n, "floor") for n in samples if n != "floor"})
        )
    columns = ["floor", "floor+diag", "ppokit", "torchrl", "ppokit compiled"]
    columns = [c for c in columns if any(c in t for _, t in rows)]
    print(
        "\nPAIRED ratios: median (and quartiles) over rounds of column time / floor time in "
        "the same round (the most robust figure on a noisy machine)"
    )
    others = [c for c in columns if c != "floor"]
    print("| setup | " + " | ".join(f"{c} / floor" for c in others) + " |")
    print("|---|" + "---|" * len(others))
    for label, ratios in paired:
        cells = [
            f"**{ratios[c][1]:.2f}** ({ratios[c][0]:.2f}-{ratios[c][2]:.2f})"
            if c in ratios
            else "n/a"
            for c in others
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print_table(
        "MEDIAN time over rounds (ratios: column median / floor median)",
        rows,
        baseline="floor",
        columns=columns,
    )
    print_table("MINIMUM time over rounds", mins, baseline="floor", columns=columns)


if __name__ == "__main__":
    main()
