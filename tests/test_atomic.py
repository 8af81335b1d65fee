"""The one atomic writer every output goes through."""
import os

import pytest

from meanflowse.atomic import atomic_path, write_text_atomic


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
