"""Provenance: which code and which library versions produced a run.

Results compared across seeds or across weeks mean little without the code that made them
(Henderson et al. 2018, "Deep RL that Matters", sec. 6). Each time a run starts or resumes,
rank 0 appends one line to ``provenance.jsonl`` in its run directory: the ppokit version, the
git commit of the ppokit source when it is a git checkout (an editable install) and whether
its tracked files had uncommitted changes, the versions of the libraries that shape the
numbers, Python, the platform, the torch thread count and the device (a change to files
outside the package, such as results committed beside it, does not count as a code change).
A run resumed on other code therefore shows both. ``summary.json`` repeats the code of the
session that finished, and ``ppokit sweep``'s aggregate lists each seed's commits.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> entry = record_session(d, env_steps=0, device="cpu", world_size=1)
    >>> sorted(entry["code"]) == ["commit", "dirty", "ppokit"]
    True
    >>> [e["env_steps_at_start"] for e in read_sessions(d)]
    [0]
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ppokit.train.records.rundir import record_written

__all__ = [
    "PROVENANCE_NAME",
    "code_identity",
    "git_state",
    "read_sessions",
    "record_session",
    "session_entry",
]

PROVENANCE_NAME = "provenance.jsonl"

#: the distributions whose versions can change a run's numbers (those installed are recorded)
_PACKAGES = ("torch", "tensordict", "numpy", "gymnasium", "mujoco", "ale-py", "torchrl")


def git_state(path: str | Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout that tracks the file ``path``.

    ``dirty`` is True when a tracked file in the folder of ``path`` or below differs from the
    commit (untracked files, and files elsewhere in the checkout, do not count). Both are None
    when ``path`` is not a file tracked by git (a wheel in site-packages, even one inside some
    other repository's folder) or git is not installed.

    Example:
        >>> import tempfile
        >>> git_state(Path(tempfile.mkdtemp()) / "x.py")
        (None, None)
    """
    file = Path(path).resolve()

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(file.parent), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )

    try:
        # tracked by a repository, not merely lying inside one
        if git("ls-files", "--error-unmatch", file.name).returncode != 0:
            return None, None
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        # only the package's own folder: data files elsewhere in the checkout are not code
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip(), dirty


def code_identity() -> dict[str, Any]:
    """The ppokit version and the git ``commit`` / ``dirty`` of its source (None off git).

    Example:
        >>> sorted(code_identity())
        ['commit', 'dirty', 'ppokit']
    """
    import ppokit

    commit, dirty = git_state(Path(ppokit.__file__))
    return {"ppokit": ppokit.__version__, "commit": commit, "dirty": dirty}


def _versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def session_entry(*, env_steps: int, device: str, world_size: int) -> dict[str, Any]:
    """One ``provenance.jsonl`` line for a session starting at ``env_steps``."""
    return {
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "env_steps_at_start": int(env_steps),
        "code": code_identity(),
        "packages": _versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "world_size": int(world_size),
        "argv": list(sys.argv),
    }


def record_session(
    run_dir: str | Path, *, env_steps: int, device: str, world_size: int
) -> dict[str, Any]:
    """Append this session's entry to ``run_dir/provenance.jsonl`` and return it."""
    entry = session_entry(env_steps=env_steps, device=device, world_size=world_size)
    root = Path(run_dir)
    record_written(root, PROVENANCE_NAME)
    with open(root / PROVENANCE_NAME, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return entry


def read_sessions(run_dir: str | Path) -> list[dict[str, Any]]:
    """The entries of ``run_dir/provenance.jsonl``, oldest first ([] when there is none).

    A line cut short by a kill mid-write is skipped.
    """
    path = Path(run_dir) / PROVENANCE_NAME
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
