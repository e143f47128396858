"""Provenance of a run: the git state of the ppokit source, the session log, the sweep column."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ppokit.train.records.provenance import (
    PROVENANCE_NAME,
    git_state,
    read_sessions,
    record_session,
)
from ppokit.train.records.rundir import foreign_files
from ppokit.train.sweep.aggregate import aggregate_sweep
from ppokit.train.sweep.plan import SweepRecord, write_sweep_record

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


@needs_git
def test_git_state_reads_the_commit_and_tracked_changes_only(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "pkg" / "mod.py").write_text("x = 1\n")
    (repo / "results.csv").write_text("1\n")
    _git(repo, "add", "pkg/mod.py", "results.csv")
    _git(repo, "commit", "-q", "-m", "one")
    # the branch ref file, read without git: an independent source of the commit
    head = (repo / ".git" / "refs" / "heads" / "main").read_text().strip()
    assert git_state(repo / "pkg" / "mod.py") == (head, False)
    (repo / "pkg" / "notes.txt").write_text("untracked files do not make it dirty\n")
    assert git_state(repo / "pkg" / "mod.py") == (head, False)
    (repo / "results.csv").write_text("2\n")  # data beside the package: not a code change
    assert git_state(repo / "pkg" / "mod.py") == (head, False)
    (repo / "pkg" / "mod.py").write_text("x = 2\n")
    assert git_state(repo / "pkg" / "mod.py") == (head, True)
    # a file the repository does not track (a wheel unpacked inside someone's checkout)
    assert git_state(repo / "pkg" / "notes.txt") == (None, None)


def test_git_state_is_none_outside_git_and_without_git(tmp_path, monkeypatch):
    (tmp_path / "mod.py").write_text("x = 1\n")
    assert git_state(tmp_path / "mod.py") == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git executable to run
    assert git_state(Path(__file__)) == (None, None)


def test_sessions_append_and_a_cut_line_is_skipped(tmp_path):
    first = record_session(tmp_path, env_steps=0, device="cpu", world_size=1)
    record_session(tmp_path, env_steps=2048, device="cpu", world_size=2)
    with open(tmp_path / PROVENANCE_NAME, "a", encoding="utf-8") as f:
        f.write('{"started_at": "2026-')  # a kill in the middle of a write
    sessions = read_sessions(tmp_path)
    assert [s["env_steps_at_start"] for s in sessions] == [0, 2048]
    assert [s["world_size"] for s in sessions] == [1, 2]
    assert sessions[0] == json.loads(json.dumps(first))
    assert "torch" in first["packages"] and first["torch_threads"] >= 1
    assert read_sessions(tmp_path / "nowhere") == []


def test_a_users_own_provenance_file_is_not_claimed(tmp_path):
    (tmp_path / PROVENANCE_NAME).write_text("mine\n")
    assert foreign_files(tmp_path) == [PROVENANCE_NAME]


def _seed(sweep: Path, seed: int, score: float, commits: list[tuple[str | None, bool]]) -> None:
    run = sweep / f"seed-{seed}"
    run.mkdir(parents=True)
    summary = {"eval_return_mean": score, "eval_return_std": 0.0, "eval_episodes": 2}
    (run / "summary.json").write_text(json.dumps(summary))
    lines = [json.dumps({"code": {"ppokit": "0.9.0", "commit": c, "dirty": d}}) for c, d in commits]
    if lines:
        (run / PROVENANCE_NAME).write_text("\n".join(lines) + "\n")


def test_the_aggregate_names_each_seeds_code_and_flags_a_mix(tmp_path):
    a, b = "a" * 40, "b" * 40
    write_sweep_record(tmp_path, SweepRecord("CartPole-v1", (), (1, 2, 3)))
    _seed(tmp_path, 1, 10.0, [(a, False), (a, False)])  # resumed on the same code: one label
    _seed(tmp_path, 2, 20.0, [(a, False), (b, True)])  # resumed on edited code
    _seed(tmp_path, 3, 30.0, [(None, None)])  # installed from a wheel
    agg = aggregate_sweep(tmp_path)
    assert [s["code"] for s in agg["seeds"]] == [
        ["aaaaaaa"],
        ["aaaaaaa", "bbbbbbb+dirty"],
        ["ppokit 0.9.0"],
    ]
    md = (tmp_path / "aggregate.md").read_text()
    assert "| `aaaaaaa` → `bbbbbbb+dirty` |" in md
    assert "did not all run on the same code" in md


def test_one_commit_for_every_seed_raises_no_flag(tmp_path):
    write_sweep_record(tmp_path, SweepRecord("CartPole-v1", (), (1, 2)))
    _seed(tmp_path, 1, 10.0, [("c" * 40, False)])
    _seed(tmp_path, 2, 20.0, [("c" * 40, False)])
    aggregate_sweep(tmp_path)
    md = (tmp_path / "aggregate.md").read_text()
    assert "| `ccccccc` |" in md and "did not all run" not in md
