"""The PPO training loop: collect, estimate advantages, epochs of shuffled minibatches.

:class:`PPOTrainer` runs a whole training (vector env, actor and critic, ClipPPOLoss, Adam,
normalisers, logger, checkpoints) and exposes small steps (:meth:`PPOTrainer.collect`,
:meth:`PPOTrainer.update`, :meth:`PPOTrainer.state_dict`) so a distributed launcher can wrap
the networks and reduce statistics through the :class:`World` object without a rewrite.
:func:`train` is the one-call form. The pieces live beside it: networks
(:mod:`~ppokit.train.build`), the update step (:mod:`~ppokit.train.update`), random state
(:mod:`~ppokit.train.state`), signals (:mod:`~ppokit.train.signals`), loading a trained
policy (:mod:`~ppokit.train.deploy.policy`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import set_skip_existing
from torch import nn

from ppokit.distributed import (
    GradientAverager,
    RunningStatsMerger,
    World,
    broadcast_parameters,
    rank_seed,
    shared_outside_trunks,
    shares_parameters,
    unwrap_ddp,
    wrap_ddp,
)
from ppokit.envs.sources import EnvSource
from ppokit.envs.structured import StructuredVecEnv, open_env
from ppokit.train.build import (
    build_actor_critic,
    build_for_config,
    build_loss,
    build_optimizer,
    unique_params,
)
from ppokit.train.deploy.policy import load_policy
from ppokit.train.device import float_obs, move_modules, resolve_device
from ppokit.train.epochs import LOG_PROB_KEY, run_epochs
from ppokit.train.evaluation.evaluate import EvalResult
from ppokit.train.guards import check_rollout_finite
from ppokit.train.loop import TrainResult, run_loop
from ppokit.train.normalization import ObservationNormalizer, RewardScaler
from ppokit.train.precision import check_precision
from ppokit.train.records.checkpoint import load_checkpoint, save_checkpoint
from ppokit.train.records.rundir import record_written
from ppokit.train.recurrent.sequences import RecurrentRollout
from ppokit.train.settings.config import (
    TrainConfig,
    config_from_dict,
    config_to_dict,
    default_run_dir,
    num_iterations,
    validate_config,
)
from ppokit.train.setup import (
    check_resumable,
    checked_module,
    eval_source,
    is_vector_env,
    resolve_config,
)
from ppokit.train.signals import StopRequest, sigint_ignored
from ppokit.train.state import load_rng_state, rng_state, seed_everything
from ppokit.train.structured.training import make_collector
from ppokit.train.update import make_update_step, update_kind

__all__ = [
    "PPOTrainer",
    "TrainResult",
    "World",
    "build_actor_critic",
    "load_policy",
    "seed_everything",
]


class PPOTrainer:
    """PPO on a Gymnasium task, configured by a :class:`~ppokit.train.settings.config.TrainConfig`.

    Args:
        cfg: the run's configuration (default: the preset of ``env``, or of ``cfg.env``).

    Keyword Args:
        env: what to train on, instead of ``cfg.env``: a Gymnasium id (``"module:EnvId"``
            imports ``module`` first), a callable returning a ``gymnasium.Env``, or a
            ``gymnasium.vector.VectorEnv`` made with ``AutoresetMode.SAME_STEP`` (its
            ``num_envs`` is the run's). See :mod:`ppokit.envs.sources`.
        actor: the policy, instead of the built MLP: a TensorDict module reading
            ``"observation"`` and writing ``"action"`` and ``"action_log_prob"`` with a
            ``get_dist`` (ppokit's or TorchRL's ``ProbabilisticActor``).
        critic: the value network, instead of the built MLP: reads ``"observation"``,
            writes ``"state_value"`` (ppokit's or TorchRL's ``ValueOperator``).
        eval_env: where the final evaluation plays (default: ``env``; needed for a VectorEnv
            when ``eval_episodes > 0``): an id or a callable.
        run_dir: where logs, checkpoints and the summary go (default: ``cfg.run_dir``, else
            ``runs/<env>__<seed>__<time>``).
        world: process identity for distributed training (single process by default).
        resume: continue from ``run_dir/checkpoints/latest.pt``.
        **overrides: any :class:`TrainConfig` field, applied over ``cfg`` (the old names
            ``ent_coef``/``vf_coef`` are read with a ``FutureWarning``).

    Per iteration: collect ``num_envs x num_steps`` transitions with the current policy, run
    GAE once (or before every epoch with ``recompute_advantage``), then ``num_epochs`` passes
    of ``num_minibatches`` shuffled minibatches through ``ClipPPOLoss`` (advantages normalised
    per minibatch), Adam with linear LR annealing and global grad-norm clipping, and an optional
    target-KL stop checked before each minibatch's step. The update step is chosen once, at
    construction: ``update_kind`` is ``"eager"``, or ``"fused"`` with ``compile=True``.

    Example:
        >>> import tempfile
        >>> trainer = PPOTrainer(env="CartPole-v1", run_dir=tempfile.mkdtemp(),
        ...                      total_steps=512, eval_episodes=0, progress=False)
        >>> result = trainer.train()
        >>> result.env_steps, result.interrupted, trainer.update_kind
        (512, False, 'eager')
    """

    def __init__(
        self,
        cfg: TrainConfig | None = None,
        *,
        env: EnvSource | None = None,
        actor: nn.Module | None = None,
        critic: nn.Module | None = None,
        eval_env: EnvSource | None = None,
        run_dir: str | Path | None = None,
        world: World | None = None,
        resume: bool = False,
        **overrides: Any,
    ) -> None:
        cfg = resolve_config(cfg, env=env, overrides=overrides)
        validate_config(cfg)
        self.world = world or World()
        self.run_dir = (
            Path(run_dir) if run_dir is not None else (cfg.run_dir or default_run_dir(cfg))
        )
        self.cfg = cfg = dataclasses.replace(cfg, run_dir=self.run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        torch.set_num_threads(cfg.torch_threads)
        self.device = resolve_device(cfg.device)  # networks, rollout, GAE and updates
        seed = rank_seed(cfg.seed, self.world.rank)
        seed_everything(seed)

        source: EnvSource = cfg.env if env is None or isinstance(env, str) else env
        self.eval_env = eval_source(source, eval_env, cfg)
        with sigint_ignored():  # async workers must not see the terminal's Ctrl-C
            self.env = open_env(
                source,
                None if is_vector_env(source) else cfg.num_envs,
                mode=cfg.vector_mode,
                env_kwargs=cfg.env_kwargs or None,
                mask_key=cfg.action_mask_key,
            )
        if actor is None or critic is None:
            built_actor, built_critic = build_for_config(self.env, cfg)
            actor = actor if actor is not None else built_actor
            critic = critic if critic is not None else built_critic
        self.actor, self.critic = checked_module(actor, "actor"), checked_module(critic, "critic")
        check_precision(cfg.precision, self.device, self.actor, self.critic)  # before any work
        move_modules(self.device, self.actor, self.critic)  # before DDP wraps them
        # DDP on the plain networks inside the TensorDict modules (ppokit.wrap_ddp):
        # the loss keeps the actor's get_dist, and backward() averages gradients over ranks; a
        # shared CNN trunk gets one wrapper, inside its memo (it runs once per loss). DDP cannot
        # hook a parameter that runs in two forward passes per loss (a shared recurrent core,
        # whose sequences the actor and the critic each re-run; any sharing outside a
        # SharedTrunk), and DDP's hooks cannot be traced into the fused compiled update
        # (--compile): those runs all-reduce the gradients after backward instead.
        by_hand = self.world.is_distributed and (
            cfg.compile
            or shared_outside_trunks(self.actor, self.critic)
            or (cfg.recurrent != "none" and shares_parameters(self.actor, self.critic))
        )
        grad_sync = GradientAverager(self.world) if by_hand else None
        if self.world.is_distributed and not by_hand:
            wrap_ddp(self.actor, self.critic, world=self.world)
        # in DDP the advantage is standardised over all ranks' minibatch (in update())
        self.loss = build_loss(
            self.actor,
            self.critic,
            cfg,
            normalize_advantage=(cfg.normalize_advantage and not self.world.is_distributed),
        ).to(self.device)
        self.params = unique_params(self.actor, self.critic)
        if by_hand:  # every rank starts from rank 0's weights (what DDP does when wrapping)
            broadcast_parameters(self.params, self.world)
        self.recurrent = RecurrentRollout.for_config(  # None for feed-forward networks
            self.actor, self.critic, cfg, device=self.device
        )
        self.optimizer = build_optimizer(self.params, lr=cfg.lr, eps=cfg.adam_eps)
        # chosen once: eager, or (compile=True) loss, gradient, clip and Adam as one compiled
        # graph sharing the modules and the optimizer's state; refused with the reason
        self.update_step = make_update_step(
            self.loss,
            self.optimizer,
            self.params,
            compile=cfg.compile,
            max_grad_norm=cfg.max_grad_norm,
            kl_mean=self.world.all_reduce_mean,
            sequences=self.recurrent is not None,
            grad_sync=grad_sync,
        )
        #: "eager" or "fused": the update step this run uses
        self.update_kind = update_kind(self.update_step)
        self.obs_norm = ObservationNormalizer(  # never for images (uint8 observations)
            self.env.obs_shape, clip=cfg.obs_clip, enabled=cfg.obs_norm and float_obs(self.env)
        )
        self.reward_scaler = RewardScaler(
            self.env.num_envs, gamma=cfg.gamma, clip=cfg.reward_clip, enabled=cfg.reward_scale
        )
        # each rank folds its own envs into these; merged over ranks after every rollout
        self._stat_mergers = [
            RunningStatsMerger(self.obs_norm.rms, self.world),
            RunningStatsMerger(self.reward_scaler.rms, self.world),
        ]
        # image rollouts keep each frame once: the critic's values are recorded while acting
        # (the same parameters GAE would use) instead of the next observations
        self.values_in_rollout = (
            not float_obs(self.env)
            and self.recurrent is None
            and not cfg.recompute_advantage
            and not isinstance(self.env, StructuredVecEnv)
        )
        self.collector = make_collector(
            self.env,
            self.actor,
            num_steps=cfg.num_steps,
            obs_normalizer=self.obs_norm,
            reward_scaler=self.reward_scaler,
            log_prob_key=LOG_PROB_KEY,
            seed=seed,
            compile_policy=cfg.compile,
            device=self.device,
            recurrent=self.recurrent,
            **({"critic": self.critic} if self.values_in_rollout else {}),
        )
        self.shuffle_gen = torch.Generator().manual_seed(seed)
        self.iteration = 0
        self.env_steps = 0
        self.wall_offset = 0.0
        self.recent_returns: deque[float] = deque(maxlen=20)
        #: the best mean return of the evaluations during training (``best.pt``'s)
        self.best_eval_return = -math.inf
        #: (iteration, result, seconds) of the latest evaluation during training
        self.last_eval: tuple[int, EvalResult, float] | None = None
        #: called with (iteration, result) after each evaluation during training (rank 0)
        self.eval_callbacks: list[Callable[[int, EvalResult], None]] = []
        self.stop = StopRequest()
        if resume:
            self.load_state_dict(load_checkpoint(self.ckpt_dir / "latest.pt"))
        self.num_iterations = num_iterations(
            total_steps=cfg.total_steps,
            batch_size=cfg.batch_size,
            world_size=self.world.world_size,
            done_iterations=self.iteration,
            done_steps=self.env_steps,
        )

    # ------------------------------------------------------------------ construction
    @property
    def stop_signal(self) -> int | None:
        """The signal that stopped the run (None: none did)."""
        return self.stop.signum

    def request_stop(self) -> None:
        """Ask the loop to checkpoint and stop after the current iteration."""
        self.stop.request()

    # ------------------------------------------------------------------ one iteration
    def collect(self) -> TensorDict:
        """Collect one rollout ``[num_envs, num_steps]`` with the current policy."""
        self.actor.eval()
        rollout = self.collector.collect()
        # the environment's own NaN/Inf, named as such before GAE sees it
        check_rollout_finite(
            rollout,
            env=self.cfg.env,
            iteration=self.iteration,
            first_env_step=self.env_steps,
            world_size=self.world.world_size,
        )
        self.env_steps += self.cfg.batch_size * self.world.world_size
        if self.world.is_distributed and (self.cfg.obs_norm or self.cfg.reward_scale):
            for merger in self._stat_mergers:  # every rank: the statistics of all ranks' data
                merger.merge()
            self.obs_norm.refresh()
        for ret in self.collector.pop_episode_stats().returns:
            self.recent_returns.append(ret)
        return rollout

    @torch.no_grad()
    def estimate_advantage(self, rollout: TensorDictBase) -> TensorDictBase:
        """Write ``advantage``, ``value_target`` and ``state_value`` into ``rollout``."""
        if self.recurrent is not None:  # values from the critic re-run over the sequences
            return self.recurrent.estimate_advantage(self.loss.value_estimator, rollout)
        if self.values_in_rollout:  # V(s_t), V(s_t+1) recorded by the collector: read them
            with set_skip_existing(True):
                return self.loss.value_estimator(rollout)
        self.loss.value_estimator(rollout)
        if rollout.get("state_value", None) is None:
            self.critic(rollout)
        return rollout

    def update(self, rollout: TensorDictBase) -> dict[str, float]:
        """Epochs x minibatches of PPO on ``rollout``; returns mean diagnostics."""
        return run_epochs(self, rollout)

    def learning_rate(self, iteration: int) -> float:
        """LR for the 1-based ``iteration``: linear from ``lr`` to ``lr / num_iterations``."""
        if not self.cfg.anneal_lr:
            return self.cfg.lr
        return self.cfg.lr * (1.0 - (iteration - 1) / self.num_iterations)

    def clip_epsilon(self, iteration: int) -> float:
        """Clip range for the 1-based ``iteration`` (annealed like the LR with ``anneal_clip``)."""
        if not self.cfg.anneal_clip:
            return self.cfg.clip_epsilon
        return self.cfg.clip_epsilon * (1.0 - (iteration - 1) / self.num_iterations)

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainResult:
        """Train until ``total_steps``, logging, checkpointing and evaluating at the end."""
        return run_loop(self)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, *, wall_seconds: float | None = None) -> dict[str, Any]:
        """Everything needed to continue the run (plain tensors and Python scalars)."""
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
            "rng": rng_state(self.shuffle_gen),
            "best_eval_return": self.best_eval_return,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the envs restart with a seed derived from the step."""
        check_resumable(config_from_dict(state["config"]), self.cfg)
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
        self.best_eval_return = float(state.get("best_eval_return", -math.inf))
        load_rng_state(state["rng"], self.shuffle_gen)
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
        self.collector.reset(
            seed=rank_seed(self.cfg.seed, self.world.rank) + 100_003 * self.iteration
        )

    def save(self, name: str = "latest.pt", *, wall_seconds: float | None = None) -> Path:
        """Write a checkpoint to ``run_dir/checkpoints/name`` atomically (and list it in the
        run dir's manifest first, so ``--overwrite`` removes it even after a kill)."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        record_written(self.run_dir, f"checkpoints/{name}")
        return save_checkpoint(self.state_dict(wall_seconds=wall_seconds), self.ckpt_dir / name)
