"""Issue #15 (training side): the run dir. Atomic replacement of every rewritten file (a kill
between write and replace loses nothing), one process per run dir, ``--overwrite`` deleting
only what ppokit wrote, and the temporary files of a killed write cleaned at the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppokit.train.cli.main import main
from ppokit.train.records import rundir
from ppokit.train.records.checkpoint import load_checkpoint
from ppokit.train.records.metrics import read_progress_csv

FAST = ["--total-steps", "256", "--eval-episodes", "0", "--no-progress"]

# runs `ppokit` with a hook that SIGKILLs the process the instant before os.replace puts a
# new version of the file named argv[1] in place: the worst moment for a rewrite
_KILL_AT_REPLACE = """
import os, signal, sys
from ppokit.train.records import rundir
from ppokit.train.cli.main import main

def kill(tmp, target):
    if target.name == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)

rundir.before_replace = kill
sys.exit(main(sys.argv[2:]))
"""


def _killed_at_replace(name: str, argv: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AT_REPLACE, name, *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc


def test_a_kill_while_resume_rewrites_config_json_or_progress_csv_loses_nothing(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--checkpoint-every", "1", "--run-dir", str(run)]) == 0
    config_before = (run / "config.json").read_text()
    rows_before = read_progress_csv(run / "progress.csv")
    assert len(rows_before) == 1
    for name in ("config.json", "progress.csv"):
        _killed_at_replace(
            name, ["train", "--resume", str(run), "--total-steps", "512", "--no-progress"]
        )
        assert (run / "config.json").read_text() in (
            config_before,
            config_before.replace("256", "512"),
        )
        json.loads((run / "config.json").read_text())
        assert read_progress_csv(run / "progress.csv") == rows_before
        assert list(run.glob(f".{name}.*.tmp"))  # what the kill left ...
    # ... is cleaned at the next start, which resumes normally
    assert (
        main(
            [
                "train",
                "--resume",
                str(run),
                "--total-steps",
                "512",
                "--no-progress",
                "--eval-episodes",
                "1",
            ]
        )
        == 0
    )
    assert not list(run.glob(".*.tmp"))
    assert [r["env_steps"] for r in read_progress_csv(run / "progress.csv")] == [256, 512]


def test_a_kill_mid_checkpoint_keeps_latest_and_the_tmp_is_cleaned(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    before = load_checkpoint(run / "checkpoints" / "latest.pt")
    _killed_at_replace(
        "latest.pt", ["train", "--resume", str(run), "--total-steps", "512", "--no-progress"]
    )
    left = list((run / "checkpoints").glob(".latest.pt.*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size > 1000
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["env_steps"] == before["env_steps"]
    assert (
        main(
            [
                "train",
                "--resume",
                str(run),
                "--total-steps",
                "512",
                "--no-progress",
                "--eval-episodes",
                "0",
            ]
        )
        == 0
    )
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["env_steps"] == 512


def test_a_kill_while_writing_summary_json_keeps_the_old_one(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    old = (run / "summary.json").read_text()
    _killed_at_replace(
        "summary.json",
        [
            "train",
            "--resume",
            str(run),
            "--total-steps",
            "512",
            "--no-progress",
            "--eval-episodes",
            "0",
        ],
    )
    assert (run / "summary.json").read_text() == old


def test_atomic_write_text_hook_sees_both_files(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    seen = []

    def hook(tmp: Path, dst: Path) -> None:
        seen.append((tmp.read_text(), dst.read_text()))
        raise KeyboardInterrupt  # interrupted between write and replace

    rundir.before_replace = hook
    try:
        with pytest.raises(KeyboardInterrupt):
            rundir.atomic_write_text(target, "new")
    finally:
        rundir.before_replace = None
    assert seen == [("new", "old")] and target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # tmp removed


_LONG_RUN = ["train", "--total-steps", "10000000", "--eval-episodes", "0", "--no-progress"]


def test_a_second_process_in_the_same_run_dir_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "ppokit", *_LONG_RUN, "--run-dir", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "latest.pt").exists():  # it is training
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        rows = len(read_progress_csv(run / "progress.csv"))
        assert main(["train", "--resume", str(run), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "is in use by another ppokit process" in err and f"pid {first.pid}" in err
        assert main(["train", *FAST, "--run-dir", str(run), "--overwrite"]) == 2
        assert "in use" in capsys.readouterr().err
        assert (run / "checkpoints" / "latest.pt").exists()  # nothing deleted
        assert len(read_progress_csv(run / "progress.csv")) >= rows
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # the lock died with the process: the run can be continued now
    assert (
        main(
            [
                "train",
                "--resume",
                str(run),
                "--total-steps",
                "1",
                "--no-progress",
                "--eval-episodes",
                "0",
            ]
        )
        == 0
    )


def test_overwrite_deletes_only_what_ppokit_wrote(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--keep-checkpoint-every", "1", "--run-dir", str(run)]) == 0
    written = rundir.written_files(run)
    assert {
        "config.json",
        "progress.csv",
        "checkpoints/latest.pt",
        "checkpoints/step_256.pt",
    } <= set(written)
    assert any(w.startswith("tb/events.out.tfevents.") for w in written)
    (run / "checkpoints" / "my_model.bin").write_bytes(b"mine")
    (run / "tb" / "notes.txt").write_text("mine")
    (run / "notes.md").write_text("mine")
    assert (
        main(["train", *FAST, "--run-dir", str(run), "--overwrite", "--keep-checkpoint-every", "0"])
        == 0
    )
    assert (run / "checkpoints" / "my_model.bin").read_bytes() == b"mine"
    assert (run / "tb" / "notes.txt").read_text() == "mine"
    assert (run / "notes.md").read_text() == "mine"
    assert not (run / "checkpoints" / "step_256.pt").exists()  # the old run's, removed
    assert (run / "checkpoints" / "latest.pt").exists()


def test_a_folder_of_foreign_files_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text('{"my": "settings"}')
    (folder / "checkpoints" / "latest.pt").write_bytes(b"my weights")
    for extra in ([], ["--overwrite"]):
        assert main(["train", *FAST, "--run-dir", str(folder), *extra]) == 2
        err = capsys.readouterr().err
        assert "already holds a run" not in err
        assert "config.json, checkpoints/latest.pt, which ppokit did not write" in err
        assert "not a ppokit run" in err
    assert (folder / "config.json").read_text() == '{"my": "settings"}'
    assert (folder / "checkpoints" / "latest.pt").read_bytes() == b"my weights"
    # other files do not stand in the way: a run may share a folder with them
    other = tmp_path / "notes_only"
    other.mkdir()
    (other / "README.txt").write_text("mine")
    assert main(["train", *FAST, "--run-dir", str(other)]) == 0
    assert (other / "README.txt").read_text() == "mine"


def test_the_manifest_lists_eval_videos_and_plots(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    assert main(["plot", str(run)]) == 0
    assert "learning_curve.png" in rundir.written_files(run)
    assert main(["train", *FAST, "--run-dir", str(run), "--overwrite"]) == 0
    assert not (run / "learning_curve.png").exists()


def test_run_dir_lock_is_reentrant_and_released(tmp_path):
    run = tmp_path / "run"
    with rundir.run_dir_lock(run), rundir.run_dir_lock(run):
        probe = os.open(run / rundir.LOCK_NAME, os.O_RDWR)
        import fcntl

        with pytest.raises(BlockingIOError):  # another open file description: refused
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(probe)
    probe = os.open(run / rundir.LOCK_NAME, os.O_RDWR)
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(probe)
