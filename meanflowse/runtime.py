"""Process-wide CPU settings that the entry points apply before any work.

glibc's malloc gives every block above its mmap threshold (which adapts, up to 32 MiB) its own
fresh mapping and unmaps it on free. A large network's activations are such blocks, so every
forward pass has the kernel page-fault and zero them again: on the 2-core CPU that was 0.8 s of
a 3.6 s full NCSN++ forward (BENCHMARKS.md section 2). Serving them from the heap and keeping
freed memory for reuse removes that cost, at the price of the process holding on to up to
``TRIM_THRESHOLD`` bytes it no longer uses.

Scope: the allocator belongs to the whole process, so only the command-line entry points
(train.py, eval.py, sweep.py, the benchmarks) call :func:`apply_cpu_memory_setting`; the library
(``train()``, ``Enhancer``, ``evaluate()``) never does. And it stays in the process that asked:
a forked child (a DataLoader worker) goes back to glibc's defaults, since workers only read and
crop audio (small blocks, nothing to gain) and each would otherwise keep up to
``TRIM_THRESHOLD`` of freed memory of its own.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
from typing import Any

import torch

from meanflowse.config import ConfigError

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters from glibc's malloc.h
TRIM_THRESHOLD = 2**31 - 1  # free memory kept at the top of the heap (mallopt takes a C int)
RETAINED = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
# glibc's own defaults (DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD). Setting them back leaves the
# mmap threshold fixed where it was instead of adapting, which is what a fresh process starts with.
GLIBC_DEFAULTS = ((M_MMAP_MAX, 65536), (M_TRIM_THRESHOLD, 128 * 1024))

_retained = False  # whether this process (not a parent it was forked from) retains memory


@functools.cache
def _libc_mallopt() -> Any:
    """glibc's ``mallopt``, looked up once, so a forked child only calls it (no dlopen after a
    fork); None where the C library is not glibc."""
    if platform.system() != "Linux":
        return None
    try:
        fn = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


def _mallopt(settings: tuple[tuple[int, int], ...]) -> bool:
    """The one caller of glibc's ``mallopt``: apply ``(parameter, value)`` pairs; False where
    the C library is not glibc or glibc refuses one."""
    fn = _libc_mallopt()
    return fn is not None and all(fn(param, value) == 1 for param, value in settings)


def retain_freed_memory() -> bool:
    """Make glibc serve large blocks from the heap and keep what is freed, in this process
    only; False where the C library is not glibc (then nothing changes)."""
    global _retained
    _retained = _mallopt(RETAINED)
    return _retained


def _restore_in_forked_child() -> None:
    global _retained
    if _retained:
        _retained = False
        _mallopt(GLIBC_DEFAULTS)


if hasattr(os, "register_at_fork"):  # a no-op unless this process retains memory
    os.register_at_fork(after_in_child=_restore_in_forked_child)


def auto_flag(value: bool | str, key: str, *, auto: bool) -> bool:
    """An ``auto | true | false`` setting as a bool (``auto`` becomes ``auto``); any other value
    is a ``ConfigError`` (a ``ValueError``) naming the key."""
    if value not in ("auto", True, False):
        raise ConfigError(f"{key}={value}: use auto, true or false")
    return auto if value == "auto" else bool(value)


def apply_cpu_memory_setting(setting: bool | str, *, key: str = "retain_cpu_memory") -> bool:
    """``auto``: retain freed memory when no GPU is visible (the CPU is doing the work).
    For entry points only: it changes the allocator of the whole calling process."""
    wanted = auto_flag(setting, key, auto=not torch.cuda.is_available())
    done = wanted and retain_freed_memory()
    if wanted and not done:
        log.info("%s: not glibc, left as it is", key)
    return done
