"""Measurement layer (method.md section 8): PESQ, ESTOI, SI-SDR, DNSMOS, speaker similarity, RTF.

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

import importlib.util
import math
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "MetricError", "METRIC_KEYS", "pesq_wb", "pesq_nb", "estoi", "si_sdr", "dnsmos",
    "dnsmos_available", "speaker_similarity", "speaker_similarity_available", "compute_all",
    "Stopwatch", "rtf", "summarize", "summary_table",
]

#: Keys of :func:`compute_all`'s result, in display order (``errors`` comes on top of these).
METRIC_KEYS = ("pesq", "estoi", "si_sdr", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")

#: SI-SDR never exceeds this: the residual energy is floored at ``10**(-MAX/10)`` times the
#: target energy, so a perfect (or sign-flipped) estimate gives exactly this finite value.
SI_SDR_MAX_DB = 200.0

_PESQ_RATES = (8000, 16000)


class MetricError(RuntimeError):
    """A metric could not be computed for this input; callers record it as a failure."""


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
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
        raise MetricError(f"reference and degraded signal lengths differ: {r.size} vs {d.size} "
                          "samples (crop them to a common length first)")
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
        from pesq import pesq as _pesq_fn
    except ImportError as e:  # pragma: no cover - pesq is a hard requirement
        raise MetricError(f"PESQ unavailable: {e}") from e
    try:
        # pesq scales both signals by their common peak itself, so the input level is irrelevant.
        value = _pesq_fn(sr, r, d, mode)
    except Exception as e:  # NoUtterancesError, BufferTooShortError, ValueError, ...
        raise MetricError(f"PESQ ({mode}) failed: {type(e).__name__}: {e}") from e
    value = float(value)
    if not math.isfinite(value):
        raise MetricError(f"PESQ ({mode}) returned a non-finite value ({value})")
    return value


def pesq_wb(ref: Any, deg: Any, sr: int) -> float:
    """Wideband PESQ (ITU-T P.862.2, MOS-LQO in about [1.04, 4.64]) with the ``pesq`` package.

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
    """Extended STOI (``pystoi.stoi(..., extended=True)``), roughly in [0, 1].

    pystoi resamples to 10 kHz internally, so any ``sr`` works. When fewer than 30 frames remain
    after pystoi's silent-frame removal it warns and returns a placeholder 1e-5; that case is
    raised here as :class:`MetricError` instead.
    """
    r, d = _pair(ref, deg)
    sr = _check_sr(sr)
    if not np.any(r):
        raise MetricError("ESTOI undefined: reference is all zeros (silence)")
    try:
        from pystoi import stoi as _stoi
    except ImportError as e:  # pragma: no cover - pystoi is a hard requirement
        raise MetricError(f"ESTOI unavailable: {e}") from e
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = float(_stoi(r, d, sr, extended=True))
        except Exception as e:
            raise MetricError(f"ESTOI failed: {type(e).__name__}: {e}") from e
    for w in caught:
        if "Not enough STFT frames" in str(w.message):
            raise MetricError("ESTOI undefined: fewer than 30 non-silent frames "
                              "(signal too short or silent)")
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
# DNSMOS (P.835 SIG / BAK / OVRL)
# --------------------------------------------------------------------------------------------
_DNSMOS_SR = 16000
_DNSMOS_INPUT_SECONDS = 9.01
# Polynomial calibration of the raw network outputs (non-personalised model), as in
# Microsoft's dnsmos_local.py and speechmos.dnsmos.
_DNSMOS_POLY = {
    "sig": (-0.08397278, 1.22083953, 0.0052439),
    "bak": (-0.13166888, 1.60915514, -0.39604546),
    "ovrl": (-0.06766283, 1.11546468, 0.04602535),
}


def _package_dir(name: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


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
        seg = x[idx * _DNSMOS_SR: idx * _DNSMOS_SR + win]
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


# --------------------------------------------------------------------------------------------
# speaker similarity (Resemblyzer GE2E encoder, weights shipped in its PyPI wheel)
# --------------------------------------------------------------------------------------------
_SPK_SR = 16000
_SPK_N_FFT = 400          # 25 ms
_SPK_HOP = 160            # 10 ms
_SPK_N_MELS = 40
_SPK_PARTIAL_FRAMES = 160  # 1.6 s partial utterances
_SPK_RATE = 1.3            # partials per second
_SPK_MIN_COVERAGE = 0.75
_SPK_TARGET_DBFS = -30.0


def _speaker_weights_path() -> Path:
    pkg = _package_dir("resemblyzer")
    if pkg is None:
        raise MetricError("speaker similarity unavailable: the 'resemblyzer' package (which "
                          "ships the encoder weights) is not installed; "
                          "`pip install --no-deps resemblyzer==0.1.4` is enough")
    path = pkg / "pretrained.pt"
    if not path.is_file():
        raise MetricError(f"speaker similarity unavailable: weights missing ({path})")
    return path


@lru_cache(maxsize=1)
def _speaker_encoder():
    import torch
    import torchaudio
    from torch import nn

    path = _speaker_weights_path()

    class _GE2E(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(_SPK_N_MELS, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels):  # [B, T, n_mels] -> [B, 256], L2-normalised
            _, (hidden, _) = self.lstm(mels)
            emb = torch.relu(self.linear(hidden[-1]))
            return emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)

    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    model = _GE2E()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
    model.eval()
    # librosa.feature.melspectrogram defaults: Hann window, centred with zero padding, power 2,
    # Slaney mel scale with Slaney area normalisation.
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=_SPK_SR, n_fft=_SPK_N_FFT, hop_length=_SPK_HOP, n_mels=_SPK_N_MELS,
        power=2.0, center=True, pad_mode="constant", norm="slaney", mel_scale="slaney")
    return model, mel


def speaker_similarity_available() -> bool:
    """True when :func:`speaker_similarity` can run (the resemblyzer wheel is installed)."""
    try:
        _speaker_weights_path()
    except MetricError:
        return False
    return True


def _speaker_embedding(x: np.ndarray) -> np.ndarray:
    import torch

    model, mel = _speaker_encoder()
    # resemblyzer.preprocess_wav: raise (never lower) the level to -30 dBFS. Its webrtcvad-based
    # trimming of long silences is not applied (no extra dependency; ref/deg stay aligned).
    rms = float(np.sqrt(np.mean((x * 32767.0) ** 2)))
    if rms <= 0.0:
        raise MetricError("speaker similarity undefined: signal is all zeros (silence)")
    change_db = _SPK_TARGET_DBFS - 20.0 * math.log10(rms / 32767.0)
    if change_db > 0:
        x = x * 10.0 ** (change_db / 20.0)
    # resemblyzer.VoiceEncoder.compute_partial_slices / embed_utterance
    n_frames = int(np.ceil((x.size + 1) / _SPK_HOP))
    frame_step = int(np.round((_SPK_SR / _SPK_RATE) / _SPK_HOP))
    steps = max(1, n_frames - _SPK_PARTIAL_FRAMES + frame_step + 1)
    starts = list(range(0, steps, frame_step))
    last = starts[-1] * _SPK_HOP
    coverage = (x.size - last) / (_SPK_PARTIAL_FRAMES * _SPK_HOP)
    if coverage < _SPK_MIN_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    needed = (starts[-1] + _SPK_PARTIAL_FRAMES) * _SPK_HOP
    if needed >= x.size:
        x = np.pad(x, (0, needed - x.size))
    with torch.no_grad():
        spec = mel(torch.from_numpy(x.astype(np.float32))).T  # [T, n_mels]
        mels = torch.stack([spec[s: s + _SPK_PARTIAL_FRAMES] for s in starts])
        partial = model(mels).numpy().astype(np.float64)
    emb = partial.mean(axis=0)
    return emb / np.linalg.norm(emb)


def speaker_similarity(ref: Any, deg: Any, sr: int) -> float:
    """Cosine similarity of speaker embeddings of ``ref`` and ``deg`` (1 = same voice).

    Uses the GE2E voice encoder (3-layer LSTM, 256-d embeddings) whose weights ship inside the
    ``resemblyzer`` PyPI wheel (``resemblyzer/pretrained.pt``, loaded offline; the package is
    located but not imported, so its librosa/webrtcvad dependencies are not needed). The
    embedding follows ``VoiceEncoder.embed_utterance`` (1.6 s partials at 1.3 per second,
    averaged and L2-normalised) on a 40-band mel power spectrogram computed with torchaudio in
    librosa's convention, after resemblyzer's volume normalisation; resemblyzer's VAD-based
    silence trimming is skipped. Other sample rates are resampled to 16 kHz. GE2E embeddings are
    non-negative, so values lie in [0, 1]. This is *not* the WavLM/ECAPA similarity some papers
    report: compare numbers only with the same encoder.
    """
    r, d = _pair(ref, deg)
    sr = _check_sr(sr)
    r, d = _resample(r, sr, _SPK_SR), _resample(d, sr, _SPK_SR)
    return float(np.dot(_speaker_embedding(r), _speaker_embedding(d)))


# --------------------------------------------------------------------------------------------
# all at once
# --------------------------------------------------------------------------------------------
def compute_all(ref: Any | None, deg: Any, sr: int, *, with_dnsmos: bool = True,
                with_speaker: bool = False) -> dict[str, Any]:
    """Every metric for one file; failures become ``NaN`` and never raise.

    Returns ``{"pesq", "estoi", "si_sdr", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "errors"}``
    (plus ``"spk_sim"`` when ``with_speaker``). ``pesq`` is wideband PESQ. With ``ref=None`` the
    intrusive metrics are left out (only the DNSMOS keys are present). Each metric that fails is
    ``NaN`` and ``errors[key] = "message"``; a failing DNSMOS sets all three DNSMOS keys to NaN
    with one ``errors["dnsmos"]`` entry. With ``with_dnsmos=False`` the DNSMOS keys are absent.
    """
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def attempt(key: str, fn, *args) -> None:
        try:
            out[key] = float(fn(*args))
        except MetricError as e:
            out[key], errors[key] = float("nan"), str(e)
        except Exception as e:  # a metric must never end the run
            out[key], errors[key] = float("nan"), f"unexpected {type(e).__name__}: {e}"

    if ref is not None:
        attempt("pesq", pesq_wb, ref, deg, sr)
        attempt("estoi", estoi, ref, deg, sr)
        attempt("si_sdr", si_sdr, ref, deg)
        if with_speaker:
            attempt("spk_sim", speaker_similarity, ref, deg, sr)
    if with_dnsmos:
        try:
            scores = dnsmos(deg, sr)
            out.update({f"dnsmos_{k}": scores[k] for k in ("sig", "bak", "ovrl")})
        except Exception as e:
            msg = str(e) if isinstance(e, MetricError) else f"unexpected {type(e).__name__}: {e}"
            out.update({f"dnsmos_{k}": float("nan") for k in ("sig", "bak", "ovrl")})
            errors["dnsmos"] = msg
    out["errors"] = errors
    return out


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


def summary_table(rows: Sequence[Mapping[str, Any]], title: str = "Metrics",
                  keys: Sequence[str] | None = None):
    """``rich.table.Table`` with one line per metric: mean ± 95% CI, files counted, failures.

    ``rows`` are per-file dicts such as :func:`compute_all` returns. Metric columns are ``keys``
    or, by default, :data:`METRIC_KEYS` in that order followed by any other numeric key seen
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
        keys = [k for k in METRIC_KEYS if k in seen] + [k for k in seen if k not in METRIC_KEYS]

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
