"""The run directory: checked before any work, locked while a run uses it, written safely.

- :func:`check_run_dir` refuses a path that is a file, lies inside a file or cannot be
  written, before anything is created (the command line calls it before importing torch).
- :func:`run_dir_lock` / :func:`lock_run_dir` hold an OS file lock (``fcntl.flock`` on
  ``.ppokit.lock``) so a second process training into the same directory is refused; the
  kernel drops the lock when the process dies, so a killed run never leaves it stuck.
- :func:`record_written` appends every file ppokit writes to the manifest ``.ppokit-manifest``;
  ``--overwrite`` deletes exactly those (:func:`remove_written`), never a user's own files.
- :func:`atomic_write_text` replaces a file atomically (temporary file in the same directory,
  ``fsync``, ``os.replace``): a process killed at any instant leaves the old or the new
  content, never a truncated file. :func:`clean_stale_tmp` removes the temporary files such a
  kill leaves behind.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "run"
    >>> check_run_dir(d)
    >>> with run_dir_lock(d):
    ...     atomic_write_text(d / "config.json", "{}\\n")
    ...     record_written(d, "config.json")
    >>> written_files(d), holds_run(d)
    (['config.json'], True)
    >>> remove_written(d); sorted(p.name for p in d.iterdir())
    ['.ppokit.lock']
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "LOCK_NAME",
    "MANIFEST_NAME",
    "RunDirError",
    "atomic_write_text",
    "check_run_dir",
    "checkpoint_path",
    "clean_stale_tmp",
    "foreign_files",
    "holds_run",
    "lock_run_dir",
    "record_written",
    "remove_written",
    "replace_file",
    "run_dir_lock",
    "written_files",
]

MANIFEST_NAME = ".ppokit-manifest"
LOCK_NAME = ".ppokit.lock"
#: the fixed names a run writes: a user's own file under one of them is never overwritten
_FIXED_NAMES = (
    "config.json",
    "progress.csv",
    "summary.json",
    "provenance.jsonl",
    "learning_curve.png",
    "checkpoints/latest.pt",
    "checkpoints/best.pt",
)
#: temporary files of atomic writes, ``.<name>.<random>.tmp`` (see :func:`atomic_write_text`)
_TMP_PATTERNS = (".*.tmp", "checkpoints/.*.tmp")

#: fault-injection hook for tests: called with (temporary file, target) just before
#: ``os.replace``, i.e. at the instant a kill would leave both files on disk
before_replace: Callable[[Path, Path], None] | None = None

_HELD: dict[Path, tuple[int, int]] = {}
# the mode a plain open() would give (mkstemp's files are 0600)
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # resolved run dir -> (lock fd, holders)


class RunDirError(ValueError):
    """A run directory that cannot be used (a file, not writable, in use, foreign files)."""


def check_run_dir(run_dir: str | Path) -> None:
    """Raise :class:`RunDirError` if ``run_dir`` cannot hold a run; creates nothing.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "notes.txt"; _ = f.write_text("x")
        >>> check_run_dir(f / "run")
        Traceback (most recent call last):
        ...
        ppokit.train.records.rundir.RunDirError: --run-dir ... lies inside ... which is a file, ...
    """
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise RunDirError(
            f"--run-dir {str(path)!r} is a file, not a directory; pick another "
            "--run-dir (or move the file away)."
        )
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing != path and existing.exists() and not existing.is_dir():
        raise RunDirError(
            f"--run-dir {str(path)!r} lies inside {str(existing)!r}, which is a "
            "file, so the directory cannot be created; pick another --run-dir."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(
            f"--run-dir {str(path)!r} is not writable ({str(existing)!r} does not "
            "allow this user to create files); pick another --run-dir or fix "
            "its permissions."
        )


def replace_file(tmp: Path, target: Path) -> None:
    """``os.replace(tmp, target)``, after the fault-injection hook :data:`before_replace`."""
    if before_replace is not None:
        before_replace(tmp, target)
    os.replace(tmp, target)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace ``path``'s content with ``text`` atomically (temporary file + ``os.replace``).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.json"
        >>> atomic_write_text(p, "1"); atomic_write_text(p, "2"); p.read_text()
        '2'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        replace_file(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clean_stale_tmp(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files of atomic writes a killed process left; returns them.

    Call it while holding the run dir's lock: no live writer of this run can own them then.
    """
    removed = []
    for pattern in _TMP_PATTERNS:
        for tmp in Path(run_dir).glob(pattern):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


# ------------------------------------------------------------------------------ manifest
def written_files(run_dir: str | Path) -> list[str]:
    """The files (relative to ``run_dir``) that ppokit recorded writing there, in order."""
    path = Path(run_dir) / MANIFEST_NAME
    if not path.is_file():
        return []
    seen: dict[str, None] = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.strip():
            seen[line.strip()] = None
    return list(seen)


def record_written(run_dir: str | Path, *relpaths: str) -> None:
    """Append ``relpaths`` (relative to ``run_dir``) to the manifest, once each.

    Appending (one ``write`` of whole lines) is safe under a kill: earlier lines stay.
    """
    new = [r for r in relpaths if r not in set(written_files(run_dir))]
    if new:
        with open(Path(run_dir) / MANIFEST_NAME, "a") as fh:
            fh.write("".join(f"{r}\n" for r in new))


def holds_run(run_dir: str | Path) -> bool:
    """Whether ppokit has written a run into ``run_dir`` (it has a manifest)."""
    return (Path(run_dir) / MANIFEST_NAME).is_file()


def foreign_files(run_dir: str | Path) -> list[str]:
    """Files under the fixed names a run writes that ppokit did not write (not in the
    manifest); a run would overwrite them."""
    root = Path(run_dir)
    ours = set(written_files(root))
    return [n for n in _FIXED_NAMES if (root / n).exists() and n not in ours]


def remove_written(run_dir: str | Path) -> None:
    """Delete the files of the manifest (only those inside ``run_dir``), then the manifest
    and the sub-directories left empty."""
    root = Path(run_dir).resolve()
    for rel in written_files(root):
        target = (root / rel).resolve()
        if root in target.parents and target.is_file():
            target.unlink()
    (root / MANIFEST_NAME).unlink(missing_ok=True)
    for sub in ("checkpoints", "tb", "videos"):
        with contextlib.suppress(OSError):  # not empty (a user's file) or absent: keep it
            (root / sub).rmdir()


# ------------------------------------------------------------------------------ lock
def lock_run_dir(run_dir: str | Path) -> None:
    """Take the run dir's lock for the rest of this process (created if missing).

    Re-entrant within one process. Raises :class:`RunDirError` when another process holds it.
    """
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    key = root.resolve()
    if key in _HELD:
        fd, holders = _HELD[key]
        _HELD[key] = (fd, holders + 1)
        return
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunDirError(
            f"run dir {str(root)!r} is in use by another ppokit process (pid {owner}); two "
            "runs in one directory would mix their logs and checkpoints. Wait for it to end "
            "(or stop it), or pick another --run-dir."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = (fd, 1)


def unlock_run_dir(run_dir: str | Path) -> None:
    """Release one hold of :func:`lock_run_dir`; the last one frees the lock."""
    key = Path(run_dir).resolve()
    fd, holders = _HELD[key]
    if holders > 1:
        _HELD[key] = (fd, holders - 1)
        return
    del _HELD[key]
    os.close(fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run dir's lock for a ``with`` block (see :func:`lock_run_dir`)."""
    lock_run_dir(run_dir)
    try:
        yield
    finally:
        unlock_run_dir(run_dir)


# ------------------------------------------------------------------------------ checkpoints
#: short names of the checkpoints a run writes
_SHORT = {"latest": "latest.pt", "best": "best.pt"}


def checkpoint_path(run_dir: str | Path, checkpoint: str = "latest") -> Path:
    """The file ``checkpoint`` names in ``run_dir/checkpoints``: ``"latest"``, ``"best"`` or a
    file name there (``"step_4096.pt"``).

    Raises:
        FileNotFoundError: no such file, saying why (``best`` needs ``--eval-every``).

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp())
        >>> (run / "checkpoints").mkdir(); _ = (run / "checkpoints" / "latest.pt").write_text("")
        >>> checkpoint_path(run, "latest").name
        'latest.pt'
        >>> checkpoint_path(run, "best")
        Traceback (most recent call last):
        ...
        FileNotFoundError: No best checkpoint in ...: best.pt is written by training with ...
    """
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / _SHORT.get(checkpoint, checkpoint)
    if path.is_file():
        return path
    if not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(
            f"No checkpoint {str(path)!r}: {str(run_dir)!r} has no checkpoints/; is it a "
            "ppokit run directory?"
        )
    if checkpoint == "best":
        raise FileNotFoundError(
            f"No best checkpoint in {str(run_dir)!r}: best.pt is written by training with "
            "--eval-every N (evaluation during training). Use --checkpoint latest."
        )
    have = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    raise FileNotFoundError(
        f"No checkpoint {str(path)!r}; this run has {have or 'none'} ('latest' and 'best' "
        "name latest.pt and best.pt)."
    )
