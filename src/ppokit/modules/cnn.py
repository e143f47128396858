"""The Nature DQN convolutional encoder for image observations, with PPO's initialisation.

Mnih et al. (2015) "Human-level control through deep reinforcement learning": three
convolutions (32 filters 8x8 stride 4, 64 4x4 stride 2, 64 3x3 stride 1) and a 512-unit fully
connected layer, ReLU after each. The PPO reference implementations (OpenAI baselines, CleanRL's
``ppo_atari.py``; Huang et al. 2022, "The 37 Implementation Details of PPO", details 2 and 5 of
the Atari list) initialise every layer orthogonally with gain sqrt(2) and zero biases, the
policy head with gain 0.01 and the value head with gain 1, and feed the network ``uint8``
pixels divided by 255: the rollout keeps the bytes (4x smaller than float32) and the scaling
happens here, on whatever device the network lives on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal, cast

import torch
from torch import nn

from ppokit.internals.versions_of import tensor_versions

CL = torch.channels_last

__all__ = ["NatureCNN", "ReuseNextStep", "SharedTrunk", "one_trunk_pass", "orthogonal_linear"]

# the SharedTrunks that kept an output inside the current one_trunk_pass() block (else None)
_PASS: ContextVar[list[SharedTrunk] | None] = ContextVar("ppokit_one_trunk_pass", default=None)


@contextlib.contextmanager
def one_trunk_pass() -> Iterator[None]:
    """Inside this block a :class:`SharedTrunk` runs once for the actor and the critic, even
    without gradients (a collector acting and recording values on the same observations).

    Without gradients the trunk keeps no output outside such a block (an evaluation loop may
    refill the same buffer in place, which changes no version counter); at the block's end
    every output kept is dropped.

    Example:
        >>> trunk = SharedTrunk(nn.Linear(3, 2))
        >>> x = torch.ones(4, 3)
        >>> with torch.no_grad(), one_trunk_pass():
        ...     first, second = trunk(x), trunk(x)
        ...     _ = trunk(x)  # kept until the block ends
        >>> second is first, trunk(x) is first
        (True, False)
    """
    kept: list[SharedTrunk] = []
    token = _PASS.set(kept)
    try:
        yield
    finally:
        _PASS.reset(token)
        for trunk in kept:
            trunk.forget()


def orthogonal_linear(in_features: int, out_features: int, *, gain: float) -> nn.Linear:
    """``nn.Linear`` with orthogonal weights of ``gain`` and zero bias.

    Example:
        >>> layer = orthogonal_linear(512, 4, gain=0.01)
        >>> float(layer.bias.abs().sum()), layer.weight.shape
        (0.0, torch.Size([4, 512]))
    """
    layer = nn.Linear(in_features, out_features)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class NatureCNN(nn.Module):
    """``uint8`` images ``[*B, C, H, W]`` (or ``[*B, H, W, C]``) -> features ``[*B, 512]``.

    Args:
        image_shape: one observation's shape, in ``layout`` order (e.g. ``(4, 84, 84)``).

    Keyword Args:
        layout: ``"CHW"`` (channels first) or ``"HWC"`` (channels last: permuted here).
        features: width of the fully connected layer (512 in the Nature network).
        scale: what the pixels are multiplied by before the first convolution (1/255 maps
            bytes to ``[0, 1]``).
        compute_dtype: ``None`` (float32 throughout) or ``torch.bfloat16``: the convolutions
            and the fully connected layer run under ``torch.autocast`` in bfloat16 (mixed
            precision: the weights, their gradients and the output stay float32). Worth it
            where the hardware has native bfloat16 (CUDA GPUs since Ampere, CPUs with
            AVX512-BF16 or AMX); :mod:`ppokit.train.precision` checks that for a run.

    Any number of leading batch dimensions is accepted (``[N, T, C, H, W]`` from a rollout).

    Example:
        >>> cnn = NatureCNN((4, 84, 84))
        >>> cnn(torch.zeros(2, 3, 4, 84, 84, dtype=torch.uint8)).shape
        torch.Size([2, 3, 512])
        >>> NatureCNN((84, 84, 3), layout="HWC")(torch.zeros(5, 84, 84, 3)).shape
        torch.Size([5, 512])
        >>> NatureCNN((4, 84, 84), compute_dtype=torch.bfloat16)(torch.zeros(1, 4, 84, 84)).dtype
        torch.float32
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        *,
        layout: Literal["CHW", "HWC"] = "CHW",
        features: int = 512,
        scale: float = 1.0 / 255.0,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if layout not in ("CHW", "HWC") or len(image_shape) != 3:
            raise ValueError(
                f"NatureCNN needs a rank-3 image_shape with layout 'CHW' or 'HWC', got "
                f"image_shape={tuple(image_shape)}, layout={layout!r}."
            )
        # float16 would need loss scaling against underflowing gradients; bfloat16 has
        # float32's exponent range and needs none (Kalamkar et al. 2019, "A Study of BFLOAT16
        # for Deep Learning Training")
        if compute_dtype not in (None, torch.bfloat16):
            raise ValueError(
                f"NatureCNN's compute_dtype must be None (float32) or torch.bfloat16, got "
                f"{compute_dtype}."
            )
        self.compute_dtype = compute_dtype
        c, h, w = image_shape if layout == "CHW" else (image_shape[2], *image_shape[:2])
        self.image_shape = tuple(int(s) for s in image_shape)
        self.layout = layout
        self.scale = float(scale)
        gain = math.sqrt(2.0)  # ReLU's gain
        convs = [nn.Conv2d(c, 32, 8, stride=4), nn.Conv2d(32, 64, 4, stride=2)]
        convs.append(nn.Conv2d(64, 64, 3, stride=1))
        for conv in convs:
            nn.init.orthogonal_(conv.weight, gain)
            nn.init.zeros_(cast(torch.Tensor, conv.bias))  # built with a bias
            # channels-last filters (and images, in forward): oneDNN's and cuDNN's faster layout
            conv.weight = nn.Parameter(conv.weight.detach().contiguous(memory_format=CL))
        self.convs = nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU(), convs[2], nn.ReLU())
        with torch.no_grad():
            flat = int(self.convs(torch.zeros(1, c, h, w)).numel())
        self.fc = orthogonal_linear(flat, features, gain=gain)
        self.out_features = features

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if tuple(obs.shape[-3:]) != self.image_shape:
            raise ValueError(
                f"NatureCNN built for images {self.image_shape} ({self.layout}) got a batch "
                f"of shape {tuple(obs.shape)}; expected [*batch, "
                f"{', '.join(map(str, self.image_shape))}]."
            )
        batch = obs.shape[:-3]
        x = obs.reshape(-1, *self.image_shape).float() * self.scale
        if self.layout == "HWC":
            x = x.permute(0, 3, 1, 2)  # an HWC batch already is channels-last in memory
        # with a compute dtype the layers run in bfloat16 (float32 accumulation) and the
        # features come back in float32 (.float() is a no-op on float32)
        precision = (
            contextlib.nullcontext()
            if self.compute_dtype is None
            else torch.autocast(x.device.type, dtype=self.compute_dtype)
        )
        with precision:
            out = torch.relu(self.fc(self.convs(x.contiguous(memory_format=CL)).flatten(1)))
        return out.float().reshape(*batch, self.out_features)


class SharedTrunk(nn.Module):
    """A trunk used by both the actor and the critic, run once when both read the same batch.

    A PPO loss calls the actor and then the critic on the same minibatch; with one shared
    trunk that would run the CNN (most of the cost) twice. While gradients are on, this keeps
    the last output for one more call with the same input: same memory, shape, strides and
    dtype, and neither the input nor any trunk parameter written in place since (their version
    counters, which an optimizer step increments). The second call returns that output, so the
    two heads' losses flow back through one graph, as in SB3's and CleanRL's shared networks.
    The memo is dropped after its one reuse, and never kept without gradients (acting, GAE)
    except inside :func:`one_trunk_pass` (a collector's act-then-value pair on one batch).

    Args:
        trunk: the shared network, e.g. :class:`NatureCNN`.

    Example:
        >>> trunk = SharedTrunk(nn.Linear(3, 2))
        >>> x = torch.ones(4, 3)
        >>> first, second, third = trunk(x), trunk(x), trunk(x)
        >>> second is first, third is first  # one reuse, then computed again
        (True, False)
    """

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.out_features = getattr(trunk, "out_features", None)
        self._memo: tuple[tuple, torch.Tensor] | None = None
        self._traced_memo: tuple[torch.Tensor, torch.Tensor] | None = None

    def _key(self, obs: torch.Tensor) -> tuple:
        params = [obs, *self.trunk.parameters()]
        return (
            obs.data_ptr(),
            tuple(obs.shape),
            obs.stride(),
            obs.dtype,
            obs.device,
            tensor_versions(params),
        )

    def _traced(self, obs: torch.Tensor) -> torch.Tensor:
        # inside one compiled training graph (a fused update: the actor, then the critic on
        # the same batch) nothing writes the input in place: the same tensor object is the
        # same batch, and the critic's call takes the memo, so none outlives the graph
        memo, self._traced_memo = self._traced_memo, None
        if memo is not None and memo[0] is obs:
            return memo[1]
        out = self.trunk(obs)
        self._traced_memo = (obs, out)
        return out

    def forget(self) -> None:
        """Drop the kept output (if any)."""
        self._memo = None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # a training graph reuses; an acting graph runs
            return self._traced(obs) if torch.is_grad_enabled() else self.trunk(obs)
        kept = _PASS.get()
        if obs.is_inference() or (kept is None and not torch.is_grad_enabled()):
            self._memo = None
            return self.trunk(obs)
        key = self._key(obs)
        memo, self._memo = self._memo, None
        if memo is not None and memo[0] == key:
            return memo[1]
        out = self.trunk(obs)
        self._memo = (key, out)
        if kept is not None:
            kept.append(self)
        return out


class ReuseNextStep(nn.Module):
    """Run ``net`` once per distinct frame of a ``[2, N, T, *obs]`` GAE batch (no gradient).

    A value estimator asks for ``V(s_t)`` and ``V(s_{t+1})`` in one call on the observations
    and the next observations stacked along a new leading dim. Within an episode the next
    observation of step ``t`` *is* the observation of step ``t + 1``, so for images (where the
    network is most of the cost) this compares the frames and runs ``net`` on the
    ``N * T`` observations plus only those next observations that differ (episode ends and
    the last step), copying the rest: half the work of a rollout's value pass. Exact: a value
    is reused only for byte-identical inputs. Any other call (gradients on, another shape)
    runs ``net`` as it is.

    Args:
        net: maps ``[B, *obs]`` to ``[B, out]``.
        obs_dims: the number of observation dims (3 for images).

    Example:
        >>> net = ReuseNextStep(nn.Linear(3, 1), obs_dims=1)
        >>> obs = torch.randn(2, 5, 3)          # N = 2 envs, T = 5 steps
        >>> nxt = torch.roll(obs, -1, dims=1)   # next obs = obs at t + 1 ...
        >>> nxt[:, -1] = torch.randn(2, 3)      # ... except after the last step
        >>> with torch.no_grad():
        ...     out = net(torch.stack([obs, nxt]))
        ...     ref = net.net(torch.stack([obs, nxt]))
        >>> out.shape, bool(torch.allclose(out, ref))
        (torch.Size([2, 2, 5, 1]), True)
    """

    def __init__(self, net: nn.Module, *, obs_dims: int = 3) -> None:
        super().__init__()
        self.net = net
        self.obs_dims = obs_dims

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        batch = obs.shape[: obs.dim() - self.obs_dims]
        if torch.is_grad_enabled() or len(batch) != 3 or batch[0] != 2 or batch[2] < 2:
            return self.net(obs)
        root, nxt = obs[0], obs[1]  # [N, T, *obs]
        n, t = batch[1], batch[2]
        frame = obs.shape[len(batch) :]
        # next obs at t equals obs at t + 1 (same episode): reuse V(obs[t + 1])
        same = (nxt[:, :-1] == root[:, 1:]).flatten(2).all(-1)  # [N, T - 1]
        value = self.net(root.reshape(n * t, *frame)).reshape(n, t, -1)
        next_value = torch.empty_like(value)
        next_value[:, :-1] = value[:, 1:]
        fresh = torch.ones(n, t, dtype=torch.bool, device=obs.device)
        fresh[:, :-1] = ~same
        if bool(fresh.any()):
            next_value[fresh] = self.net(nxt[fresh])
        return torch.stack([value, next_value])
