"""Signals during training: Ctrl-C and SIGTERM ask for a checkpoint, async workers ignore them.

Example:
    >>> import signal
    >>> flag = StopRequest()
    >>> with stop_on_signals(flag):
    ...     signal.raise_signal(signal.SIGTERM)  # handled: the loop would save and stop
    >>> flag.requested, flag.signum == signal.SIGTERM
    (True, True)
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["StopRequest", "sigint_ignored", "stop_on_signals"]


class StopRequest:
    """Set by a signal (or :meth:`request`): the loop checkpoints and stops after an iteration."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None

    def request(self) -> None:
        """Ask for a stop without a signal."""
        self.requested = True

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: SIGINT (Ctrl-C) and SIGTERM (kill, cluster preemption)."""
        if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: abort now
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(
            f"\nppokit: {name} received, saving a checkpoint after this iteration "
            "(press Ctrl-C again to abort without saving)...",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``stop`` inside the block; the old handlers come back after.

    Off the main thread signals cannot be changed: the block runs without handlers.
    """
    previous = {sig: _install(sig, stop.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while forking env workers (they inherit it), then restore the handler.

    Async workers must not see the terminal's Ctrl-C: the parent saves and closes them.
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals cannot be changed, nothing to protect
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _install(sig: int, handler: Any) -> Any:
    """Install ``handler`` for ``sig``; returns the previous one (None off the main thread)."""
    try:
        return signal.signal(sig, handler)
    except ValueError:
        return None
