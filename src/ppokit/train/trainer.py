"""The PPO training loop: collect, estimate advantages, epochs of shuffled minibatches.

:class:`PPOTrainer` owns everything a run needs (vector env, actor and critic, ClipPPOLoss,
Adam, normalisers, logger, checkpoints) and exposes small steps (:meth:`PPOTrainer.collect`,
:meth:`PPOTrainer.update`, :meth:`PPOTrainer.state_dict`) so a distributed launcher can wrap
the networks and reduce statistics through the :class:`World` object without a rewrite.
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from ppokit.distributed.core import (
    RunningStatsMerger,
    World,
    global_standardize,
    rank_seed,
    unwrap_ddp,
    wrap_ddp,
)
from ppokit.envs.gym import GymVecEnv
from ppokit.fast.compile import compile_loss
from ppokit.fast.update import FusedPPOUpdate
from ppokit.train.checkpoint import load_checkpoint, save_checkpoint
from ppokit.train.collector import RolloutCollector
from ppokit.train.config import TrainConfig, config_from_dict, config_to_dict, validate_config
from ppokit.train.metrics import MetricsLogger
from ppokit.train.normalization import ObservationNormalizer, RewardScaler
from ppokit.train.update import eager_update

__all__ = ["PPOTrainer", "TrainResult", "World", "build_actor_critic", "seed_everything"]

LOG_PROB_KEY = "action_log_prob"
_LOSS_DIAGNOSTICS = ("entropy", "clip_fraction", "kl_approx", "ESS", "explained_variance")


@dataclass(frozen=True)
class TrainResult:
    """What :meth:`PPOTrainer.train` returns."""

    env_steps: int
    iterations: int
    wall_seconds: float
    interrupted: bool
    summary: dict[str, Any]


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's legacy global RNG and torch.

    Example:
        >>> seed_everything(0); a = torch.rand(1); seed_everything(0)
        >>> bool(torch.rand(1) == a)
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _GaussianHead(nn.Module):
    """``loc = net(x)``, ``scale = exp(log_std)``: a state-independent std, as in the PPO paper's
    MuJoCo experiments (Schulman et al. 2017) and CleanRL/SB3's continuous policies."""

    def __init__(self, net: nn.Module, action_dim: int, *, init_log_std: float) -> None:
        super().__init__()
        self.net = net
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.net(obs)
        return loc, self.log_std.exp().expand_as(loc)


def build_actor_critic(
    env: GymVecEnv, *, hidden_sizes: tuple[int, ...] = (64, 64), activation: str = "tanh",
    init_log_std: float = 0.0, ortho_init: bool = True,
) -> tuple[Any, Any]:
    """Separate actor and critic MLPs for ``env`` (ppokit modules, TorchRL keys).

    Discrete actions: ``Categorical(logits)``; Box actions: ``IndependentNormal(loc, scale)``
    with a learned state-independent log-std. Orthogonal init, policy head gain 0.01, value
    head gain 1 ("The 37 Implementation Details of PPO", Huang et al. 2022); with
    ``ortho_init=False`` torch's default ``nn.Linear`` init instead (rl-zoo's tuned MuJoCo
    settings use it).

    Example:
        >>> env = GymVecEnv("CartPole-v1", 1)
        >>> actor, critic = build_actor_critic(env)
        >>> td = actor(TensorDict({"observation": torch.zeros(1, 4)}, [1]))
        >>> td["action"].shape, critic(td)["state_value"].shape
        (torch.Size([1]), torch.Size([1, 1]))
        >>> env.close()
    """
    from ppokit.modules.actors import ProbabilisticActor, ValueOperator
    from ppokit.modules.distributions import Categorical, IndependentNormal
    from ppokit.modules.mlp import MLP

    act_cls = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    obs_dim = int(np.prod(env.obs_shape))
    cells = tuple(hidden_sizes)
    # output gains only exist for the orthogonal init (MLP rejects them otherwise)
    policy_init: dict[str, Any] = {"output_gain": 0.01} if ortho_init else {"init": "default"}
    value_init: dict[str, Any] = {"output_gain": 1.0} if ortho_init else {"init": "default"}
    if env.discrete:
        net = MLP(obs_dim, env.num_actions, num_cells=cells, activation_class=act_cls,
                  **policy_init)
        params = TensorDictModule(net, in_keys=["observation"], out_keys=["logits"])
        actor = ProbabilisticActor(params, in_keys=["logits"], distribution_class=Categorical,
                                   return_log_prob=True)
    else:
        net = MLP(obs_dim, env.num_actions, num_cells=cells, activation_class=act_cls,
                  **policy_init)
        head = _GaussianHead(net, env.num_actions, init_log_std=init_log_std)
        params = TensorDictModule(head, in_keys=["observation"], out_keys=["loc", "scale"])
        actor = ProbabilisticActor(params, in_keys=["loc", "scale"],
                                   distribution_class=IndependentNormal, return_log_prob=True)
    value_net = MLP(obs_dim, 1, num_cells=cells, activation_class=act_cls, **value_init)
    critic = ValueOperator(value_net, in_keys=["observation"])
    return actor, critic


class PPOTrainer:
    """PPO on a Gymnasium task, configured by a :class:`~ppokit.train.config.TrainConfig`.

    Args:
        cfg: the run's configuration (validated here).
        run_dir: where logs, checkpoints and the summary go.
        world: process identity for distributed training (single process by default).
        resume: continue from ``run_dir/checkpoints/latest.pt``.

    Per iteration: collect ``num_envs x num_steps`` transitions with the current policy, run
    GAE once (or before every epoch with ``recompute_advantage``), then ``num_epochs`` passes
    of ``num_minibatches`` shuffled minibatches through ``ClipPPOLoss`` (advantages normalised
    per minibatch), Adam with linear LR annealing and global grad-norm clipping, and an optional
    target-KL stop checked before each minibatch's step.

    Example:
        >>> import tempfile
        >>> from ppokit.train.config import preset_config
        >>> cfg = preset_config("CartPole-v1", total_steps=512, eval_episodes=0, progress=False)
        >>> trainer = PPOTrainer(cfg, run_dir=tempfile.mkdtemp())
        >>> result = trainer.train()
        >>> result.env_steps, result.interrupted
        (512, False)
    """

    def __init__(self, cfg: TrainConfig, *, run_dir: str | Path, world: World | None = None,
                 resume: bool = False) -> None:
        validate_config(cfg)
        self.cfg = cfg
        self.world = world or World()
        check_world_support(cfg, self.world)
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        torch.set_num_threads(cfg.torch_threads)
        seed = rank_seed(cfg.seed, self.world.rank)
        seed_everything(seed)

        # async workers must not see the terminal's Ctrl-C: the parent saves and closes them
        with _sigint_ignored():
            self.env = GymVecEnv(cfg.env, cfg.num_envs, mode=cfg.vector_mode)
        self.actor, self.critic = build_actor_critic(
            self.env, hidden_sizes=cfg.hidden_sizes, activation=cfg.activation,
            init_log_std=cfg.init_log_std, ortho_init=cfg.ortho_init,
        )
        # DDP on the plain networks inside the TensorDict modules (ppokit.wrap_ddp):
        # the loss keeps the actor's get_dist, and backward() averages gradients over ranks
        wrap_ddp(self.actor, self.critic, world=self.world)
        self.loss = self._make_loss()
        self.loss_fn: nn.Module = self.loss
        self.params = _unique_params(self.actor, self.critic)
        self.optimizer = _adam(self.params, lr=cfg.lr, eps=cfg.adam_eps)
        #: with compile=True, each minibatch update (loss, gradient, clip, Adam) is one
        #: compiled graph sharing the modules and the optimizer's state (ppokit.fast.update); a
        #: setup it does not cover falls back to the compiled loss with an eager update
        self.fused_update: FusedPPOUpdate | None = None
        if cfg.compile:
            try:
                self.fused_update = FusedPPOUpdate(self.loss, self.optimizer,
                                                   max_grad_norm=cfg.max_grad_norm)
            except (TypeError, ValueError):
                self.loss_fn = compile_loss(self.loss)
        self.obs_norm = ObservationNormalizer(self.env.obs_shape, clip=cfg.obs_clip,
                                              enabled=cfg.obs_norm)
        self.reward_scaler = RewardScaler(cfg.num_envs, gamma=cfg.gamma, clip=cfg.reward_clip,
                                          enabled=cfg.reward_scale)
        # each rank folds its own envs into these; merged over ranks after every rollout
        self._stat_mergers = [RunningStatsMerger(self.obs_norm.rms, self.world),
                              RunningStatsMerger(self.reward_scaler.rms, self.world)]
        self.collector = RolloutCollector(
            self.env, self.actor, num_steps=cfg.num_steps, obs_normalizer=self.obs_norm,
            reward_scaler=self.reward_scaler, log_prob_key=LOG_PROB_KEY, seed=seed,
            compile_policy=cfg.compile,
        )
        self.shuffle_gen = torch.Generator().manual_seed(seed)
        self.iteration = 0
        self.env_steps = 0
        self.wall_offset = 0.0
        self.recent_returns: deque[float] = deque(maxlen=20)
        self._stop_requested = False
        self.stop_signal: int | None = None
        if resume:
            self.load_state_dict(load_checkpoint(self.ckpt_dir / "latest.pt"))
        # total_steps counts the steps of all ranks, so N ranks run 1/N of the iterations;
        # counted from the steps still to go, so a run may resume with another number of ranks
        per_iteration = cfg.batch_size * self.world.world_size
        self.num_iterations = max(1, self.iteration + math.ceil(
            max(0, cfg.total_steps - self.env_steps) / per_iteration))

    # ------------------------------------------------------------------ construction
    def _make_loss(self) -> nn.Module:
        from ppokit.objectives.ppo import ClipPPOLoss

        cfg = self.cfg
        # functional=False: the modules are called as they are, which keeps the hot path free
        # of parameter swapping and lets a launcher wrap them in DistributedDataParallel.
        loss = ClipPPOLoss(
            self.actor, self.critic, clip_epsilon=cfg.clip_epsilon,
            entropy_bonus=True, entropy_coef=cfg.ent_coef,
            critic_coef=cfg.vf_coef, loss_critic_type=cfg.loss_critic_type,
            normalize_advantage=cfg.normalize_advantage and not self.world.is_distributed,
            clip_value=cfg.clip_value,
            functional=False,
        )
        loss.make_value_estimator("gae", gamma=cfg.gamma, lmbda=cfg.gae_lambda)
        return loss

    # ------------------------------------------------------------------ one iteration
    def collect(self) -> TensorDict:
        """Collect one rollout ``[num_envs, num_steps]`` with the current policy."""
        self.actor.eval()
        rollout = self.collector.collect()
        self.env_steps += self.cfg.batch_size * self.world.world_size
        if self.world.is_distributed and (self.cfg.obs_norm or self.cfg.reward_scale):
            for merger in self._stat_mergers:  # every rank: the statistics of all ranks' data
                merger.merge()
            self.obs_norm.refresh()
        for ret in self.collector.pop_episode_stats().returns:
            self.recent_returns.append(ret)
        return rollout

    @torch.no_grad()
    def estimate_advantage(self, rollout: TensorDict) -> TensorDict:
        """Write ``advantage``, ``value_target`` and ``state_value`` into ``rollout``."""
        self.loss.value_estimator(rollout)
        if rollout.get("state_value", None) is None:
            self.critic(rollout)
        return rollout

    def update(self, rollout: TensorDict) -> dict[str, float]:
        """Epochs x minibatches of PPO on ``rollout``; returns mean diagnostics."""
        cfg = self.cfg
        self.actor.train()
        keys = ["observation", "action", LOG_PROB_KEY, "advantage", "value_target",
                "state_value"]
        self.estimate_advantage(rollout)
        flat = rollout.select(*keys).reshape(-1)
        mb = cfg.minibatch_size
        records: list[torch.Tensor] = []
        stopped_early = False
        epochs_done = 0
        for epoch in range(cfg.num_epochs):
            if cfg.recompute_advantage and epoch > 0:
                self.estimate_advantage(rollout)
                flat = rollout.select(*keys).reshape(-1)
            perm = torch.randperm(flat.shape[0], generator=self.shuffle_gen)
            # one gather per epoch, then views: ~5x cheaper than indexing every minibatch
            for minibatch in flat[perm].split(mb):
                if self.world.is_distributed and cfg.normalize_advantage:
                    # mean/std of the global minibatch (all ranks'), as one process would see
                    minibatch = minibatch.set("advantage", global_standardize(
                        minibatch.get("advantage"), self.world))
                if self.fused_update is not None:  # one process (compile is refused in DDP)
                    out, grad_norm, applied = self.fused_update(minibatch,
                                                                target_kl=cfg.target_kl)
                else:  # the KL of the global minibatch: averaged over ranks
                    out, grad_norm, applied = eager_update(
                        self.loss_fn, self.params, self.optimizer, minibatch,
                        max_grad_norm=cfg.max_grad_norm, target_kl=cfg.target_kl,
                        kl_mean=self.world.all_reduce_mean)
                if not applied:  # the KL exceeded target_kl: nothing was changed
                    stopped_early = True
                    break
                objective, critic = out["loss_objective"], out["loss_critic"]
                entropy = out["loss_entropy"]
                # kept as tensors and stacked once per iteration: no per-minibatch stack/sync
                records.append((objective.detach(), critic.detach(), entropy.detach(),
                                *(out.get(k, None) for k in _LOSS_DIAGNOSTICS), grad_norm))
            if stopped_early:
                break
            epochs_done += 1
        names = ["loss_objective", "loss_critic", "loss_entropy", *_LOSS_DIAGNOSTICS,
                 "grad_norm"]
        if records:
            nan = torch.full((), math.nan)
            columns = [torch.stack([nan if v is None else v.detach().float() for v in column])
                       for column in zip(*records)]
            means = self.world.all_reduce_mean(torch.stack(columns).mean(1)).tolist()
        else:
            means = [math.nan] * len(names)
        metrics = dict(zip(names, means))
        metrics["epochs_completed"] = float(epochs_done)
        metrics["minibatch_updates"] = float(len(records))
        metrics["value_mean"] = float(rollout.get("state_value").mean())
        metrics["advantage_mean"] = float(rollout.get("advantage").mean())
        return metrics

    def learning_rate(self, iteration: int) -> float:
        """LR for the 1-based ``iteration``: linear from ``lr`` to ``lr / num_iterations``."""
        if not self.cfg.anneal_lr:
            return self.cfg.lr
        frac = 1.0 - (iteration - 1) / self.num_iterations
        return self.cfg.lr * frac

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainResult:
        """Train until ``total_steps``, logging, checkpointing and evaluating at the end."""
        cfg, main = self.cfg, self.world.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(
                json.dumps(config_to_dict(cfg), indent=2) + "\n")
        logger = MetricsLogger(self.run_dir, resume_from_step=self.env_steps or None) if main \
            else None
        bar = (_progress_bar(cfg, self.env_steps, self.num_iterations * cfg.batch_size
                             * self.world.world_size) if (main and cfg.progress) else None)
        start = time.perf_counter()
        start_steps = self.env_steps
        interrupted = False
        previous = {sig: _install_handler(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.iteration < self.num_iterations:
                self.iteration += 1
                lr = self.learning_rate(self.iteration)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                t0 = time.perf_counter()
                rollout = self.collect()
                t1 = time.perf_counter()
                metrics = self.update(rollout)
                t2 = time.perf_counter()
                elapsed = time.perf_counter() - start
                sps = (self.env_steps - start_steps) / max(elapsed, 1e-9)
                metrics.update(
                    lr=lr, sps=sps, collect_seconds=t1 - t0, update_seconds=t2 - t1,
                    episode_return_mean=_mean(self.recent_returns),
                )
                if logger is not None:
                    logger.log(metrics, env_steps=self.env_steps, iteration=self.iteration,
                               wall_seconds=self.wall_offset + elapsed)
                if bar is not None:
                    bar.update(self.env_steps - bar.n)
                    bar.set_postfix(sps=f"{sps:,.0f}", ret=f"{metrics['episode_return_mean']:.1f}",
                                    refresh=False)
                # a signal may reach one rank only: stop together or the others would wait
                self._stop_requested = self.world.any(self._stop_requested)
                last = self.iteration == self.num_iterations
                if main and (last or self._stop_requested
                             or self.iteration % cfg.checkpoint_every == 0):
                    self.save(wall_seconds=self.wall_offset + elapsed)
                    if cfg.keep_checkpoint_every and (
                            self.iteration % cfg.keep_checkpoint_every == 0):
                        self.save(name=f"step_{self.env_steps}.pt",
                                  wall_seconds=self.wall_offset + elapsed)
                if self._stop_requested:
                    interrupted = True
                    break
        finally:
            for sig, handler in previous.items():
                if handler is not None:
                    signal.signal(sig, handler)
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()
        wall = self.wall_offset + time.perf_counter() - start
        summary: dict[str, Any] = {}
        if main and not interrupted:
            summary = self.finish(wall_seconds=wall, train_sps=(self.env_steps - start_steps)
                                  / max(time.perf_counter() - start, 1e-9))
        self.env.close()
        return TrainResult(self.env_steps, self.iteration, wall, interrupted, summary)

    def finish(self, *, wall_seconds: float, train_sps: float) -> dict[str, Any]:
        """Evaluate deterministically and write ``summary.json``."""
        from ppokit.train.evaluate import evaluate_policy

        cfg = self.cfg
        summary: dict[str, Any] = {
            "env": cfg.env, "seed": cfg.seed, "env_steps": self.env_steps,
            "iterations": self.iteration, "wall_seconds": round(wall_seconds, 2),
            "sps": round(train_sps, 1),
            "train_return_recent_mean": _mean(self.recent_returns),
            "world_size": self.world.world_size,
        }
        if cfg.eval_episodes:
            t0 = time.perf_counter()
            with unwrap_ddp(self.actor):  # rank 0 alone: no DDP hooks
                result = evaluate_policy(self.actor, cfg.env, episodes=cfg.eval_episodes,
                                         seed=cfg.seed + 10_000, obs_normalizer=self.obs_norm)
            summary.update(
                eval_return_mean=result.mean, eval_return_std=result.std,
                eval_episodes=len(result.returns), eval_returns=result.returns,
                eval_lengths=result.lengths, eval_seconds=round(time.perf_counter() - t0, 2),
            )
        summary["checkpoint"] = str(self.ckpt_dir / "latest.pt")
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def _on_signal(self, signum: int, frame: object) -> None:
        # SIGINT (Ctrl-C) and SIGTERM (kill, cluster preemption): finish the iteration, save
        if self._stop_requested and signum == signal.SIGINT:  # a second Ctrl-C: abort now
            raise KeyboardInterrupt
        self._stop_requested = True
        self.stop_signal = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\nppokit: {name} received, saving a checkpoint after this iteration "
              "(press Ctrl-C again to abort without saving)...", file=sys.stderr, flush=True)

    def request_stop(self) -> None:
        """Ask the loop to checkpoint and stop after the current iteration."""
        self._stop_requested = True

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, *, wall_seconds: float | None = None) -> dict[str, Any]:
        """Everything needed to continue the run (plain tensors and Python scalars)."""
        np_state = np.random.get_state()
        with unwrap_ddp(self.actor, self.critic):
            actor_state, critic_state = self.actor.state_dict(), self.critic.state_dict()
        return {
            "config": config_to_dict(self.cfg),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "world_size": self.world.world_size,
            "wall_seconds": float(self.wall_offset if wall_seconds is None else wall_seconds),
            "actor": actor_state,
            "critic": critic_state,
            "optimizer": self.optimizer.state_dict(),
            "obs_norm": self.obs_norm.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict(),
            "recent_returns": list(self.recent_returns),
            "rng": {
                "torch": torch.get_rng_state(),
                "shuffle": self.shuffle_gen.get_state(),
                "python": random.getstate(),
                "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)),
                          "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                          "cached_gaussian": float(np_state[4])},
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the envs restart with a seed derived from the step."""
        saved = config_from_dict(state["config"])
        for name in ("env", "num_envs", "num_steps", "hidden_sizes", "activation"):
            if getattr(saved, name) != getattr(self.cfg, name):
                raise ValueError(
                    f"Cannot resume: the checkpoint was trained with {name}="
                    f"{getattr(saved, name)!r} but this run has {name}="
                    f"{getattr(self.cfg, name)!r}. Drop the override of --{name.replace('_', '-')}."
                )
        with unwrap_ddp(self.actor, self.critic):
            self.actor.load_state_dict(state["actor"])
            self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])
        self.wall_offset = float(state["wall_seconds"])
        self.recent_returns.extend(state.get("recent_returns", []))
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.shuffle_gen.set_state(rng["shuffle"])
        random.setstate(_to_tuple(rng["python"]))
        npk = rng["numpy"]
        np.random.set_state(("MT19937", npk["key"].numpy().astype(np.uint32), npk["pos"],
                             npk["has_gauss"], npk["cached_gaussian"]))
        for merger in self._stat_mergers:  # the loaded statistics are the common start
            merger.reset()
        if not self.world.is_main:
            # the checkpoint holds rank 0's random state: the other ranks take fresh streams
            seed = rank_seed(self.cfg.seed, self.world.rank) + self.iteration
            seed_everything(seed)
            self.shuffle_gen.manual_seed(seed)
            self.reward_scaler.returns[:] = 0.0  # rank 0's returns in flight are not ours
        # Episodes in flight at the checkpoint cannot be restored from a Gymnasium env: the
        # envs restart with a seed derived from (seed, rank, iteration), so a resumed run is
        # deterministic given the checkpoint, but not bit-identical to an uninterrupted run.
        self.collector.reset(seed=rank_seed(self.cfg.seed, self.world.rank)
                             + 100_003 * self.iteration)

    def save(self, name: str = "latest.pt", *, wall_seconds: float | None = None) -> Path:
        """Write a checkpoint to ``run_dir/checkpoints/name`` atomically."""
        return save_checkpoint(self.state_dict(wall_seconds=wall_seconds), self.ckpt_dir / name)


def _adam(params: list[nn.Parameter], *, lr: float, eps: float) -> torch.optim.Adam:
    # the fused kernel does the whole update in one call: cheaper for many small tensors
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, eps=eps)


def check_world_support(cfg: TrainConfig, world: World) -> None:
    """Raise ``ValueError`` for options that ``world`` (several processes) cannot run.

    Example:
        >>> from ppokit.train.config import TrainConfig
        >>> check_world_support(TrainConfig(compile=True), World())  # one process: fine
    """
    if cfg.compile and world.is_distributed:
        raise ValueError(
            "compile=True does not work with distributed training yet (--compile under "
            "torchrun): DistributedDataParallel's forward cannot be traced into the loss's "
            "single graph. Set compile=False (drop --compile), or train in one process.")


def _unique_params(*modules: nn.Module) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _mean(values: Any) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _progress_bar(cfg: TrainConfig, initial: int, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                desc=f"{cfg.env} seed {cfg.seed}", smoothing=0.1)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while forking env workers (they inherit it), then restore the handler."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals cannot be changed, nothing to protect
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _install_handler(sig: int, handler: Any) -> Any:
    """Install ``handler`` for ``sig``; returns the previous one (None off the main thread)."""
    try:
        return signal.signal(sig, handler)
    except ValueError:
        return None


def load_policy(run_dir: str | Path, *, checkpoint: str = "latest.pt"
                ) -> tuple[Any, ObservationNormalizer, TrainConfig]:
    """The actor, frozen observation normaliser and config of a run directory's checkpoint.

    Raises:
        FileNotFoundError: no such run dir or checkpoint.
        CheckpointError: the file is not a ppokit checkpoint.

    Example:
        >>> import tempfile
        >>> from ppokit.train.config import preset_config
        >>> run = tempfile.mkdtemp()
        >>> cfg = preset_config("CartPole-v1", total_steps=256, eval_episodes=0, progress=False)
        >>> _ = PPOTrainer(cfg, run_dir=run).train()
        >>> actor, obs_norm, loaded = load_policy(run)
        >>> loaded.env
        'CartPole-v1'
    """
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / checkpoint
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint {str(path)!r}: is {str(run_dir)!r} a ppokit run directory?")
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    env = GymVecEnv(cfg.env, 1)
    try:
        actor, _ = build_actor_critic(env, hidden_sizes=cfg.hidden_sizes,
                                      activation=cfg.activation, init_log_std=cfg.init_log_std,
                                      ortho_init=cfg.ortho_init)
        obs_norm = ObservationNormalizer(env.obs_shape, clip=cfg.obs_clip, enabled=cfg.obs_norm)
    finally:
        env.close()
    actor.load_state_dict(state["actor"])
    obs_norm.load_state_dict(state["obs_norm"])
    obs_norm.frozen = True
    actor.eval()
    return actor, obs_norm, cfg
