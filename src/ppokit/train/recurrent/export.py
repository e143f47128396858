"""A recurrent policy as one deployable graph: the hidden state as explicit inputs and outputs.

A graph file cannot carry state between calls, so the exported recurrent policy takes it in
and gives it back: ``(observation [B, *obs], *state [B, L, H]) -> (action, *next_state)``, the
state tensors in the order of :attr:`RecurrentDeployedPolicy.state_keys` (for ``--recurrent
lstm``: ``recurrent_state_h``, ``recurrent_state_c``; the critic's core is not exported). The
caller feeds zeros at the first step of an episode (what ``is_init`` does in training) and the
returned state at every other step. One step is the actor's own code path while collecting
(:class:`~ppokit.train.recurrent.acting.TensorChain`), the action its distribution's
``deterministic_sample``, observation normalisation and Box clipping as in
:class:`~ppokit.train.deploy.export.DeployedPolicy`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from tensordict.nn import ProbabilisticTensorDictModule, ProbabilisticTensorDictSequential
from torch import nn

from ppokit.modules.recurrent import recurrent_modules
from ppokit.train.deploy.export import ActionClip
from ppokit.train.normalization import ObservationNormalizer
from ppokit.train.recurrent.acting import RecurrentActing

__all__ = ["RecurrentDeployedPolicy", "export_recurrent"]


class RecurrentDeployedPolicy(nn.Module):
    """``(obs [B, *obs], *state [B, L, H]) -> (action, *next_state)``, deterministic.

    Args:
        actor: a recurrent actor as ``--recurrent lstm/gru`` builds it (plain TensorDict
            modules and ppokit cores ending in ``Categorical`` or ``IndependentNormal``).
        obs_norm: the run's observation normaliser (frozen statistics; disabled: identity).

    Keyword Args:
        action_space: the environment's action space; a ``Box`` clips actions to its bounds.

    Example:
        >>> from types import SimpleNamespace
        >>> from ppokit.train.build import build_actor_critic
        >>> env = SimpleNamespace(obs_shape=(3,), discrete=True, num_actions=2)
        >>> actor, _ = build_actor_critic(env, recurrent="gru", recurrent_size=8)
        >>> policy = RecurrentDeployedPolicy(actor, ObservationNormalizer((3,), enabled=False),
        ...                                  action_space=gym.spaces.Discrete(2))
        >>> policy.state_keys, [tuple(s.shape) for s in policy.initial_state(4)]
        (['recurrent_state'], [(4, 1, 8)])
        >>> action, state = policy(torch.zeros(4, 3), *policy.initial_state(4))
        >>> action.shape, state.shape
        (torch.Size([4]), torch.Size([4, 1, 8]))
    """

    def __init__(
        self, actor: nn.Module, obs_norm: ObservationNormalizer, *, action_space: gym.Space
    ) -> None:
        super().__init__()
        acting = RecurrentActing.for_modules(actor, actor, step_critic=False)
        if acting is None or not isinstance(actor, ProbabilisticTensorDictSequential):
            raise ValueError(
                f"{type(actor).__name__} is not a recurrent actor ppokit can export: it must "
                "be plain TensorDict modules and ppokit LSTM/GRU cores ending in a Categorical "
                "or IndependentNormal ProbabilisticActor (as --recurrent lstm/gru builds)."
            )
        dist_module = actor.module[-1]
        if not isinstance(dist_module, ProbabilisticTensorDictModule):
            raise ValueError(f"{type(actor).__name__} does not end in a distribution module.")
        self.actor = actor  # registers the networks (parameters, .eval())
        self.obs_norm = obs_norm
        self.chain = acting.actor
        self.cores = list(recurrent_modules(actor))
        #: the state inputs (and, in the same order, outputs) of :meth:`forward`
        self.state_keys = [k for core in self.cores for k in core.state_keys]
        self.dist_cls = dist_module.distribution_class
        self.dist_kwargs = dict(dist_module.distribution_kwargs or {})
        names = [k[-1] if isinstance(k, tuple) else k for k in dist_module.dist_keys]
        self.dist_params = list(zip(names, dist_module.in_keys))
        self.clip = ActionClip(action_space)

    def initial_state(self, batch: int) -> list[torch.Tensor]:
        """The zero state of ``batch`` fresh episodes, in :attr:`state_keys` order."""
        return [s for core in self.cores for s in core.initial_state(batch).values()]

    def forward(self, obs: torch.Tensor, *state: torch.Tensor) -> Any:
        if len(state) != len(self.state_keys):
            raise ValueError(
                f"RecurrentDeployedPolicy takes the observation and {len(self.state_keys)} "
                f"state tensors {self.state_keys}, got {len(state)}."
            )
        values: dict[Any, torch.Tensor] = dict(zip(self.state_keys, state))
        values["observation"] = self.obs_norm.normalize(obs, update=False)
        # the state passed in is the episode's: zeros at its start replace is_init
        values["is_init"] = torch.zeros(obs.shape[0], 1, dtype=torch.bool, device=obs.device)
        self.chain(values)
        params = {name: values[key] for name, key in self.dist_params}
        action = self.clip(self.dist_cls(**params, **self.dist_kwargs).deterministic_sample)
        return (action, *(values[("next", k)] for k in self.state_keys))


def export_recurrent(
    module: RecurrentDeployedPolicy, example_obs: torch.Tensor, fmt: str, out: Path
) -> Path:
    """Write ``module`` as ``fmt`` to ``out``, the batch size dynamic (called by
    :func:`~ppokit.train.deploy.export.export_policy` for a recurrent run).

    Inputs ``observation`` and the state keys; outputs ``action`` and ``next_<state key>``
    (the ONNX names). TorchScript traces :meth:`RecurrentDeployedPolicy.forward` itself (the
    weights become constants of the file): a trace of the exported graph would keep the
    example's batch size, which that graph reads as a number.
    """
    example = (example_obs, *module.initial_state(example_obs.shape[0]))
    batch = torch.export.Dim("batch", min=1)
    shapes = ({0: batch}, tuple({0: batch} for _ in module.state_keys))
    module = module.eval().requires_grad_(False)
    with torch.no_grad(), warnings.catch_warnings():
        # nn.LSTM/GRU keep a flat list of their weights, which torch.export warns about
        warnings.filterwarnings("ignore", message=".*_flat_weights.*")
        if fmt == "onnx":
            torch.onnx.export(
                module,
                example,
                str(out),
                dynamo=True,
                input_names=["observation", *module.state_keys],
                output_names=["action", *(f"next_{k}" for k in module.state_keys)],
                dynamic_shapes=shapes,
                verbose=False,
            )
        elif fmt == "exported-program":
            torch.export.save(torch.export.export(module, example, dynamic_shapes=shapes), str(out))
        else:

            def step(*inputs: torch.Tensor) -> Any:
                return module(*inputs)

            torch.jit.save(torch.jit.trace(step, example, check_trace=False), str(out))
    return out
