"""Files that are never half-written: write a temp file beside the target, then rename it over.

Every writer of the project (enhanced audio, reports, the resample cache, sweep tables and
figures) goes through :func:`atomic_path`, so an interrupted run leaves either the old file or
the new one, and no stray temp file unless the process is killed outright.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _plain_file_mode() -> int:
    """The mode an ordinary ``open(path, "w")`` would give (mkstemp makes 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block ends without error it replaces ``path``.

    ``suffix`` is the temp file's ending: by default ``path``'s own, so libraries that infer the
    format from the name (soundfile, matplotlib) still do; pass ``".tmp"`` where a folder scan by
    ending must never pick up a temp file left by a killed process.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=path.suffix if suffix is None else suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _plain_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str, *, suffix: str | None = None) -> None:
    with atomic_path(path, suffix=suffix) as tmp:
        tmp.write_text(text)
