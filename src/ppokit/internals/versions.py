"""Which tensordict releases the private-attribute code of :mod:`ppokit.internals` supports."""

from __future__ import annotations

import tensordict

__all__ = ["SUPPORTED_TENSORDICT", "direct_path_supported"]

#: tensordict release series (major, minor) whose private layout this module reproduces
SUPPORTED_TENSORDICT: tuple[tuple[int, int], ...] = ((0, 14), (0, 15))


def direct_path_supported(version: str | None = None) -> bool:
    """Whether the installed tensordict (or ``version``) is one this module was checked on.

    Example:
        >>> direct_path_supported("0.14.3"), direct_path_supported("0.16.0")
        (True, False)
    """
    version = tensordict.__version__ if version is None else version
    parts = version.split(".")
    try:
        series = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return False
    return series in SUPPORTED_TENSORDICT
