"""Whether a device does bfloat16 arithmetic natively, from torch's private CPU probes.

torch has no public question for "does this CPU have bfloat16 instructions": the answers live
in ``torch.cpu._is_avx512_bf16_supported`` and ``torch.cpu._is_amx_tile_supported`` (private,
present in the torch releases of :data:`CHECKED_TORCH`). Where they are missing the answer is
"not known to be native", and a run asking for bfloat16 is refused with that reason rather
than run slowly on emulated arithmetic.
"""

from __future__ import annotations

import torch

__all__ = ["CHECKED_TORCH", "native_bfloat16"]

#: torch release series (major, minor) whose private CPU probes this module was checked on
CHECKED_TORCH: tuple[tuple[int, int], ...] = ((2, 11), (2, 12), (2, 13))


def _torch_series() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def native_bfloat16(device: torch.device | str) -> tuple[bool, str]:
    """(native, what was found): whether ``device`` runs bfloat16 matmuls and convolutions
    in hardware (CUDA: compute capability 8.0 or later; CPU: AVX512-BF16 or AMX).

    Example:
        >>> native, found = native_bfloat16("cpu")
        >>> isinstance(native, bool) and found.startswith("CPU")
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        name = torch.cuda.get_device_name(index)
        return major >= 8, f"CUDA device {name} (compute capability {major}.{minor})"
    if device.type != "cpu":
        return False, f"device type {device.type!r} (not checked)"
    if _torch_series() not in CHECKED_TORCH:
        return False, f"CPU (torch {torch.__version__}: its CPU probes were not checked)"
    probes = {"AVX512-BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}
    found = [name for name, attr in probes.items() if getattr(torch.cpu, attr, lambda: False)()]
    if found:
        return True, f"CPU with {' and '.join(found)}"
    return False, "CPU without AVX512-BF16 or AMX"
