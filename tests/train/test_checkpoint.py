"""Checkpoint files: round trip, atomic replace, foreign/corrupt/untrusted files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from ppokit.train.records.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)


def test_round_trip_keeps_tensors_and_python_values(tmp_path):
    state = {
        "w": torch.arange(6.0).reshape(2, 3),
        "step": 7,
        "lr": 2.5e-4,
        "nested": {"a": [1, 2], "b": None, "t": (3, "x")},
    }
    path = save_checkpoint(state, tmp_path / "ck" / "latest.pt")
    back = load_checkpoint(path)
    assert back["format"] == FORMAT and back["version"] == VERSION
    assert torch.equal(back["w"], state["w"])
    assert back["step"] == 7 and back["lr"] == 2.5e-4
    assert back["nested"] == {"a": [1, 2], "b": None, "t": (3, "x")}
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]  # no temp file left


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1}, tmp_path / "latest.pt")

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


def test_foreign_torch_file_is_rejected(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, path)
    with pytest.raises(CheckpointError, match="not a ppokit checkpoint"):
        load_checkpoint(path)
    torch.save(torch.ones(3), path)
    with pytest.raises(CheckpointError, match="not a ppokit checkpoint"):
        load_checkpoint(path)


def test_corrupted_and_truncated_files_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="not a readable ppokit checkpoint"):
        load_checkpoint(garbage)
    good = save_checkpoint({"w": torch.ones(1000)}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable ppokit checkpoint"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable ppokit checkpoint"):
        load_checkpoint(empty)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused_not_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": VERSION, "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match="not a readable ppokit checkpoint"):
        load_checkpoint(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"format": FORMAT}))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)


def test_other_version_is_rejected(tmp_path):
    path = tmp_path / "v9.pt"
    torch.save({"format": FORMAT, "version": 9}, path)
    with pytest.raises(CheckpointError, match="version 9; this ppokit reads version 1"):
        load_checkpoint(path)
