"""``--precision``: the arithmetic of a run's image networks, float32 or bfloat16.

With ``bfloat16`` the Nature CNN trunk (:class:`~ppokit.modules.cnn.NatureCNN`), which is most
of an image policy's cost, runs its convolutions and fully connected layer in bfloat16 under
``torch.autocast``; its weights, their gradients, Adam's state, the heads, the distribution,
the loss and GAE stay float32 (mixed precision, Micikevicius et al. 2018). bfloat16 keeps
float32's exponent range, so no loss scaling is needed. It pays only where the hardware has
bfloat16 units (see :func:`ppokit.internals.hardware.native_bfloat16`); elsewhere it is
refused, since emulated bfloat16 is slower than float32. Flat observations (MLPs) are left to
float32: their small matmuls gain nothing, and a run asking for bfloat16 without a CNN is
refused rather than silently ignored.
"""

from __future__ import annotations

from typing import Any

import torch

from ppokit.internals.hardware import native_bfloat16

__all__ = ["PRECISIONS", "check_precision", "compute_dtype"]

#: the values ``--precision`` accepts -> the CNN's compute dtype (None: float32)
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


def compute_dtype(precision: str) -> torch.dtype | None:
    """The :class:`~ppokit.modules.cnn.NatureCNN` ``compute_dtype`` of ``--precision``.

    Example:
        >>> compute_dtype("float32"), compute_dtype("bfloat16")
        (None, torch.bfloat16)
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    return PRECISIONS[precision]


def check_precision(
    precision: str, device: torch.device, *modules: Any, native: bool | None = None
) -> None:
    """Refuse a ``--precision`` the run cannot honour, before any work, saying why.

    Args:
        precision: ``"float32"`` (always fine) or ``"bfloat16"``.
        device: where the networks run.
        modules: the run's actor and critic; with bfloat16 at least one
            :class:`~ppokit.modules.cnn.NatureCNN` in them must compute in bfloat16.

    Keyword Args:
        native: what to assume about the hardware (default: ask it); tests pass it.

    Raises:
        ValueError: bfloat16 on hardware without native bfloat16, or on networks without a
            bfloat16 CNN (flat observations, or networks the caller built).

    Example:
        >>> from ppokit.modules.cnn import NatureCNN
        >>> cnn = NatureCNN((4, 84, 84), compute_dtype=torch.bfloat16)
        >>> check_precision("bfloat16", torch.device("cpu"), cnn, native=True)
        >>> check_precision("bfloat16", torch.device("cpu"), torch.nn.Linear(2, 2), native=True)
        Traceback (most recent call last):
        ...
        ValueError: --precision bfloat16 applies to the Nature CNN of image observations, ...
    """
    dtype = compute_dtype(precision)
    if dtype is None:
        return
    from ppokit.modules.cnn import NatureCNN

    cnns = [m for module in modules for m in module.modules() if isinstance(m, NatureCNN)]
    if not any(cnn.compute_dtype == dtype for cnn in cnns):
        raise ValueError(
            f"--precision {precision} applies to the Nature CNN of image observations, and "
            "these networks have none computing in it (flat and structured observations use "
            "MLPs and small encoders, which stay float32; networks you pass yourself keep "
            "their own dtype: wrap their forward in torch.autocast). Use --precision float32."
        )
    if native is None:
        native, found = native_bfloat16(device)
    else:
        found = f"this {device.type} device"
    if not native:
        raise ValueError(
            f"--precision {precision}: {found} has no native bfloat16 arithmetic, where it "
            "would run slower than float32. Use --precision float32 (or a GPU of compute "
            "capability 8.0+, or a CPU with AVX512-BF16 or AMX)."
        )
