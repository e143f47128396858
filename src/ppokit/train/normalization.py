"""Running observation normalisation and reward scaling, with checkpointable state.

Both follow the PPO reference implementations (the ``VecNormalize`` of Stable-Baselines3, the
normalisation wrappers CleanRL uses for MuJoCo): statistics in float64 updated with Chan et
al.'s parallel mean/variance merge, observations standardised and clipped, rewards divided by
the running standard deviation of the discounted return (not of the reward: "Implementation
Matters in Deep Policy Gradients", Engstrom et al. 2020). Evaluation uses them frozen.
"""

from __future__ import annotations

import numpy as np
import torch

from ppokit.distributed.stats import merge_moments

__all__ = ["ObservationNormalizer", "RewardScaler", "RunningMeanStd"]


class RunningMeanStd:
    """Running mean and population variance of a stream of ``[B, *shape]`` batches (float64).

    The statistics live in numpy: updated once per environment step on a handful of numbers,
    where numpy's per-call cost is several times lower than torch's.

    Example:
        >>> rms = RunningMeanStd((2,))
        >>> rms.update(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
        >>> rms.mean.round(3).tolist(), rms.var.round(3).tolist()
        ([1.0, 2.0], [1.0, 1.0])
    """

    def __init__(self, shape: tuple[int, ...] = (), *, epsilon: float = 1e-4) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        # a tiny prior count keeps the first update from dividing by zero (as SB3 does)
        self.count = float(epsilon)

    def update(self, batch: torch.Tensor | np.ndarray) -> None:
        """Fold a ``[B, *shape]`` batch into the statistics (rows holding NaN/Inf left out)."""
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1:] != self.mean.shape:
            raise ValueError(
                f"RunningMeanStd of shape {tuple(self.mean.shape)} got a batch of shape "
                f"{tuple(x.shape)}; expected [B, {', '.join(map(str, self.mean.shape))}]."
            )
        if x.shape[0] == 0:
            return
        batch_mean = x.mean(0)
        if not np.isfinite(batch_mean).all():
            # a NaN/Inf from the environment must not poison the statistics (every later
            # value would be NaN and blamed on the wrong step): leave its rows out, and let
            # the trainer report it (ppokit.train.guards)
            x = x[np.isfinite(x.reshape(len(x), -1)).all(1)]
            if x.shape[0] == 0:
                return
            batch_mean = x.mean(0)
        mean, var, self.count = merge_moments(
            self.mean, self.var, self.count, batch_mean, x.var(0), float(x.shape[0])
        )
        self.mean, self.var = np.asarray(mean), np.asarray(var)

    def state_dict(self) -> dict[str, torch.Tensor | float]:
        return {
            "mean": torch.from_numpy(self.mean.copy()),
            "var": torch.from_numpy(self.var.copy()),
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor | float]) -> None:
        mean, var = state["mean"], state["var"]
        if not (isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor)) or (
            tuple(mean.shape) != self.mean.shape or tuple(var.shape) != self.var.shape
        ):
            raise ValueError(
                f"Normaliser state has mean of shape {tuple(getattr(mean, 'shape', ()))}, "
                f"expected {tuple(self.mean.shape)}: the checkpoint is for another environment."
            )
        self.mean = mean.double().numpy().copy()
        self.var = var.double().numpy().copy()
        self.count = float(state["count"])


class ObservationNormalizer:
    """Standardise observations with running statistics, then clip.

    ``normalize(obs, update=True)`` first folds ``obs`` into the statistics (training), then
    maps it; ``update=False`` (evaluation, or a frozen normaliser) only maps it.

    Example:
        >>> norm = ObservationNormalizer((1,), clip=5.0)
        >>> out = norm.normalize(torch.tensor([[0.0], [2.0]]))
        >>> out.squeeze(-1).round(decimals=3).tolist()   # mean 1, std 1 -> -1, +1
        [-1.0, 1.0]
        >>> norm.normalize(torch.tensor([[100.0]]), update=False).item()   # clipped
        5.0
    """

    def __init__(
        self, shape: tuple[int, ...], *, clip: float = 10.0, eps: float = 1e-8, enabled: bool = True
    ) -> None:
        self.rms = RunningMeanStd(shape)
        self.clip = float(clip)
        self.eps = float(eps)
        self.enabled = enabled
        self.frozen = False
        self._refresh()

    def refresh(self) -> None:
        """Re-read ``rms`` after it was changed from outside (e.g. merged across processes)."""
        self._refresh()

    def _refresh(self) -> None:
        # cache float32 mean and 1/std so the per-step map is two fused ops
        self._mean32 = torch.from_numpy(self.rms.mean.astype(np.float32))
        self._inv_std32 = torch.from_numpy(
            (1.0 / np.sqrt(self.rms.var + self.eps)).astype(np.float32)
        )

    def normalize(self, obs: torch.Tensor, *, update: bool = True) -> torch.Tensor:
        """Map ``[B, *shape]`` observations; fold them into the statistics first if ``update``."""
        if not self.enabled:
            return obs
        if update and not self.frozen:
            self.rms.update(obs)
            self._refresh()
        out = (obs - self._mean32) * self._inv_std32
        if update and not bool(torch.isfinite(out.sum())):
            return out  # not clipped: an Inf from the env stays visible to the trainer's check
        return out.clamp_(-self.clip, self.clip)

    def state_dict(self) -> dict[str, object]:
        return {"enabled": self.enabled, "clip": self.clip, "rms": self.rms.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.enabled = bool(state["enabled"])
        self.clip = float(state["clip"])  # type: ignore[arg-type]
        self.rms.load_state_dict(state["rms"])  # type: ignore[arg-type]
        self._refresh()


class RewardScaler:
    """Scale rewards by the running std of each env's discounted return, then clip.

    ``R_t = gamma * R_{t-1} + r_t`` per environment (reset to 0 after an episode ends); the
    variance of ``R`` is tracked and ``r / sqrt(var + eps)`` is returned. The mean is not
    subtracted: shifting rewards would change the optimal policy of tasks with termination.

    Example:
        >>> scaler = RewardScaler(1, gamma=0.0)   # gamma 0: R_t = r_t
        >>> done = torch.tensor([False])
        >>> _ = scaler.scale(torch.tensor([2.0]), done)
        >>> out = scaler.scale(torch.tensor([4.0]), done)   # returns 2, 4: var 1
        >>> round(out.item(), 2)   # 4 / sqrt(1)
        4.0
    """

    def __init__(
        self,
        num_envs: int,
        *,
        gamma: float,
        clip: float = 10.0,
        eps: float = 1e-8,
        enabled: bool = True,
    ) -> None:
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.eps = float(eps)
        self.enabled = enabled

    def scale(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Scale an ``[N]`` reward, given the ``[N]`` bool ``done`` of the same step."""
        if not self.enabled:
            return reward
        self.returns = self.returns * self.gamma + reward.numpy()
        self.rms.update(self.returns)  # leaves a NaN/Inf return out
        bad = ~np.isfinite(self.returns)
        self.returns[done.numpy() | bad] = 0.0
        inv_std = float(1.0 / np.sqrt(self.rms.var + self.eps))
        if bad.any():  # not clipped: the env's NaN/Inf stays visible to the trainer's check
            return reward * inv_std
        return (reward * inv_std).clamp_(-self.clip, self.clip)

    def state_dict(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "rms": self.rms.state_dict(),
            "returns": torch.from_numpy(self.returns.copy()),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.enabled = bool(state["enabled"])
        self.rms.load_state_dict(state["rms"])  # type: ignore[arg-type]
        returns = state["returns"]
        if isinstance(returns, torch.Tensor) and tuple(returns.shape) == self.returns.shape:
            self.returns = returns.double().numpy().copy()
