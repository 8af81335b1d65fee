"""Files that are never half-written: write a temp file beside the target, then rename it over.

Every writer of the project (checkpoints, enhanced audio, reports, the resample cache, sweep
tables and figures) goes through :func:`atomic_path`, so an interrupted run leaves either the
old file or the new one, and no stray temp file unless the process is killed outright.

The rename alone survives a killed *process*. Surviving a power cut or a node reset also needs
the data on disk before the rename (``fsync=True``): checkpoints ask for it (a resumed run must
find a whole ``last.ckpt``); outputs that can be made again (audio, reports, figures) do not,
because an fsync per file slows an evaluation of many short files for nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _plain_file_mode() -> int:
    """The mode an ordinary ``open(path, "w")`` would give (mkstemp makes 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's) data to disk; the writer may have closed its own handle,
    and an fsync through any descriptor of the file flushes it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block ends without error it replaces ``path``.

    ``suffix`` is the temp file's ending: by default ``path``'s own, so libraries that infer the
    format from the name (soundfile, matplotlib) still do; pass ``".tmp"`` where a folder scan by
    ending must never pick up a temp file left by a killed process. ``fsync``: flush the new
    file before the rename and the folder after it, so the replacement survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix if suffix is None else suffix
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _plain_file_mode())
        if fsync:
            _fsync_path(tmp)
        os.replace(tmp, path)
        if fsync and os.name == "posix":  # the rename itself lives in the folder's entries
            _fsync_path(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str, *, suffix: str | None = None) -> None:
    with atomic_path(path, suffix=suffix) as tmp:
        tmp.write_text(text)


def write_error(path: Path, err: Exception) -> OSError:
    """An OSError that names ``path`` and the likely cause (a full disk: libsndfile and the OS
    report it without the file name), for eval.py to print as one line."""
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    cause = f"{type(err).__name__}: {err}"
    if getattr(err, "errno", None) == errno.ENOSPC or (free is not None and free < 16 * 2**20):
        hint = "free space and rerun: finished files are kept"
        out = OSError(f"{path}: could not be written, the disk is full ({cause}); {hint}")
        out.errno = errno.ENOSPC
        return out
    return OSError(f"{path}: could not be written ({cause})")
