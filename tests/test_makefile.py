"""`make clean` keeps the user's runs; only `make clean-outputs` deletes them, saying what."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _copy_makefile(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "outputs" / "demo" / "checkpoints").mkdir(parents=True)
    (tmp_path / "outputs" / "demo" / "checkpoints" / "last.ckpt").write_text("weights")
    (tmp_path / "outputs" / ".gitkeep").write_text("")
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    return tmp_path


def test_clean_removes_caches_and_keeps_outputs(tmp_path):
    root = _copy_makefile(tmp_path)
    subprocess.run(["make", "-s", "clean"], cwd=root, check=True, capture_output=True)
    assert (root / "outputs" / "demo" / "checkpoints" / "last.ckpt").read_text() == "weights"
    assert not (root / "pkg" / "__pycache__").exists()


def test_clean_outputs_names_what_it_deletes(tmp_path):
    root = _copy_makefile(tmp_path)
    out = subprocess.run(
        ["make", "-s", "clean-outputs"], cwd=root, check=True, capture_output=True, text=True
    ).stdout
    assert "deleting outputs/demo" in out
    assert not (root / "outputs" / "demo").exists()
    assert (root / "outputs" / ".gitkeep").exists()  # the tracked placeholder stays


def test_no_other_target_runs_clean_outputs():
    text = (ROOT / "Makefile").read_text()
    users = [
        line
        for line in text.splitlines()
        if "clean-outputs" in line and not line.startswith((".PHONY", "clean-outputs:"))
    ]
    assert users == []
