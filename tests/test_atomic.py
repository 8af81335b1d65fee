"""The one atomic writer every output, checkpoints included, goes through."""

import os
import pickle

import pytest
import torch

from meanflowse.atomic import atomic_path, write_text_atomic
from meanflowse.training.checkpointing import AtomicCheckpointIO


def test_replaces_the_target_with_a_plain_file_mode(tmp_path):
    target = tmp_path / "sub" / "report.json"
    write_text_atomic(target, "new")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert sorted(os.listdir(target.parent)) == ["report.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.wav"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".wav"
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.wav"]


def test_suffix_can_hide_the_temp_from_scans_by_ending(tmp_path):
    with atomic_path(tmp_path / "cached.wav", suffix=".tmp") as tmp:
        assert tmp.suffix == ".tmp" and tmp.name.startswith(".cached.wav.")
        tmp.write_text("x")
    assert (tmp_path / "cached.wav").read_text() == "x"


@pytest.fixture
def fsyncs(monkeypatch):
    """Records every os.fsync (and does it, so the file is still written for real)."""
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    return calls


def test_fsync_only_when_asked(tmp_path, fsyncs):
    write_text_atomic(tmp_path / "report.json", "x")
    assert fsyncs == []  # outputs that can be made again: no fsync per file
    with atomic_path(tmp_path / "state.bin", fsync=True) as tmp:
        tmp.write_bytes(b"y")
    assert len(fsyncs) == 2  # the new file before the rename, the folder after it
    assert (tmp_path / "state.bin").read_bytes() == b"y"


def test_a_failed_fsync_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")

    def broken(fd):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        with atomic_path(target, fsync=True) as tmp:
            tmp.write_bytes(b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.bin"]


def test_checkpoints_go_through_the_same_writer_with_fsync(tmp_path, fsyncs):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    assert len(fsyncs) == 2
    # pickle names a local lambda unpicklable with PicklingError or AttributeError (by version)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        io.save_checkpoint({"step": torch.tensor(2), "bad": lambda: None}, path)  # unpicklable
    assert torch.load(path, weights_only=True)["step"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]
