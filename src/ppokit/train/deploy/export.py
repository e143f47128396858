"""A trained policy as one deployable graph: raw observation in, action out.

:class:`DeployedPolicy` composes what acting in evaluation does, each step through the code
that does it there: the observation normaliser with its statistics frozen
(:meth:`~ppokit.train.normalization.ObservationNormalizer.normalize` with ``update=False``),
the actor's networks and distribution (:class:`~ppokit.train.collect.acting.TensorPolicy`), the
distribution's ``deterministic_sample`` (argmax for discrete actions, the mean for Gaussians),
then, for a ``Box`` action space, the clip to its bounds that the environment would need.

:func:`export_policy` captures it with ``torch.export`` (dynamic batch size) and writes:

* ``exported-program``: ``torch.export.save`` (load with ``torch.export.load(f).module()``);
* ``torchscript``: ``torch.jit.trace`` of the exported graph (``torch.jit.load``); tracing
  the graph rather than the TensorDict actor keeps TensorDict's Python objects out of it;
* ``onnx``: ``torch.onnx.export`` of the same module (needs the ``export`` extra: onnx,
  onnxscript; run it with onnxruntime). Input ``observation [B, *obs]`` float32, output
  ``action`` (``[B]`` int64 or ``[B, A]`` float32).

The exported graph computes in float32, also for a run trained with ``--precision bfloat16``.

A recurrent policy (``--recurrent lstm/gru``) takes and returns its hidden state as well
(:mod:`ppokit.train.recurrent.export`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.modules.cnn import NatureCNN
from ppokit.train.collect.acting import TensorPolicy
from ppokit.train.normalization import ObservationNormalizer
from ppokit.train.recurrent.state import PolicyState

__all__ = [
    "FORMATS",
    "ActionClip",
    "DeployedPolicy",
    "default_export_path",
    "export_policy",
    "load_exported",
]

#: format -> default file suffix
FORMATS = {"onnx": ".onnx", "torchscript": ".ts.pt", "exported-program": ".pt2"}


class DeployedPolicy(nn.Module):
    """``obs [B, *obs]`` (raw, float32) -> deterministic ``action`` (``[B]`` or ``[B, A]``).

    Args:
        actor: a ppokit/TorchRL probabilistic actor (e.g. from :func:`load_policy`).
        obs_norm: the run's observation normaliser (frozen statistics are used; disabled is
            the identity).

    Keyword Args:
        action_space: the environment's action space; a ``Box`` clips actions to its bounds.

    Example:
        >>> from ppokit.envs.gym import GymVecEnv
        >>> from ppokit.train.build import build_actor_critic
        >>> env = GymVecEnv("Pendulum-v1", 1)
        >>> actor, _ = build_actor_critic(env)
        >>> norm = ObservationNormalizer(env.obs_shape, enabled=False)
        >>> space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        >>> policy = DeployedPolicy(actor, norm, action_space=space)
        >>> policy(torch.full((3, 3), 100.0)).abs().max().item() <= 2.0
        True
        >>> env.close()
    """

    def __init__(
        self, actor: nn.Module, obs_norm: ObservationNormalizer, *, action_space: gym.Space
    ) -> None:
        super().__init__()
        self.actor = actor
        self.obs_norm = obs_norm
        policy = TensorPolicy.for_actor(actor, sampling=False)
        if policy is None or not policy.usable():
            raise ValueError(
                f"{type(actor).__name__} is not an actor ppokit can export: it "
                "must be a ProbabilisticActor of TensorDict modules reading "
                "'observation' (as ppokit's built actors are)."
            )
        self.policy = policy
        self.clip = ActionClip(action_space)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.obs_norm.normalize(obs, update=False)
        dist: Any = self.policy.distribution(x)
        return self.clip(dist.deterministic_sample)


class ActionClip(nn.Module):
    """Clip actions to a ``Box`` space's bounds (the identity for any other space).

    Example:
        >>> clip = ActionClip(gym.spaces.Box(-2.0, 2.0, (1,), np.float32))
        >>> clip(torch.tensor([[3.0], [-0.5]])).flatten().tolist()
        [2.0, -0.5]
    """

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, action_space: gym.Space) -> None:
        super().__init__()
        box = action_space if isinstance(action_space, gym.spaces.Box) else None
        self.enabled = box is not None
        low = np.asarray(box.low if box is not None else [-math.inf], np.float32)
        high = np.asarray(box.high if box is not None else [math.inf], np.float32)
        self.register_buffer("low", torch.from_numpy(low.copy()))
        self.register_buffer("high", torch.from_numpy(high.copy()))

    def forward(self, action: torch.Tensor) -> torch.Tensor:
        return torch.clamp(action, self.low, self.high) if self.enabled else action


def default_export_path(run_dir: str | Path, fmt: str, checkpoint: str) -> Path:
    """``run_dir/policy-<checkpoint>.<suffix>``: where ``ppokit export`` writes by default.

    Example:
        >>> default_export_path("runs/a", "onnx", "best").as_posix()
        'runs/a/policy-best.onnx'
    """
    stem = Path(checkpoint).stem if checkpoint.endswith(".pt") else checkpoint
    return Path(run_dir) / f"policy-{stem}{FORMATS[fmt]}"


def _example(obs_norm: ObservationNormalizer) -> torch.Tensor:
    shape = tuple(obs_norm.rms.mean.shape)
    return torch.zeros((2, *shape), dtype=torch.float32)


def export_policy(
    run_dir: str | Path, fmt: str, out: str | Path, *, checkpoint: str = "latest"
) -> Path:
    """Write ``run_dir``'s ``checkpoint`` policy as ``fmt`` (a key of :data:`FORMATS`) to ``out``.

    Raises:
        ValueError: an unknown format or an actor that cannot be exported.
        FileNotFoundError: no such run dir or checkpoint.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}; expected one of {sorted(FORMATS)}.")
    from ppokit.train.deploy.policy import load_policy

    actor, obs_norm, cfg = load_policy(run_dir, checkpoint=checkpoint)
    # a --precision bfloat16 run's CNN is exported in float32: its weights are float32 (the
    # master copy autocast read from), and runtimes without bfloat16 units can run it
    for layer in actor.modules():
        if isinstance(layer, NatureCNN):
            layer.compute_dtype = None
    probe = gym.make(cfg.env, **(cfg.env_kwargs or {}))
    try:
        space = probe.action_space
    finally:
        probe.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if PolicyState.for_modules(actor, batch=1) is not None:  # the state as inputs/outputs
        from ppokit.train.recurrent.export import RecurrentDeployedPolicy, export_recurrent

        policy = RecurrentDeployedPolicy(actor, obs_norm, action_space=space)
        return export_recurrent(policy, _example(obs_norm), fmt, out)
    module = DeployedPolicy(actor, obs_norm, action_space=space).eval()
    example = _example(obs_norm)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        if fmt == "onnx":
            torch.onnx.export(
                module,
                (example,),
                str(out),
                dynamo=True,
                input_names=["observation"],
                output_names=["action"],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
            return out
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        if fmt == "exported-program":
            torch.export.save(program, str(out))
        else:
            traced = torch.jit.trace(program.module(), (example,), check_trace=False)
            torch.jit.save(traced, str(out))
    return out


def load_exported(path: str | Path) -> Any:
    """The callable ``obs -> action`` of a ``.pt2`` or TorchScript file (ONNX: onnxruntime).

    Example:
        >>> load_exported("policy.onnx")
        Traceback (most recent call last):
        ...
        ValueError: policy.onnx is an ONNX file: run it with onnxruntime.InferenceSession.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        raise ValueError(f"{path} is an ONNX file: run it with onnxruntime.InferenceSession.")
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    return torch.jit.load(str(path))
