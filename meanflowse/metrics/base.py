"""What every metric shares: the error type and the checks that turn any 1-D input (numpy,
torch, integer PCM) into a finite float64 array at a valid rate."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np


class MetricError(RuntimeError):
    """A metric could not be computed for this input; callers record it as a failure."""


def _as_array(x: Any, name: str = "signal") -> np.ndarray:
    """1-D float64 numpy array from a numpy array / torch tensor / sequence."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):  # numpy has no bfloat16
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise MetricError(f"{name} must be 1-D (mono), got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise MetricError(f"{name} is empty")
    if arr.dtype == np.uint8:  # 8-bit WAV is offset binary
        arr = (arr.astype(np.float64) - 128.0) / 128.0
    elif np.issubdtype(arr.dtype, np.signedinteger):
        arr = arr.astype(np.float64) / float(2 ** (8 * arr.dtype.itemsize - 1))
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    else:
        raise MetricError(f"{name} has unsupported dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise MetricError(f"{name} contains NaN or inf samples")
    return arr


def _pair(ref: Any, deg: Any) -> tuple[np.ndarray, np.ndarray]:
    r, d = _as_array(ref, "reference"), _as_array(deg, "degraded signal")
    if r.shape != d.shape:
        raise MetricError(
            f"reference and degraded signal lengths differ: {r.size} vs {d.size} "
            "samples (crop them to a common length first)"
        )
    return r, d


def _check_sr(sr: Any) -> int:
    if int(sr) != sr or sr <= 0:
        raise MetricError(f"invalid sample rate {sr!r}")
    return int(sr)


def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Band-limited resampling with ``torchaudio.functional.resample`` (float64)."""
    if sr == target:
        return x
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(x), sr, target).numpy()


def _package_dir(name: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))
