"""Tests for meanflowse.metrics.scores (PESQ, ESTOI, SI-SDR, DNSMOS, speaker similarity, RTF, summaries)."""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from meanflowse.metrics import scores as M

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
PESQ_WB_PUBLISHED = 1.0832337141036987
PESQ_NB_PUBLISHED = 1.6072081327438354
# speechmos's own DNSMOS.__call__ on the same files (speechmos 0.0.1.1, onnxruntime 1.32.0), with
# the P.808 branch (the only user of librosa) off; regenerate with
# `.venv/bin/python tests/speechmos_reference.py`. test_dnsmos_equals_speechmos_on_any_signal
# also compares with speechmos live, so these pin the model and runtime, not the procedure.
DNSMOS_SPEECHMOS_CLEAN = {"sig": 3.5518087924079835, "bak": 4.047450421090663, "ovrl": 3.245820507171174}
DNSMOS_SPEECHMOS_NOISY = {"sig": 1.2046851963490084, "bak": 1.16834643676566, "ovrl": 1.0888705946260133}

needs_dnsmos = pytest.mark.skipif(
    not M.dnsmos_available(), reason="DNSMOS unavailable: speechmos/onnxruntime not installed"
)
needs_spk = pytest.mark.skipif(
    not M.speaker_similarity_available(),
    reason="speaker similarity unavailable: resemblyzer wheel (ships the encoder weights) not installed",
)


@pytest.fixture(scope="module")
def real_pair():
    """(clean, noisy, sr) as int16, as scipy.io.wavfile.read returns them."""
    clean_p, noisy_p = REAL_DIR / "speech.wav", REAL_DIR / "speech_bab_0dB.wav"
    if not (clean_p.is_file() and noisy_p.is_file()):
        pytest.skip(
            f"real speech pair not found at {REAL_DIR} (it sits in ../shared/data/real "
            "beside the project only in the project's own environment)"
        )
    sr_c, clean = wavfile.read(clean_p)
    sr_n, noisy = wavfile.read(noisy_p)
    assert sr_c == sr_n == 16000 and clean.dtype == noisy.dtype == np.int16
    return clean, noisy, sr_c


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket during the test fails it."""

    def refuse(*args, **kwargs):
        raise AssertionError("metric tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _speechlike(n: int = 48000, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Deterministic amplitude-modulated harmonic signal (no files needed)."""
    t = np.arange(n) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t)) ** 2
    rng = np.random.default_rng(seed)
    return 0.1 * env * x + 1e-3 * rng.standard_normal(n)


# ---------------------------------------------------------------------------------- PESQ
@pytest.mark.parametrize("as_float", [False, True], ids=["int16", "float"])
def test_pesq_matches_published_values(real_pair, as_float):
    clean, noisy, sr = real_pair
    if as_float:
        clean, noisy = clean / 32768.0, noisy / 32768.0
    assert M.pesq_wb(clean, noisy, sr) == pytest.approx(PESQ_WB_PUBLISHED, abs=1e-6)
    assert M.pesq_nb(clean, noisy, sr) == pytest.approx(PESQ_NB_PUBLISHED, abs=1e-6)


def test_pesq_accepts_torch_tensors(real_pair):
    clean, noisy, sr = real_pair
    c = torch.from_numpy(clean / 32768.0).float()
    n = torch.from_numpy(noisy / 32768.0).float()
    assert M.pesq_wb(c, n, sr) == pytest.approx(PESQ_WB_PUBLISHED, abs=1e-6)


def test_pesq_resamples_unsupported_rate(real_pair):
    import torchaudio.functional as AF

    clean, noisy, sr = real_pair
    up = [AF.resample(torch.from_numpy(s / 32768.0), sr, 48000).numpy() for s in (clean, noisy)]
    # Resampled back to 16 kHz inside: close to, not exactly, the native value.
    assert M.pesq_wb(*up, 48000) == pytest.approx(PESQ_WB_PUBLISHED, abs=0.02)


def test_pesq_on_silence_raises_metric_error():
    x = _speechlike()
    with pytest.raises(M.MetricError, match="silence"):
        M.pesq_wb(x, np.zeros_like(x), 16000)
    with pytest.raises(M.MetricError, match="silence"):
        M.pesq_nb(np.zeros_like(x), x, 16000)


def test_pesq_library_error_is_wrapped():
    x = _speechlike(1000)  # < 1/4 s: the pesq library raises BufferTooShortError
    with pytest.raises(M.MetricError, match="BufferTooShortError"):
        M.pesq_wb(x, x, 16000)


def test_bad_inputs_raise_metric_error():
    x = _speechlike()
    with pytest.raises(M.MetricError, match="lengths differ"):
        M.pesq_wb(x, x[:-1], 16000)
    bad = x.copy()
    bad[10] = np.nan
    with pytest.raises(M.MetricError, match="NaN"):
        M.si_sdr(x, bad)
    with pytest.raises(M.MetricError, match="1-D"):
        M.estoi(np.stack([x, x]), np.stack([x, x]), 16000)


# ---------------------------------------------------------------------------------- ESTOI
def test_estoi_identical_is_one():
    x = _speechlike()
    assert M.estoi(x, x, 16000) == pytest.approx(1.0, abs=1e-6)


def test_estoi_real_pair_is_lower(real_pair):
    clean, noisy, sr = real_pair
    v = M.estoi(clean, noisy, sr)
    assert 0.0 < v < 0.9


def test_estoi_too_short_raises():
    x = _speechlike(2000)
    with pytest.raises(M.MetricError, match="30 non-silent frames"):
        M.estoi(x, x, 16000)


# ---------------------------------------------------------------------------------- SI-SDR
def test_si_sdr_of_itself_is_very_large_and_finite():
    x = _speechlike()
    v = M.si_sdr(x, x)
    assert math.isfinite(v) and v > 100.0
    assert v == pytest.approx(M.SI_SDR_MAX_DB)


def test_si_sdr_negation_and_gain_are_not_penalised():
    # SI-SDR is invariant to any non-zero gain, sign included: -x is the projection with
    # alpha = -1 and a zero residual, so it scores the same (capped, finite) value as x itself.
    x = _speechlike()
    assert M.si_sdr(x, -x) == pytest.approx(M.si_sdr(x, x))
    assert M.si_sdr(x, 0.3 * x) > 100.0
    assert M.si_sdr(x, -0.3 * x + 0.2) > 100.0  # offset removed by the zero-mean step


def test_si_sdr_exact_for_orthogonal_noise():
    x = _speechlike()
    rng = np.random.default_rng(1)
    n = rng.standard_normal(x.size)
    x0 = x - x.mean()
    n = n - n.mean()
    n -= (n @ x0) / (x0 @ x0) * x0  # exactly orthogonal: SI-SDR equals the SNR in closed form
    for snr in (-5.0, 0.0, 10.0, 30.0):
        scaled = n * np.sqrt((x0 @ x0) / (n @ n) / 10 ** (snr / 10))
        assert M.si_sdr(x, x + scaled) == pytest.approx(snr, abs=1e-6)


def test_si_sdr_random_noise_close_to_snr():
    x = _speechlike(16000 * 4)
    rng = np.random.default_rng(2)
    n = rng.standard_normal(x.size)
    x0 = x - x.mean()
    for snr in (0.0, 5.0, 15.0):
        scaled = n * np.sqrt((x0 @ x0) / (n @ n) / 10 ** (snr / 10))
        assert M.si_sdr(x, x + scaled) == pytest.approx(snr, abs=0.1)


def test_si_sdr_zero_reference_or_estimate_raises():
    x = _speechlike()
    with pytest.raises(M.MetricError, match="reference is zero"):
        M.si_sdr(np.zeros_like(x), x)
    with pytest.raises(M.MetricError, match="reference is zero"):
        M.si_sdr(np.full_like(x, 0.3), x)
    with pytest.raises(M.MetricError, match="estimate is zero"):
        M.si_sdr(x, np.zeros_like(x))


# ---------------------------------------------------------------------------------- DNSMOS
@needs_dnsmos
def test_dnsmos_offline_on_real_speech(real_pair, no_network):
    clean, noisy, sr = real_pair
    c = M.dnsmos(clean, sr)
    n = M.dnsmos(noisy / 32768.0, sr)
    for scores in (c, n):
        assert set(scores) == {"sig", "bak", "ovrl"}
        assert all(1.0 <= v <= 5.0 for v in scores.values())
    assert c["ovrl"] > n["ovrl"] + 1.0 and c["bak"] > n["bak"] + 1.0
    # Same numbers as speechmos.dnsmos.run (tolerance for onnxruntime/CPU differences).
    for key in ("sig", "bak", "ovrl"):
        assert c[key] == pytest.approx(DNSMOS_SPEECHMOS_CLEAN[key], abs=1e-3)
        assert n[key] == pytest.approx(DNSMOS_SPEECHMOS_NOISY[key], abs=1e-3)


@needs_dnsmos
def test_dnsmos_equals_speechmos_on_any_signal():
    """metrics.dnsmos against speechmos's DNSMOS.__call__ computed live (tests/
    speechmos_reference.py): a short signal (tiled to 9.01 s) and one of 12 s (4 windows, hop
    1 s); the same model on the same windows, so the same numbers."""
    from speechmos_reference import speechmos_dnsmos

    for n in (16000 * 3, 16000 * 12 + 123):
        x = np.clip(_speechlike(n, seed=n) * 4, -1, 1)
        ours, ref = M.dnsmos(x, 16000), speechmos_dnsmos(x)
        assert ours == pytest.approx(ref, abs=1e-9), (ours, ref)


@needs_dnsmos
def test_dnsmos_pinned_values_are_speechmos_on_the_real_pair(real_pair):
    """The pinned real-pair values are what speechmos computes now (regenerated by
    tests/speechmos_reference.py), and metrics.dnsmos gives them too."""
    from speechmos_reference import real_pair_reference

    clean, noisy, sr = real_pair
    ref = real_pair_reference()
    assert M.dnsmos(clean, sr) == pytest.approx(ref["clean"], abs=1e-9)
    assert M.dnsmos(noisy / 32768.0, sr) == pytest.approx(ref["noisy"], abs=1e-9)
    assert ref == {
        "clean": pytest.approx(DNSMOS_SPEECHMOS_CLEAN, abs=1e-6),
        "noisy": pytest.approx(DNSMOS_SPEECHMOS_NOISY, abs=1e-6),
    }


@needs_dnsmos
def test_dnsmos_resamples_and_clips():
    x = _speechlike(8000 * 3, sr=8000)
    s = M.dnsmos(x, 8000)
    assert all(1.0 <= v <= 5.0 for v in s.values())
    loud = M.dnsmos(np.clip(_speechlike() * 30, -1, 1), 16000)
    assert M.dnsmos(_speechlike() * 30, 16000) == pytest.approx(loud)


# ---------------------------------------------------------------------------------- speaker
@needs_spk
def test_speaker_similarity_offline(real_pair, no_network):
    clean, noisy, sr = real_pair
    assert M.speaker_similarity(clean, clean, sr) == pytest.approx(1.0, abs=1e-6)
    v = M.speaker_similarity(clean, noisy, sr)  # 0 dB babble: other voices in the mix
    assert 0.0 <= v < 0.95


def test_speaker_similarity_unavailable_is_metric_error(monkeypatch):
    from meanflowse.metrics import speaker

    monkeypatch.setattr(speaker, "_package_dir", lambda name: None)
    speaker._speaker_encoder.cache_clear()
    try:
        with pytest.raises(M.MetricError, match="unavailable"):
            M.speaker_similarity(_speechlike(), _speechlike(), 16000)
    finally:
        speaker._speaker_encoder.cache_clear()


# ---------------------------------------------------------------------------------- compute_all
def test_compute_all_records_failures_instead_of_raising():
    x = _speechlike()
    out = M.compute_all(x, np.zeros_like(x), 16000, with_dnsmos=False)
    assert set(out) == {"pesq", "estoi", "si_sdr", "errors"}
    assert math.isnan(out["pesq"]) and "pesq" in out["errors"]
    assert math.isnan(out["si_sdr"]) and "si_sdr" in out["errors"]


def test_compute_all_without_reference_only_dnsmos(monkeypatch):
    monkeypatch.setattr(M, "dnsmos", lambda deg, sr: {"sig": 3.0, "bak": 4.0, "ovrl": 2.5})
    out = M.compute_all(None, _speechlike(), 16000)
    assert out == {"dnsmos_sig": 3.0, "dnsmos_bak": 4.0, "dnsmos_ovrl": 2.5, "errors": {}}


def test_compute_all_dnsmos_failure_is_nan(monkeypatch):
    def broken(deg, sr):
        raise M.MetricError("DNSMOS unavailable: test")

    monkeypatch.setattr(M, "dnsmos", broken)
    out = M.compute_all(None, _speechlike(), 16000)
    assert all(math.isnan(out[k]) for k in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"))
    assert out["errors"] == {"dnsmos": "DNSMOS unavailable: test"}


def test_compute_all_real_pair(real_pair):
    clean, noisy, sr = real_pair
    out = M.compute_all(clean, noisy, sr, with_dnsmos=M.dnsmos_available())
    assert out["pesq"] == pytest.approx(PESQ_WB_PUBLISHED, abs=1e-6)
    assert 0 < out["estoi"] < 1 and -10 < out["si_sdr"] < 10
    assert out["errors"] == {}


# ---------------------------------------------------------------------------------- RTF
def test_rtf_against_known_delay():
    with M.Stopwatch(device="cpu") as sw:
        time.sleep(0.2)
    value = M.rtf(sw.seconds, num_samples=16000, sr=16000)  # 0.2 s over 1 s of audio
    assert 0.195 <= value < 0.5  # sleep never returns early; a loaded machine may overshoot
    assert sw.laps == [sw.seconds]


def test_rtf_arithmetic_and_errors():
    assert M.rtf(0.5, 32000, 16000) == pytest.approx(0.25)
    with pytest.raises(M.MetricError):
        M.rtf(1.0, 0, 16000)
    sw = M.Stopwatch()
    with pytest.raises(RuntimeError):
        sw.stop()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stopwatch_synchronises_cuda():
    a = torch.randn(4096, 4096, device="cuda")
    with M.Stopwatch(device="cuda") as sw:
        for _ in range(20):
            a = a @ a / 64.0
    assert sw.seconds > 0.0


# ---------------------------------------------------------------------------------- summaries
def test_summarize_ignores_nan_and_uses_student_t():
    mean, half = M.summarize([1.0, 2.0, 3.0, float("nan"), None])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3))  # t_{0.975,2} s/sqrt(n)
    assert all(math.isnan(v) for v in M.summarize([float("nan")]))
    m1, h1 = M.summarize([5.0])
    assert m1 == 5.0 and math.isnan(h1)


def test_summary_table_renders_mean_and_ci():
    from rich.console import Console

    rows = [
        {"pesq": 2.0, "si_sdr": 10.0, "errors": {}},
        {"pesq": 3.0, "si_sdr": float("nan"), "errors": {"si_sdr": "x"}},
        {"pesq": 4.0, "si_sdr": 12.0, "rtf": 0.1, "errors": {}},
    ]
    table = M.summary_table(rows, title="test set")
    assert table.row_count == 3  # pesq, si_sdr, rtf (errors skipped)
    console = Console(record=True, width=120)
    console.print(table)
    text = console.export_text()
    assert "test set" in text and "3.000 ± 2.484" in text  # t_{0.975,2} * 1 / sqrt(3)
    assert "si_sdr" in text and "11.000 ±" in text


# ------------------------------------------------------------------------ torchmetrics classes
def test_file_metric_keeps_each_file_and_averages_the_finite_ones():
    from meanflowse.metrics import registry
    from meanflowse.metrics.file_metric import FileMetric

    si = next(m for m in registry.METRICS if m.name == "si_sdr")
    state = FileMetric(si)
    x = _speechlike()
    rng = np.random.default_rng(1)
    noisy = [x + s * rng.standard_normal(x.size) for s in (0.01, 0.05)]
    for deg in noisy:
        state.update(deg, x, 16000)
    state.update(np.zeros_like(x), x, 16000)  # SI-SDR undefined: NaN and its message, no crash
    assert "estimate is zero" in state.last["errors"]["si_sdr"]
    values = state.values("si_sdr")
    assert values.dtype == torch.float64 and values.shape == (3,) and math.isnan(values[2])
    expected = [M.si_sdr(x, deg) for deg in noisy]
    assert values[:2].tolist() == expected
    assert float(state.compute()["si_sdr"]) == pytest.approx(np.mean(expected), rel=1e-15)
    assert state.higher_is_better is True
    state.reset()
    assert math.isnan(float(state.compute()["si_sdr"]))  # no file: NaN, not an error


def test_file_metric_parts_and_the_real_pair_through_torchmetrics(real_pair, monkeypatch):
    from meanflowse.metrics import registry
    from meanflowse.metrics.file_metric import FileMetric

    clean, noisy, sr = real_pair
    pesq = FileMetric(next(m for m in registry.METRICS if m.name == "pesq"))
    pesq.update(noisy / 32768.0, clean / 32768.0, sr)
    assert pesq.last["pesq"] == pytest.approx(PESQ_WB_PUBLISHED, abs=1e-6)
    assert float(pesq.compute()["pesq"]) == pytest.approx(PESQ_WB_PUBLISHED, abs=1e-6)
    monkeypatch.setattr(M, "dnsmos", lambda deg, sr: {"sig": 3.0, "bak": 4.0, "ovrl": 2.5})
    dnsmos = FileMetric(next(m for m in registry.METRICS if m.name == "dnsmos"))
    dnsmos.update(noisy / 32768.0, None, sr)
    assert {k: float(v) for k, v in dnsmos.compute().items()} == {
        "dnsmos_sig": 3.0,
        "dnsmos_bak": 4.0,
        "dnsmos_ovrl": 2.5,
    }
