"""How fast can one PPO minibatch update be? ppokit's trainer vs two hand-written floors.

Run: ``python benchmarks/bench_update_step.py [--rounds 9]``

Every candidate does what one ``bench_train.py`` HalfCheetah-v5 iteration does after the
rollout: 10 epochs of minibatch updates (loss forward + backward, global grad-norm clip, Adam
step) over the same 2048 steps, in minibatches of 64, with the 64x64 tanh networks:

- ``ppokit eager`` / ``ppokit compiled``: ``PPOTrainer.update`` (GAE, a shuffle per epoch,
  the updates, the logged means; the latter with ``compile=True``, where every minibatch
  update is one graph, :class:`ppokit.FusedPPOUpdate`);
- ``hand eager``: the same PPO math written by hand on ``nn.Linear`` layers, ``backward()``,
  ``clip_grad_norm_`` and fused Adam: what an eager trainer cannot go below;
- ``hand one-graph``: the same math, its gradient (``torch.func.grad``), the clip and Adam
  all in one ``torch.compile`` graph per minibatch, so that no autograd engine, optimizer
  Python or per-op dispatch runs between kernels.

The last is the floor for a compiled update: the same graph without ppokit's loss
bookkeeping and trainer loop (see README.md, section 2). Reported: median time per
minibatch over interleaved rounds, and ratios to ``hand eager``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt_time, interleaved, machine_line
from bench_train import COMMON, TASKS, ppokit_config

MB = 64
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _mlp(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, n_out)
    )


def _linear_chain(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """Three ``addmm`` layers with tanh between them; ``weights`` = [w0, b0, w1, b1, w2, b2]."""
    for i in range(0, 6, 2):
        x = torch.addmm(weights[i + 1], x, weights[i].t())
        if i < 4:
            x = torch.tanh(x)
    return x


def ppo_loss(
    actor: list[torch.Tensor],
    log_std: torch.Tensor,
    critic: list[torch.Tensor],
    batch: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Clipped surrogate + 0.5 * squared value error, advantages standardised per minibatch."""
    loc = _linear_chain(batch["obs"], actor)
    value = _linear_chain(batch["obs"], critic).squeeze(-1)
    log_prob = (
        -((batch["act"] - loc) ** 2) / (2 * torch.exp(2 * log_std)) - log_std - LOG_SQRT_2PI
    ).sum(-1)
    ratio = torch.exp(log_prob - batch["logp"])
    adv = batch["adv"]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    eps = COMMON["clip"]
    surrogate = -torch.min(adv * ratio, adv * ratio.clamp(1 - eps, 1 + eps)).mean()
    return surrogate + COMMON["vf_coef"] * ((value - batch["ret"]) ** 2).mean()


class HandEager:
    """The hand-written loss on modules, ``backward``, ``clip_grad_norm_``, fused Adam."""

    def __init__(self, obs_dim: int, act_dim: int, lr: float) -> None:
        self.actor, self.critic = _mlp(obs_dim, act_dim), _mlp(obs_dim, 1)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.params = [*self.actor.parameters(), self.log_std, *self.critic.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=lr, eps=1e-5, fused=True)

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        for p in self.params:
            p.grad = None
        ppo_loss(self.params[:6], self.log_std, self.params[7:], batch).backward()
        nn.utils.clip_grad_norm_(self.params, COMMON["max_grad_norm"], foreach=True)
        self.optimizer.step()


class HandOneGraph(HandEager):
    """The same update as one compiled graph: grad, clip and Adam (torch's update rule)."""

    def __init__(self, obs_dim: int, act_dim: int, lr: float) -> None:
        super().__init__(obs_dim, act_dim, lr)
        self.lr = lr
        self.state = [[torch.zeros_like(p) for p in self.params] for _ in range(2)]
        self.count = torch.zeros(())
        self._graph = torch.compile(self._update, fullgraph=True)

    def _update(
        self,
        params: list[torch.Tensor],
        exp_avg: list[torch.Tensor],
        exp_avg_sq: list[torch.Tensor],
        count: torch.Tensor,
        batch: dict[str, torch.Tensor],
    ):
        grads = torch.func.grad(lambda ps: ppo_loss(ps[:6], ps[6], ps[7:], batch))(params)
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = torch.clamp(COMMON["max_grad_norm"] / (norm + 1e-6), max=1.0)
        count = count + 1
        beta1, beta2 = 0.9, 0.999
        step = self.lr / (1 - beta1**count)
        root_bc2 = (1 - beta2**count).sqrt()
        out = ([], [], [])
        for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
            g = g * scale
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            out[0].append(p - step * m / (v.sqrt() / root_bc2 + 1e-5))
            out[1].append(m)
            out[2].append(v)
        return out, count

    @torch.no_grad()
    def step(self, batch: dict[str, torch.Tensor]) -> None:
        params = [p.detach() for p in self.params]
        (new_p, new_m, new_v), count = self._graph(params, *self.state, self.count, batch)
        torch._foreach_copy_(params, new_p)
        torch._foreach_copy_(self.state[0], new_m)
        torch._foreach_copy_(self.state[1], new_v)
        self.count.copy_(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from ppokit.train.trainer import PPOTrainer

    task = TASKS["halfcheetah"]
    trainers = {}
    tmp = tempfile.TemporaryDirectory()
    for name, compile_ in (("ppokit eager", False), ("ppokit compiled", True)):
        cfg = ppokit_config(task, 100, 1, compile=compile_)
        trainers[name] = PPOTrainer(cfg, run_dir=Path(tmp.name) / name.replace(" ", "_"))
    rollout = trainers["ppokit eager"].collect()
    trainers["ppokit eager"].estimate_advantage(rollout)
    flat = rollout.reshape(-1)
    batch = {
        "obs": flat["observation"],
        "act": flat["action"],
        "logp": flat["action_log_prob"],
        "adv": flat["advantage"].squeeze(-1),
        "ret": flat["value_target"].squeeze(-1),
    }
    minibatches = [
        {k: v[i : i + MB] for k, v in batch.items()} for i in range(0, flat.shape[0], MB)
    ]
    obs_dim, act_dim = batch["obs"].shape[-1], batch["act"].shape[-1]
    hand = {
        "hand eager": HandEager(obs_dim, act_dim, task.lr),
        "hand one-graph": HandOneGraph(obs_dim, act_dim, task.lr),
    }

    def epochs_of(stepper):
        def run() -> None:
            for _ in range(task.num_epochs):
                for mb in minibatches:
                    stepper.step(mb)

        return run

    candidates = {name: (lambda t=t: t.update(rollout.clone())) for name, t in trainers.items()}
    candidates.update({name: epochs_of(h) for name, h in hand.items()})
    for run in candidates.values():  # eager first call, then compile (not timed)
        run()
        run()
    times = interleaved(candidates, rounds=args.rounds, calls=1, warmup=1)
    per_mb = {name: t / (task.num_epochs * len(minibatches)) for name, t in times.items()}
    base = per_mb["hand eager"]
    print(machine_line())
    print(
        f"HalfCheetah-v5 shapes, minibatch {MB}, {task.num_epochs} epochs x "
        f"{len(minibatches)} minibatches, median of {args.rounds} interleaved rounds"
    )
    print(f"{'candidate':<18}{'per minibatch':>15}{'/ hand eager':>14}")
    for name, t in per_mb.items():
        print(f"{name:<18}{fmt_time(t):>15}{t / base:>14.2f}")
    for t in trainers.values():
        t.env.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
