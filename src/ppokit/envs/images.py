"""Image observations: which ``Box`` spaces ppokit reads as pictures, and their layout.

An image observation is a ``uint8`` ``Box`` of rank 3, channels first (``CHW``, e.g. Atari's
4 stacked 84x84 frames ``(4, 84, 84)``) or channels last (``HWC``, e.g. an RGB render
``(210, 160, 3)``). The channel axis is the short one (at most :data:`MAX_CHANNELS`) and the two
spatial axes are at least :data:`MIN_SIDE` pixels: the smallest picture the Nature CNN's three
convolutions (8/4, 4/2, 3/1) reduce to one pixel. No torch import here: the command line checks
spaces before loading torch.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["MAX_CHANNELS", "MIN_SIDE", "image_layout", "is_image_space"]

#: the most channels an image may have (4 stacked RGB frames: 12)
MAX_CHANNELS = 12
#: the smallest height/width: (36 - 8) / 4 + 1 = 8, (8 - 4) / 2 + 1 = 3, (3 - 3) / 1 + 1 = 1
MIN_SIDE = 36

Layout = Literal["CHW", "HWC"]


def image_layout(shape: tuple[int, ...]) -> Layout:
    """``"CHW"`` or ``"HWC"`` for an image observation of ``shape``.

    Raises:
        ValueError: ``shape`` is not rank 3, or neither or both of its end axes could be the
            channels; the message names the shape and what is accepted.

    Example:
        >>> image_layout((4, 84, 84)), image_layout((210, 160, 3))
        ('CHW', 'HWC')
        >>> image_layout((84, 84))
        Traceback (most recent call last):
        ...
        ValueError: Image observation of shape (84, 84) is not supported; ppokit's CNN ...
    """
    shape = tuple(int(s) for s in shape)
    chw = len(shape) == 3 and shape[0] <= MAX_CHANNELS and min(shape[1:]) >= MIN_SIDE
    hwc = len(shape) == 3 and shape[2] <= MAX_CHANNELS and min(shape[:2]) >= MIN_SIDE
    if chw != hwc:
        return "CHW" if chw else "HWC"
    raise ValueError(
        f"Image observation of shape {shape} is not supported; ppokit's CNN accepts uint8 "
        f"images of rank 3, channels first (C, H, W) or last (H, W, C), with 1 to "
        f"{MAX_CHANNELS} channels and height and width of at least {MIN_SIDE} pixels. "
        "Resize or reorder the observation (gymnasium.wrappers.ResizeObservation, "
        "GrayscaleObservation, FrameStackObservation) or flatten it for an MLP."
    )


def is_image_space(space: Any) -> bool:
    """True for a rank-3 ``uint8`` ``Box`` (layout not yet checked: see :func:`image_layout`).

    Example:
        >>> import numpy as np
        >>> from gymnasium import spaces
        >>> is_image_space(spaces.Box(0, 255, (4, 84, 84), np.uint8))
        True
        >>> is_image_space(spaces.Box(0, 1, (4, 84, 84)))
        False
    """
    from gymnasium import spaces

    return isinstance(space, spaces.Box) and len(space.shape) == 3 and str(space.dtype) == "uint8"
