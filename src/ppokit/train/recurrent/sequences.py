"""Recurrent training: the state in the rollout, advantages and minibatches of env sequences.

:class:`RecurrentRollout` is what the trainer and the collector call when the policy has a
recurrent core (``--recurrent lstm/gru``):

- **collection**: each step the carried state (:class:`~ppokit.train.recurrent.state.
  PolicyState`) goes into the step TensorDict; the rollout keeps, per step, the state that
  entered it (``recurrent_state_* [N, T, L, H]``), ``is_init [N, T, 1]`` and the state after
  it under ``"next"``. A critic with its own core is stepped too, so its state follows the
  same episodes.
- **advantages**: the critic re-runs each env's whole rollout from the state stored at its
  first step, with resets where ``is_init``; ``V(s_{t+1})`` is one step from the stored
  post-step state (what a truncated episode bootstraps from). GAE itself is the loss's
  estimator, unchanged (it reads these values).
- **minibatches**: each env's rollout is cut into sequences of ``recurrent_seq_len`` steps
  (time order kept); minibatches are whole sequences, re-run by the loss from their stored
  first state (truncated backprop through time over a sequence, as sb3-contrib's
  RecurrentPPO and CleanRL's ``ppo_atari_lstm.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import set_skip_existing
from torch import nn

from ppokit.modules.recurrent import set_recurrent_mode
from ppokit.train.recurrent.acting import RecurrentActing
from ppokit.train.recurrent.state import PolicyState
from ppokit.train.update import EagerUpdate, UpdateResult

if TYPE_CHECKING:
    from ppokit.train.settings.config import TrainConfig

__all__ = [
    "RecurrentRollout",
    "SequenceUpdate",
    "check_recurrent_config",
    "minibatch_rows",
    "sequence_length",
]


def sequence_length(cfg: TrainConfig) -> int:
    """The training sequence length: ``recurrent_seq_len``, or ``num_steps`` when 0."""
    return cfg.recurrent_seq_len or cfg.num_steps


def check_recurrent_config(cfg: TrainConfig) -> None:
    """Refuse, before training, what a recurrent run cannot honour, saying how to fix it.

    Example:
        >>> from ppokit.train.settings.config import TrainConfig
        >>> check_recurrent_config(TrainConfig(recurrent="lstm", num_steps=32, recurrent_seq_len=5))
        Traceback (most recent call last):
        ...
        ValueError: --recurrent-seq-len 5 does not divide --num-steps 32: ...
    """
    if cfg.compile:
        raise ValueError(
            f"--recurrent {cfg.recurrent} cannot be combined with --compile: the fused compiled "
            "update and the compiled acting path run feed-forward networks only. Drop --compile."
        )
    length = sequence_length(cfg)
    if cfg.num_steps % length:
        raise ValueError(
            f"--recurrent-seq-len {length} does not divide --num-steps {cfg.num_steps}: every "
            "training sequence must have the same length. Pick a divisor of num_steps (or 0 "
            "for whole rollouts)."
        )
    sequences = cfg.num_envs * (cfg.num_steps // length)
    if sequences % cfg.num_minibatches:
        raise ValueError(
            f"A recurrent run splits whole sequences into minibatches: num_envs * num_steps / "
            f"seq_len = {cfg.num_envs} * {cfg.num_steps} / {length} = {sequences} sequences do "
            f"not divide into --num-minibatches {cfg.num_minibatches}. Choose num_minibatches "
            "dividing the number of sequences (or change --num-envs/--recurrent-seq-len)."
        )


class SequenceUpdate(EagerUpdate):
    """The eager update with the recurrent cores in sequence mode (minibatches ``[B, L]``)."""

    def __call__(
        self, minibatch: TensorDictBase, *, target_kl: float | None = None
    ) -> UpdateResult:
        with set_recurrent_mode(True):
            return super().__call__(minibatch, target_kl=target_kl)


class RecurrentRollout:
    """State bookkeeping of a recurrent run (module docstring): collector hooks, advantage,
    minibatch rows.

    Args:
        actor: the policy (acting writes its cores' next state).
        critic: the value network; stepped while collecting when it has a core of its own.

    Keyword Args:
        num_envs: environments ``N``.
        seq_len: training sequence length ``L``.

    Example:
        >>> from ppokit.envs.gym import GymVecEnv
        >>> from ppokit.train.build import build_actor_critic
        >>> with GymVecEnv("CartPole-v1", 2) as env:
        ...     actor, critic = build_actor_critic(env, recurrent="gru", recurrent_size=8)
        >>> RecurrentRollout.for_modules(actor, critic, num_envs=2, seq_len=4).state.keys
        ['recurrent_state', 'critic_recurrent_state']
    """

    def __init__(self, actor: nn.Module, critic: nn.Module, *, num_envs: int, seq_len: int):
        self.actor, self.critic = actor, critic
        self.state = PolicyState(actor, critic, batch=num_envs)
        actor_keys = PolicyState(actor, batch=num_envs).keys
        self.step_critic = any(k not in actor_keys for k in self.state.keys)
        #: the state keys the critic's cores read (none for a feed-forward critic)
        critic_state = PolicyState.for_modules(critic, batch=1)
        self.critic_keys = critic_state.keys if critic_state is not None else []
        self.seq_len = seq_len
        self._rollout: TensorDict | None = None
        #: acting on tensors (None: the actor is called as a TensorDict module)
        self.acting = RecurrentActing.for_modules(actor, critic, step_critic=self.step_critic)
        self._last: Any = None  # where the latest step's next states are

    @classmethod
    def for_modules(
        cls, actor: nn.Module, critic: nn.Module, *, num_envs: int, seq_len: int
    ) -> RecurrentRollout | None:
        """The bookkeeping for these networks, or ``None`` for feed-forward ones."""
        if PolicyState.for_modules(actor, critic, batch=1) is None:
            return None
        return cls(actor, critic, num_envs=num_envs, seq_len=seq_len)

    @classmethod
    def for_config(
        cls,
        actor: nn.Module,
        critic: nn.Module,
        cfg: TrainConfig,
        *,
        device: torch.device | None = None,
    ) -> RecurrentRollout | None:
        """:meth:`for_modules` with the run's sizes (``None`` for feed-forward networks); a
        user's recurrent actor/critic is checked as ``--recurrent`` would be.

        Raises:
            ValueError: ``device`` (where the run's networks are) is not the CPU: the carried
                state and the acting path of a recurrent policy live on the CPU.
        """
        found = cls.for_modules(actor, critic, num_envs=cfg.num_envs, seq_len=sequence_length(cfg))
        if found is not None:
            check_recurrent_config(cfg)
            if device is not None and torch.device(device).type != "cpu":
                raise ValueError(
                    f"A recurrent policy trains on the CPU only in this version; the run's "
                    f"device is {str(device)!r} (--device {cfg.device}). The carried hidden "
                    "state and the recurrent acting path are kept on the CPU. Pass --device cpu."
                )
        return found

    # ------------------------------------------------------------------ collection
    def attach(self, rollout: TensorDict) -> None:
        """Allocate the state entries in the collector's ``[N, T]`` rollout."""
        n, t = rollout.batch_size
        rollout.set("is_init", torch.zeros(n, t, 1, dtype=torch.bool))
        for key, shape in self.state.shapes().items():
            rollout.set(key, torch.zeros(n, t, *shape))
            rollout.set(("next", key), torch.zeros(n, t, *shape))
        self._rollout = rollout

    def reset(self) -> None:
        """The envs were reset: every env starts from a zero state."""
        self.state.reset()

    def act(
        self,
        obs: torch.Tensor,
        t: int,
        step_td: TensorDictBase,
        policy: Callable[[TensorDictBase], Any],
        log_prob_key: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The collector's step ``t``: act on ``obs [N, *obs]`` from the carried state, store
        the state before and after the step; ``(action, log_prob)``."""
        if self.acting is None:  # any other actor: as a TensorDict module
            step_td.set("observation", obs)
            self.before_policy(step_td, t)
            policy(step_td)
            self.after_policy(step_td, t)
            return step_td.get("action"), step_td.get(log_prob_key)
        state, rollout = self.state, self._checked_rollout()
        values: dict[Any, torch.Tensor] = {"observation": obs, "is_init": state.is_init}
        values.update(state.states)
        rollout.get("is_init")[:, t] = state.is_init
        for key, value in state.states.items():
            rollout.get(key)[:, t] = value
        action, log_prob = self.acting.act(values)
        for key in state.keys:
            rollout.get(("next", key))[:, t] = values[("next", key)]
        self._last = values
        return action, log_prob

    def before_policy(self, step_td: TensorDictBase, t: int) -> None:
        """Put the carried state into the step TensorDict and the rollout's step ``t``."""
        self.state.fill(step_td)
        rollout = self._checked_rollout()
        rollout.get("is_init")[:, t] = self.state.is_init
        for key, value in self.state.states.items():
            rollout.get(key)[:, t] = value

    def after_policy(self, step_td: TensorDictBase, t: int) -> None:
        """Step a critic with its own core; store the state after step ``t``."""
        if self.step_critic:
            self.critic(step_td)
        rollout = self._checked_rollout()
        for key in self.state.keys:
            rollout.get(("next", key))[:, t] = step_td.get(("next", key))
        self._last = step_td

    def after_env(self, done: Any) -> None:
        """Carry the state to the next step, zeroed where the episode ended."""
        self.state.advance(self._last, done)

    def _checked_rollout(self) -> TensorDict:
        if self._rollout is None:
            raise RuntimeError("RecurrentRollout.attach(rollout) must run before collecting.")
        return self._rollout

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def estimate_advantage(self, value_estimator: nn.Module, rollout: TensorDictBase) -> Any:
        """Values from the re-run critic, then ``value_estimator`` (GAE) on them."""
        n, t = rollout.batch_size
        keys = ["observation", "is_init", *self.critic_keys]
        with set_recurrent_mode(True):
            value = self.critic(rollout.select(*keys)).get("state_value")
        nxt = TensorDict(
            {
                "observation": rollout.get(("next", "observation")),
                "is_init": torch.zeros(n, t, 1, dtype=torch.bool),
                **{k: rollout.get(("next", k)) for k in self.critic_keys},
            },
            batch_size=[n, t],
        ).reshape(-1)
        with set_recurrent_mode(False):
            next_value = self.critic(nxt).get("state_value").reshape(n, t, -1)
        rollout.set("state_value", value)
        rollout.set(("next", "state_value"), next_value)
        with set_skip_existing(True):  # the estimator reads the values written above
            value_estimator(rollout)
        return rollout

    def rows(self, rollout: TensorDictBase, keys: Sequence[str]) -> TensorDictBase:
        """``[N, T]`` -> ``[N * T / L, L]`` sequences with ``keys``, the states and ``is_init``
        (each env's steps in time order; sequence ``i`` of env ``n`` is row
        ``n * T / L + i``)."""
        td = rollout.select(*keys, "is_init", *self.state.keys)
        return td.reshape(-1, self.seq_len)


def minibatch_rows(
    rollout: TensorDictBase, keys: Sequence[str], recurrent: RecurrentRollout | None
) -> TensorDictBase:
    """The rows minibatches are drawn from: transitions ``[N * T]`` (feed-forward), or whole
    env sequences ``[N * T / L, L]`` (:meth:`RecurrentRollout.rows`)."""
    if recurrent is not None:
        return recurrent.rows(rollout, keys)
    return rollout.select(*keys).reshape(-1)
