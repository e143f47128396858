"""Checkpoint files: plain dicts of tensors and Python scalars, written atomically.

A checkpoint is ``{"format": "ppokit-checkpoint", "version": 1, ...}`` saved with
``torch.save`` and read with ``torch.load(..., weights_only=True)``, so loading one never runs
code. Writes go to a temporary file in the same directory, are flushed to disk, then renamed
over the target with ``os.replace`` (atomic on POSIX): a process killed mid-write (SIGKILL)
leaves the previous checkpoint intact, and a write that fails (full disk, file-size limit)
raises :class:`CheckpointWriteError` naming the file and the cause.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ppokit.train.records.rundir import replace_file

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "CheckpointWriteError",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "ppokit-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable ppokit checkpoint of a supported version.

    Example:
        >>> import tempfile, pathlib
        >>> bad = pathlib.Path(tempfile.mkdtemp()) / "notes.pt"
        >>> _ = bad.write_text("not a checkpoint")
        >>> try:
        ...     load_checkpoint(bad)
        ... except CheckpointError as err:
        ...     print("rejected")
        rejected
    """


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (full disk, file-size limit, I/O error); the previous
    checkpoint at that path is untouched. The message names the file and the cause."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` (plus format and version markers) to ``path`` atomically.

    Raises:
        CheckpointWriteError: the file could not be written (the old one stays as it was).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> p = save_checkpoint({"step": 3, "w": torch.ones(2)}, d / "latest.pt")
        >>> load_checkpoint(p)["step"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        replace_file(Path(tmp), path)
    except (OSError, RuntimeError) as err:
        # torch.save reports a short write as RuntimeError("... unexpected pos ..."), which
        # names neither the file nor the cause: say both
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointWriteError(_write_failure(path, err)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _first_sentence(err: BaseException) -> str:
    # torch's messages run on for several sentences of advice: keep the first one
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    cut = text.find(". ", 40)
    return (text if cut < 0 else text[:cut]).rstrip(".") + "."


def _write_failure(path: Path, err: BaseException) -> str:
    """Name the file and the likeliest cause: torch reports a short write only as
    ``unexpected pos``, so look at the file-size limit and the free space ourselves."""
    import resource

    said = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = -1
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        cause = (
            f"this process may write files of at most {limit:,} bytes (ulimit -f), "
            "too few for the checkpoint; raise the limit"
        )
    elif 0 <= free < 256 * 2**20:
        cause = f"the disk is full ({free / 2**20:,.1f} MiB free there); free space"
    else:
        cause = "an I/O error (see below); check the disk"
    return (
        f"could not write checkpoint {str(path)!r}: {cause}, then continue with "
        f"`ppokit train --resume <run dir>`. The previous checkpoint there is intact. "
        f"({type(err).__name__}: {said})"
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a ppokit checkpoint (foreign or corrupted file, or another
            version), with the reason.

    Example:
        >>> import tempfile, pathlib
        >>> p = save_checkpoint({"step": 7}, pathlib.Path(tempfile.mkdtemp()) / "c.pt")
        >>> state = load_checkpoint(p)
        >>> state["step"], state["format"]
        (7, 'ppokit-checkpoint')
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # torch.load on arbitrary bytes can fail with almost any exception type (a byte that
        # happens to read as a pickle opcode reaches code paths with their own errors);
        # every one of them means the same to the user: this file is not a checkpoint
        raise CheckpointError(
            f"{str(path)!r} is not a readable ppokit checkpoint (corrupted, truncated, or not a "
            f"torch file): {type(err).__name__}: {_first_sentence(err)}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is a torch file but not a ppokit checkpoint (no "
            f"format={FORMAT!r} marker). Pass a file from <run_dir>/checkpoints/."
        )
    version = state.get("version")
    if version != VERSION:
        raise CheckpointError(
            f"{str(path)!r} is a ppokit checkpoint of version {version!r}; this ppokit reads "
            f"version {VERSION}."
        )
    return state
