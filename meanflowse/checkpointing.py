"""Where a run resumes from, and checkpoint files that are never half-written."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

LAST = "last.ckpt"


class ResumeError(ValueError):
    """A ``ckpt_path`` that names nothing to resume from; the message says what to pass."""


def _last_in(folder: Path) -> Path | None:
    for candidate in (folder / "checkpoints" / LAST, folder / LAST):
        if candidate.is_file():
            return candidate
    return None


def resolve_ckpt_path(value: str | os.PathLike | None, *, run_dir: str | os.PathLike | None = None
                      ) -> Path | None:
    """The checkpoint file ``ckpt_path`` means.

    ``None`` -> no resume. ``last`` -> the newest ``checkpoints/last.ckpt`` among this run's
    folder and its siblings (the other runs of the task). A folder -> its
    ``checkpoints/last.ckpt`` (or ``last.ckpt``). A file -> itself.
    """
    if value is None or str(value) == "":
        return None
    if str(value) == "last":
        if run_dir is None:
            raise ResumeError("ckpt_path=last needs Hydra's run folder; pass a run folder or a "
                              "checkpoint file instead")
        run = Path(run_dir)
        found = [p for p in [_last_in(run), *(_last_in(d) for d in sorted(run.parent.glob("*"))
                                              if d.is_dir() and d != run)] if p is not None]
        if not found:
            raise ResumeError(f"ckpt_path=last: no {LAST} in {run} or beside it in {run.parent}; "
                              "pass ckpt_path=<run folder> or a checkpoint file")
        return max(found, key=lambda p: p.stat().st_mtime)
    path = Path(str(value)).expanduser()
    if path.is_dir():
        last = _last_in(path)
        if last is None:
            raise ResumeError(f"ckpt_path={path}: a folder without checkpoints/{LAST}")
        return last
    if not path.is_file():
        raise ResumeError(f"ckpt_path={path}: no such checkpoint file or run folder")
    return path


def run_dir_of(ckpt: Path) -> Path | None:
    """The run folder a checkpoint lives in (``<run>/checkpoints/x.ckpt``), else None."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place, so a
    run killed while saving leaves the previous ``last.ckpt`` intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if "://" in str(path):  # a remote store (s3://...): no rename semantics to rely on
            return super().save_checkpoint(checkpoint, path)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


class FiniteModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that never ranks a non-finite value.

    Validation logs NaN for a metric it could not measure yet (a placeholder number such as -1
    would be ranked as a real score and could be kept as "best"); a NaN here saves nothing, so
    the best checkpoint is always one whose metric was measured.
    """

    def check_monitor_top_k(self, trainer: Any, current: torch.Tensor | None = None) -> bool:
        if current is not None and not bool(torch.isfinite(torch.as_tensor(current)).all()):
            return False
        return super().check_monitor_top_k(trainer, current)
