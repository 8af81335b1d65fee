"""Process-wide CPU settings that the entry points apply before any work.

glibc's malloc gives every block above its mmap threshold (which adapts, up to 32 MiB) its own
fresh mapping and unmaps it on free. A large network's activations are such blocks, so every
forward pass has the kernel page-fault and zero them again: on the 2-core CPU that was 0.8 s of
a 3.6 s full NCSN++ forward (BENCHMARKS.md section 2). Serving them from the heap and keeping
freed memory for reuse removes that cost, at the price of the process holding on to up to
``TRIM_THRESHOLD`` bytes it no longer uses.
"""
from __future__ import annotations

import ctypes
import logging
import platform

import torch

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters from glibc's malloc.h
TRIM_THRESHOLD = 2**31 - 1  # free memory kept at the top of the heap (mallopt takes a C int)


def retain_freed_memory() -> bool:
    """Make glibc serve large blocks from the heap and keep what is freed; False where the C
    library is not glibc (then nothing changes)."""
    if platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


def auto_flag(value: bool | str, key: str, *, auto: bool) -> bool:
    """An ``auto | true | false`` setting as a bool (``auto`` becomes ``auto``); any other value
    is a ``ValueError`` naming the key."""
    if value not in ("auto", True, False):
        raise ValueError(f"{key}={value}: use auto, true or false")
    return auto if value == "auto" else bool(value)


def apply_cpu_memory_setting(setting: bool | str, *, key: str = "retain_cpu_memory") -> bool:
    """``auto``: retain freed memory when no GPU is visible (the CPU is doing the work)."""
    wanted = auto_flag(setting, key, auto=not torch.cuda.is_available())
    done = wanted and retain_freed_memory()
    if wanted and not done:
        log.info("%s: not glibc, left as it is", key)
    return done
