"""Measurement layer (method.md section 8): PESQ, ESTOI, SI-SDR, DNSMOS, speaker similarity, RTF.

DNSMOS and speaker similarity live in :mod:`meanflowse.metrics.dnsmos` and :mod:`meanflowse.metrics.speaker`,
the shared input checks in :mod:`meanflowse.metrics.base`; all are re-exported here.

Every metric is a plain function of 1-D signals (numpy arrays, or torch tensors, which are
detached and moved to the CPU) at a given sample rate, and returns a Python ``float``.

Conventions shared by all functions here:

* Integer arrays (e.g. the ``int16`` samples ``scipy.io.wavfile.read`` returns) are scaled to
  float in [-1, 1) by ``2 ** (bits - 1)``; float arrays are used as they are.
* A metric that cannot be computed (silence, non-finite samples, mismatched lengths, missing
  optional package, ...) raises :class:`MetricError` with a message saying why; it never lets a
  bare third-party traceback through. :func:`compute_all` turns each such failure into ``NaN``
  plus an entry in its ``errors`` dict, so an evaluation run goes on.
* Reference and degraded signals must have the same length (callers crop); a mismatch is a
  ``MetricError``, not a silent truncation.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torchmetrics.functional.audio import (
    perceptual_evaluation_speech_quality,
    short_time_objective_intelligibility,
)

from meanflowse.metrics import registry
from meanflowse.metrics.base import MetricError, _check_sr, _pair, _resample
from meanflowse.metrics.dnsmos import dnsmos, dnsmos_available
from meanflowse.metrics.registry import METRIC_FAILURES
from meanflowse.metrics.speaker import speaker_similarity, speaker_similarity_available

__all__ = [
    "MetricError",
    "METRIC_FAILURES",
    "pesq_wb",
    "pesq_nb",
    "estoi",
    "si_sdr",
    "dnsmos",
    "dnsmos_available",
    "speaker_similarity",
    "speaker_similarity_available",
    "compute_all",
    "Stopwatch",
    "rtf",
    "summarize",
    "summary_table",
]

#: SI-SDR never exceeds this: the residual energy is floored at ``10**(-MAX/10)`` times the
#: target energy, so a perfect (or sign-flipped) estimate gives exactly this finite value.
SI_SDR_MAX_DB = 200.0

_PESQ_RATES = (8000, 16000)


# --------------------------------------------------------------------------------------------
# PESQ
# --------------------------------------------------------------------------------------------
def _pesq(ref: Any, deg: Any, sr: int, mode: str) -> float:
    r, d = _pair(ref, deg)
    sr = _check_sr(sr)
    if mode == "wb" and sr != 16000:
        r, d, sr = _resample(r, sr, 16000), _resample(d, sr, 16000), 16000
    elif mode == "nb" and sr not in _PESQ_RATES:
        r, d, sr = _resample(r, sr, 16000), _resample(d, sr, 16000), 16000
    if not np.any(r) or not np.any(d):
        which = "reference" if not np.any(r) else "degraded signal"
        raise MetricError(f"PESQ ({mode}) undefined: {which} is all zeros (silence)")
    try:
        # torchmetrics calls the pesq package on our float64 arrays; its float32 result loses
        # nothing (the library computes in single precision). pesq scales both signals by their
        # common peak itself, so the input level is irrelevant.
        value = perceptual_evaluation_speech_quality(torch.from_numpy(d), torch.from_numpy(r), sr, mode)
    except Exception as e:  # NoUtterancesError, BufferTooShortError, ValueError, ...
        raise MetricError(f"PESQ ({mode}) failed: {type(e).__name__}: {e}") from e
    value = float(value)
    if not math.isfinite(value):
        raise MetricError(f"PESQ ({mode}) returned a non-finite value ({value})")
    return value


def pesq_wb(ref: Any, deg: Any, sr: int) -> float:
    """Wideband PESQ (ITU-T P.862.2, MOS-LQO in about [1.04, 4.64]): the ``pesq`` package
    through ``torchmetrics.functional.audio``.

    PESQ is defined at 8/16 kHz only and wideband needs 16 kHz: any other ``sr`` (including
    8 kHz) is resampled to 16 kHz with ``torchaudio.functional.resample`` first. Raises
    :class:`MetricError` on silence or when the PESQ library reports an error (e.g. no
    utterances detected, buffer too short).
    """
    return _pesq(ref, deg, sr, "wb")


def pesq_nb(ref: Any, deg: Any, sr: int) -> float:
    """Narrowband PESQ (ITU-T P.862 with the P.862.1 MOS-LQO mapping, via the ``pesq`` package).

    Computed at 8 or 16 kHz as given; any other ``sr`` is resampled to 16 kHz with
    ``torchaudio.functional.resample`` first. Raises :class:`MetricError` as :func:`pesq_wb`.
    """
    return _pesq(ref, deg, sr, "nb")


# --------------------------------------------------------------------------------------------
# ESTOI
# --------------------------------------------------------------------------------------------
def estoi(ref: Any, deg: Any, sr: int) -> float:
    """Extended STOI (``pystoi.stoi(..., extended=True)`` through ``torchmetrics.functional.audio``),
    roughly in [0, 1].

    pystoi resamples to 10 kHz internally, so any ``sr`` works. When fewer than 30 frames remain
    after pystoi's silent-frame removal it warns and returns a placeholder 1e-5; that case is
    raised here as :class:`MetricError` instead.
    """
    r, d = _pair(ref, deg)
    sr = _check_sr(sr)
    if not np.any(r):
        raise MetricError("ESTOI undefined: reference is all zeros (silence)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # torchmetrics calls pystoi on our float64 arrays and keeps its float64 value
            value = float(
                short_time_objective_intelligibility(torch.from_numpy(d), torch.from_numpy(r), sr, True)
            )
        except Exception as e:
            raise MetricError(f"ESTOI failed: {type(e).__name__}: {e}") from e
    for w in caught:
        if "Not enough STFT frames" in str(w.message):
            raise MetricError("ESTOI undefined: fewer than 30 non-silent frames (signal too short or silent)")
    if not math.isfinite(value):
        raise MetricError(f"ESTOI returned a non-finite value ({value})")
    return value


# --------------------------------------------------------------------------------------------
# SI-SDR
# --------------------------------------------------------------------------------------------
def si_sdr(ref: Any, est: Any) -> float:
    """Scale-invariant SDR in dB (Le Roux et al., 2019), computed in float64.

    Both signals are made zero-mean; the target is the projection ``alpha * ref`` with
    ``alpha = <est, ref> / ||ref||^2`` and the residual is ``est - alpha * ref``;
    ``SI-SDR = 10 log10(||alpha ref||^2 / ||est - alpha ref||^2)``.

    Edge cases, by design:

    * ``est == ref`` (residual ~ 0): the residual energy is floored at
      ``10**(-SI_SDR_MAX_DB/10) * ||alpha ref||^2``, so the result is finite and at most
      :data:`SI_SDR_MAX_DB` (200 dB).
    * ``est == -ref``: a valid scaled copy with ``alpha = -1``; SI-SDR is blind to any non-zero
      gain, sign included, so this too scores :data:`SI_SDR_MAX_DB`. A polarity flip is therefore
      *not* penalised by this metric.
    * a zero (or constant) reference or estimate: SI-SDR is undefined -> :class:`MetricError`.
    """
    r, e = _pair(ref, est)
    r = r - r.mean()
    e = e - e.mean()
    ref_energy = float(np.dot(r, r))
    if ref_energy <= np.finfo(np.float64).tiny:
        raise MetricError("SI-SDR undefined: reference is zero (or constant)")
    if float(np.dot(e, e)) <= np.finfo(np.float64).tiny:
        raise MetricError("SI-SDR undefined: estimate is zero (or constant)")
    alpha = float(np.dot(e, r)) / ref_energy
    target = alpha * r
    residual = e - target
    t_energy = float(np.dot(target, target))
    n_energy = float(np.dot(residual, residual))
    if t_energy <= np.finfo(np.float64).tiny:  # estimate orthogonal to the reference
        raise MetricError("SI-SDR is -inf: estimate is orthogonal to the reference")
    n_energy = max(n_energy, t_energy * 10.0 ** (-SI_SDR_MAX_DB / 10.0))
    return float(10.0 * math.log10(t_energy / n_energy))


# --------------------------------------------------------------------------------------------
# all at once
# --------------------------------------------------------------------------------------------
def compute_all(
    ref: Any | None, deg: Any, sr: int, *, with_dnsmos: bool = True, with_speaker: bool = False
) -> dict[str, Any]:
    """Every metric of the registry (:mod:`meanflowse.metrics.registry`) for one file, the
    optional ones as switched; a metric that cannot score it becomes ``NaN`` (any error of
    :data:`METRIC_FAILURES`); anything else is a bug and propagates.

    Returns ``{key: value, ..., "errors": {metric: message}}``: ``pesq`` (wideband), ``estoi``,
    ``si_sdr``, the DNSMOS keys with ``with_dnsmos``, ``spk_sim`` with ``with_speaker``. With
    ``ref=None`` the intrusive metrics are left out. A failing DNSMOS sets all three DNSMOS keys
    to NaN with one ``errors["dnsmos"]`` entry.
    """
    return registry.score(ref, deg, sr, registry.selected(dnsmos=with_dnsmos, speaker=with_speaker))


# --------------------------------------------------------------------------------------------
# real-time factor
# --------------------------------------------------------------------------------------------
def _sync(device: Any) -> None:
    if device is None:
        return
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(dev)
    elif dev.type == "mps" and hasattr(torch, "mps") and torch.backends.mps.is_available():
        torch.mps.synchronize()


class Stopwatch:
    """Wall-clock timer (``time.perf_counter``) that synchronises the device at both ends.

    >>> with Stopwatch(device="cuda") as sw:   # doctest: +SKIP
    ...     y = model(x)
    >>> sw.seconds

    With a CUDA (or MPS) ``device`` the queue is drained on entry and on exit, so the time covers
    the kernels launched inside the block and nothing before it. ``device=None`` or a CPU device
    times plain wall time. Reusable: each ``with`` restarts it; :attr:`laps` keeps every duration.
    """

    def __init__(self, device: Any = None) -> None:
        self.device = device
        self.seconds: float = float("nan")
        self.laps: list[float] = []
        self._t0: float | None = None

    def start(self) -> "Stopwatch":
        _sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> float:
        if self._t0 is None:
            raise RuntimeError("Stopwatch.stop() called before start()")
        _sync(self.device)
        self.seconds = time.perf_counter() - self._t0
        self._t0 = None
        self.laps.append(self.seconds)
        return self.seconds

    def __enter__(self) -> "Stopwatch":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rtf(seconds: float, num_samples: int, sr: int) -> float:
    """Real-time factor = processing wall time / audio duration (``num_samples / sr``).

    Below 1 is faster than real time.
    """
    if num_samples <= 0 or sr <= 0:
        raise MetricError(f"RTF undefined for num_samples={num_samples}, sr={sr}")
    return float(seconds) / (num_samples / float(sr))


# --------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------
def summarize(values: Iterable[float]) -> tuple[float, float]:
    """``(mean, ci95_halfwidth)`` over the finite values (NaN and None are ignored).

    The half-width is Student-t: ``t_{0.975, n-1} * s / sqrt(n)`` with ``s`` the sample standard
    deviation (ddof=1), the exact interval for a normal mean and close to 1.96 s/sqrt(n) for
    large n. No finite value -> ``(nan, nan)``; one value -> ``(value, nan)``.
    """
    arr = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    n = arr.size
    if n == 0:
        return float("nan"), float("nan")
    mean = float(arr.mean())
    if n == 1:
        return mean, float("nan")
    from scipy.stats import t as student_t

    half = float(student_t.ppf(0.975, n - 1) * arr.std(ddof=1) / math.sqrt(n))
    return mean, half


def summary_table(
    rows: Sequence[Mapping[str, Any]], title: str = "Metrics", keys: Sequence[str] | None = None
):
    """``rich.table.Table`` with one line per metric: mean ± 95% CI, files counted, failures.

    ``rows`` are per-file dicts such as :func:`compute_all` returns. Metric columns are ``keys``
    or, by default, the registry's keys in its order followed by any other numeric key seen
    (``errors`` and non-numeric values are skipped). ``n`` counts finite values; ``failed``
    counts rows where the key is present but not finite.
    """
    from rich.table import Table

    if keys is None:
        seen: list[str] = []
        for row in rows:
            for k, v in row.items():
                if k == "errors" or k in seen or isinstance(v, (bool, str)):
                    continue
                if isinstance(v, (int, float, np.floating, np.integer)) or v is None:
                    seen.append(k)
        known = registry.keys()
        keys = [k for k in known if k in seen] + [k for k in seen if k not in known]

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("mean ± 95% CI", justify="right")
    table.add_column("n", justify="right")
    table.add_column("failed", justify="right")
    for key in keys:
        vals = [row.get(key) for row in rows if key in row]
        finite = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        mean, half = summarize(finite)
        if math.isnan(mean):
            cell = "—"
        elif math.isnan(half):
            cell = f"{mean:.3f}"
        else:
            cell = f"{mean:.3f} ± {half:.3f}"
        table.add_row(key, cell, str(len(finite)), str(len(vals) - len(finite)))
    return table
