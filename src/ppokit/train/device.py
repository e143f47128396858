"""Where a run computes: ``--device {auto,cpu,cuda}`` resolved once, and the per-step copy of
the environment's observations onto that device.

The environments run on the CPU, so on a GPU every step moves one observation batch to the
device (and the sampled actions back). :class:`HostToDevice` makes that one copy cheap: the
numpy batch is written into a page-locked (pinned) host buffer and copied with
``non_blocking=True``, which lets the transfer overlap with the host work that follows instead
of stalling on a pageable staging copy (PyTorch's "pin_memory" notes). On the CPU it is a view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEVICE_CHOICES",
    "HostToDevice",
    "float_obs",
    "module_device",
    "move_modules",
    "resolve_device",
]

#: the values ``--device`` accepts
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str, *, cuda_available: bool | None = None) -> torch.device:
    """The ``torch.device`` for ``--device name``: ``auto`` picks CUDA when it is available.

    Args:
        name: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
        cuda_available: what to assume about CUDA (default: ``torch.cuda.is_available()``);
            tests pass it to exercise both answers on any machine.

    Raises:
        ValueError: an unknown name, or CUDA asked for on a machine or build without it
            (said before anything is built, with how to fix it).

    Example:
        >>> resolve_device("cpu"), resolve_device("auto", cuda_available=False)
        (device(type='cpu'), device(type='cpu'))
        >>> resolve_device("auto", cuda_available=True)
        device(type='cuda')
        >>> resolve_device("cuda", cuda_available=False)
        Traceback (most recent call last):
        ...
        ValueError: --device cuda was asked for, but CUDA is not available ...
    """
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    kind, _, index = name.partition(":")
    if kind not in DEVICE_CHOICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(
            f"--device must be one of {', '.join(DEVICE_CHOICES)} (or cuda:<index>), got {name!r}."
        )
    if kind == "auto":
        return torch.device("cuda" if available else "cpu")
    if kind == "cuda":
        if not available:
            raise ValueError(
                f"--device {name} was asked for, but CUDA is not available here "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}; "
                f"visible GPUs: {torch.cuda.device_count() if available else 0}). Use "
                "--device cpu (or auto), or install a CUDA build of torch on a machine "
                "with an NVIDIA GPU."
            )
        count = torch.cuda.device_count() if cuda_available is None else None
        if index and count is not None and int(index) >= count:
            raise ValueError(
                f"--device {name}: this machine has {count} CUDA device(s) "
                f"(cuda:0 to cuda:{count - 1})."
            )
    return torch.device(name)


def module_device(module: Any) -> torch.device:
    """The device of ``module``'s first parameter (CPU for a module without parameters).

    Example:
        >>> module_device(nn.Linear(2, 2)), module_device(nn.ReLU())
        (device(type='cpu'), device(type='cpu'))
    """
    if isinstance(module, nn.Module):
        for p in module.parameters():
            return p.device
    return torch.device("cpu")


class HostToDevice:
    """Copy ``[N, *shape]`` numpy batches onto ``device`` through one pinned host buffer.

    On the CPU :meth:`__call__` returns ``torch.from_numpy(array)`` (no copy at all). On a GPU
    the array is written into a page-locked buffer allocated once and copied with
    ``non_blocking=True``; the buffer is reused at the next call, which is safe because the
    caller uses the device tensor (the policy's forward) before the next step, and CUDA runs
    the copy before any kernel queued after it on the same stream.

    Args:
        shape: ``(N, *obs)``: the batch shape of every call.
        dtype: the numpy dtype of the batches (e.g. ``uint8`` for images).
        device: where the tensors go.

    Example:
        >>> mover = HostToDevice((2, 3), np.float32, torch.device("cpu"))
        >>> out = mover(np.ones((2, 3), dtype=np.float32))
        >>> out.device, out.shape, mover.pinned
        (device(type='cpu'), torch.Size([2, 3]), False)
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, device: torch.device) -> None:
        self.device = torch.device(device)
        self.pinned = self.device.type == "cuda"
        self._host: np.ndarray | None = None
        self._host_t: torch.Tensor | None = None
        if self.pinned:
            torch_dtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
            self._host_t = torch.empty(shape, dtype=torch_dtype, pin_memory=True)
            self._host = self._host_t.numpy()

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        """``array`` as a tensor on the device (``[N, *shape]``, same dtype)."""
        if self._host is None or self._host_t is None:
            return torch.from_numpy(array)
        # the previous copy out of the buffer must be done before it is overwritten
        torch.cuda.current_stream(self.device).synchronize()
        self._host[...] = array
        return self._host_t.to(self.device, non_blocking=True)


def move_modules(device: torch.device, *modules: nn.Module) -> None:
    """Move ``modules`` (parameters and buffers) onto ``device`` in place.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> move_modules(torch.device("cpu"), net)
        >>> module_device(net)
        device(type='cpu')
    """
    for module in modules:
        module.to(device)


def float_obs(env: Any) -> bool:
    """False for an env whose observations are images (uint8): those are never normalised.

    Example:
        >>> from types import SimpleNamespace
        >>> float_obs(SimpleNamespace(obs_dtype=torch.uint8)), float_obs(SimpleNamespace())
        (False, True)
    """
    return bool(getattr(env, "obs_dtype", torch.float32).is_floating_point)
