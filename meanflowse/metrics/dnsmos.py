"""DNSMOS P.835 (SIG / BAK / OVRL) from the ONNX model that the speechmos wheel ships."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from meanflowse.metrics.base import MetricError, _as_array, _check_sr, _package_dir, _resample

_DNSMOS_SR = 16000
_DNSMOS_INPUT_SECONDS = 9.01
# Polynomial calibration of the raw network outputs (non-personalised model), as in
# Microsoft's dnsmos_local.py and speechmos.dnsmos.
_DNSMOS_POLY = {
    "sig": (-0.08397278, 1.22083953, 0.0052439),
    "bak": (-0.13166888, 1.60915514, -0.39604546),
    "ovrl": (-0.06766283, 1.11546468, 0.04602535),
}


def _dnsmos_model_path() -> Path:
    pkg = _package_dir("speechmos")
    if pkg is None:
        raise MetricError("DNSMOS unavailable: the 'speechmos' package is not installed")
    path = pkg / "dnsmos_models" / "sig_bak_ovr.onnx"
    if not path.is_file():
        raise MetricError(f"DNSMOS unavailable: model file missing from speechmos ({path})")
    return path


@lru_cache(maxsize=1)
def _dnsmos_session():
    path = _dnsmos_model_path()
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise MetricError(f"DNSMOS unavailable: onnxruntime cannot be imported ({e})") from e
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def dnsmos_available() -> bool:
    """True when :func:`dnsmos` can run (speechmos's ONNX model and onnxruntime present)."""
    try:
        _dnsmos_session()
    except MetricError:
        return False
    return True


def dnsmos(deg: Any, sr: int) -> dict[str, float]:
    """Non-intrusive DNSMOS P.835 scores ``{"sig", "bak", "ovrl"}`` (each in about [1, 5]).

    Runs the ``sig_bak_ovr.onnx`` model that the ``speechmos`` wheel ships (no download, fully
    offline) with onnxruntime on the CPU, using the same procedure as ``speechmos.dnsmos.run`` /
    Microsoft's ``dnsmos_local.py``: audio shorter than 9.01 s is tiled (repeated) to at least
    that length, scored on 9.01 s windows every 1 s, the three raw outputs are mapped through the
    published calibration polynomials and averaged over windows. ``speechmos.dnsmos`` itself is
    not imported because it also needs librosa and requests (only for the P.808 score, which is
    not reported here); the scores are identical to it.

    Differences from speechmos, both documented choices: any ``sr`` other than 16 kHz is
    resampled to 16 kHz with ``torchaudio.functional.resample`` (speechmos refuses), and samples
    outside [-1, 1] are clipped to it, as writing a 16-bit WAV would (speechmos refuses).
    """
    x = _as_array(deg, "degraded signal")
    sr = _check_sr(sr)
    session = _dnsmos_session()
    x = np.clip(_resample(x, sr, _DNSMOS_SR), -1.0, 1.0)
    win = int(_DNSMOS_INPUT_SECONDS * _DNSMOS_SR)
    while x.size < win:
        x = np.concatenate([x, x])
    num_hops = int(np.floor(x.size / _DNSMOS_SR) - _DNSMOS_INPUT_SECONDS) + 1
    raw = []
    input_name = session.get_inputs()[0].name
    for idx in range(num_hops):
        seg = x[idx * _DNSMOS_SR : idx * _DNSMOS_SR + win]
        if seg.size < win:
            continue
        try:
            out = session.run(None, {input_name: seg.astype(np.float32)[None, :]})[0][0]
        except Exception as e:
            raise MetricError(f"DNSMOS inference failed: {type(e).__name__}: {e}") from e
        raw.append(np.asarray(out, dtype=np.float64))
    if not raw:  # cannot happen after tiling; kept as a guard
        raise MetricError("DNSMOS: no 9.01 s window to score")
    raw_arr = np.stack(raw)  # [windows, 3] = sig, bak, ovrl
    scores = {}
    for col, key in enumerate(("sig", "bak", "ovrl")):
        per_window = np.polyval(_DNSMOS_POLY[key], raw_arr[:, col])
        scores[key] = float(np.mean(per_window))
    if not all(math.isfinite(v) for v in scores.values()):
        raise MetricError(f"DNSMOS returned non-finite scores {scores}")
    return scores
