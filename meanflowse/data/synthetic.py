"""Built-in synthetic speech-enhancement corpus: speech plus noise, no downloads.

``speech="tts"`` (default): the clean signals are English sentences from a small grammar,
spoken by eSpeak NG voices (:mod:`meanflowse.data.tts`; accents, male and female variants, rate,
pitch and word gap drawn per file), with speaker- and sentence-disjoint splits.
``speech="formant"``: speech-*like* signals without any TTS engine: a harmonic glottal source
with a moving pitch, 3-5 formant resonances that glide between vowel targets, fricative noise
bursts, a syllable rhythm of 3-6 Hz and pauses.

Noise comes in eight kinds (stationary coloured noise, babble of formant voices, babble of
several talkers of the corpus's own speech source, mains hum, non-stationary bursts, noise with
a speech-like spectrum and syllabic modulation) mixed at a uniformly drawn SNR.

Every file is a pure function of ``(seed, split, index)`` and the settings, so the bytes do not
depend on how many files are generated or in which order. The dataset is written into a temp
folder with its marker ``dataset.json`` last and renamed into place, so a folder that has the
marker is always complete.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from meanflowse.data import tts

log = logging.getLogger(__name__)

NOISE_KINDS = ("white", "pink", "brown", "babble", "hum", "bursts", "talkers", "modulated")
SPEECH_SOURCES = ("tts", "formant")
SPLITS = ("train", "valid", "test")
MARKER = "dataset.json"
GENERATOR = "meanflowse.data.synthetic"
VERSION = 2  # bump when the generated signals change, so cached datasets are rebuilt

# (F1, F2, F3) in Hz of a few vowels of an adult male voice (Peterson & Barney style averages).
_VOWELS = np.array(
    [
        (730, 1090, 2440),
        (270, 2290, 3010),
        (300, 870, 2240),
        (530, 1840, 2480),
        (570, 840, 2410),
        (660, 1720, 2410),
        (520, 1190, 2390),
        (440, 1020, 2240),
    ],
    dtype=float,
)
_BANDWIDTHS = np.array([70.0, 100.0, 130.0, 200.0, 260.0])


# ----------------------------------------------------------------------------- signals
def _resonator_sos(freqs: np.ndarray, bws: np.ndarray, sr: int) -> np.ndarray:
    """Klatt-style 2-pole resonators with unit gain at DC, one second-order section each."""
    r = np.exp(-np.pi * bws / sr)
    b1 = 2.0 * r * np.cos(2.0 * np.pi * freqs / sr)
    b2 = -r * r
    sos = np.zeros((len(freqs), 6))
    sos[:, 0] = 1.0 - b1 - b2
    sos[:, 3] = 1.0
    sos[:, 4] = -b1
    sos[:, 5] = -b2
    return sos


def _smooth_walk(rng: np.random.Generator, n_points: int, step: float) -> np.ndarray:
    walk = np.cumsum(rng.normal(0.0, step, n_points))
    return signal.lfilter([0.1], [1.0, -0.9], walk - walk.mean())


def speech_like(rng: np.random.Generator, num_samples: int, sample_rate: int) -> np.ndarray:
    """One speech-like utterance of ``num_samples`` samples with peak 1 (float64)."""
    sr, n = sample_rate, num_samples
    block = sr // 100  # formants move in 10 ms steps
    n_blocks = -(-n // block)
    dur = n / sr

    # speaker
    f0_base = float(np.exp(rng.uniform(np.log(85.0), np.log(250.0))))
    scale = rng.uniform(0.85, 1.2) * (f0_base / 120.0) ** 0.15
    n_formants = int(rng.integers(3, 6))
    syl_rate = rng.uniform(3.0, 6.0)
    breath = rng.uniform(0.02, 0.12)

    # syllable plan: (start, consonant length, nucleus length, vowel, level), pauses in between
    env_v = np.zeros(n)
    env_u = np.zeros(n)
    targets = []  # (block index, formant vector)
    fric = []  # (start, stop, centre Hz)
    t = rng.uniform(0.0, 0.25)
    while t < dur - 0.05:
        if t > 0.3 and rng.random() < 0.12:
            t += rng.uniform(0.15, 0.5)
            continue
        syl = rng.uniform(0.7, 1.3) / syl_rate
        cons = rng.uniform(0.04, 0.12) if rng.random() < 0.6 else 0.0
        level = rng.uniform(0.4, 1.0)
        s0, s1, s2 = (int(x * sr) for x in (t, t + cons, t + syl))
        s2 = min(s2, n)
        if cons and s1 < n:
            seg = s1 - s0
            env_u[s0:s1] = level * rng.uniform(0.08, 0.3) * np.hanning(seg + 2)[1:-1]
            fric.append((s0, s1, rng.uniform(2500.0, 6500.0)))
        if s2 > s1 + 8:
            seg = s2 - s1
            attack = max(1, int(0.2 * seg))
            ramp = np.concatenate([np.sin(np.linspace(0, np.pi / 2, attack)) ** 2, np.ones(seg - attack)])
            env_v[s1:s2] = level * ramp * np.exp(-np.linspace(0.0, rng.uniform(1.0, 3.0), seg))
        vowel = _VOWELS[rng.integers(len(_VOWELS))] * scale * rng.uniform(0.92, 1.08, 3)
        high = np.array([3500.0, 4500.0]) * scale * rng.uniform(0.95, 1.05, 2)
        targets.append(((s1 + s2) // 2 // block, np.concatenate([vowel, high])[:n_formants]))
        t += syl
    if not targets:
        targets.append((0, np.concatenate([_VOWELS[0] * scale, [3500.0, 4500.0]])[:n_formants]))

    # formant tracks: glide between syllable targets (coarticulation)
    idx = np.array([b for b, _ in targets], dtype=float)
    vals = np.stack([v for _, v in targets])
    blocks = np.arange(n_blocks, dtype=float)
    tracks = np.stack([np.interp(blocks, idx, vals[:, k]) for k in range(n_formants)], axis=1)
    tracks = np.minimum(tracks, 0.45 * sr)
    bws = _BANDWIDTHS[:n_formants] * rng.uniform(0.8, 1.3)

    # glottal source: Rosenberg pulses on a drifting pitch contour, differentiated (lip radiation)
    f0_blocks = f0_base * np.exp(
        0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * blocks / 100 + rng.uniform(0, 6.3))
        + _smooth_walk(rng, n_blocks, 0.03)
        - 0.1 * blocks / n_blocks
    )
    f0 = np.interp(np.arange(n) / block, blocks, f0_blocks)
    phase = np.cumsum(f0 / sr) + rng.random()
    frac = phase % 1.0
    tp, tn = 0.4, 0.16
    pulse = np.where(
        frac < tp,
        0.5 * (1 - np.cos(np.pi * frac / tp)),
        np.where(frac < tp + tn, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0),
    )
    source = np.diff(pulse, prepend=pulse[0]) * (sr / f0_base)
    source += breath * pulse * rng.standard_normal(n)
    source *= env_v

    voiced = np.empty(n)
    zi = np.zeros((n_formants, 2))
    for b in range(n_blocks):
        sl = slice(b * block, (b + 1) * block)
        voiced[sl], zi = signal.sosfilt(_resonator_sos(tracks[b], bws, sr), source[sl], zi=zi)

    unvoiced = np.zeros(n)
    noise = rng.standard_normal(n)
    for s0, s1, centre in fric:
        hi = min(centre * 1.6, 0.45 * sr)
        lo = min(centre * 0.6, 0.7 * hi)
        sos = signal.butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")
        unvoiced[s0:s1] = signal.sosfilt(sos, noise[s0:s1])

    v_rms = np.sqrt(np.mean(voiced[env_v > 0] ** 2)) if np.any(env_v > 0) else 1.0
    u_rms = np.sqrt(np.mean(unvoiced[env_u > 0] ** 2)) if np.any(env_u > 0) else 1.0
    out = voiced / max(v_rms, 1e-12) + unvoiced / max(u_rms, 1e-12) * env_u
    return out / max(np.abs(out).max(), 1e-12)


def _shaped_noise(rng: np.random.Generator, n: int, sr: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (pink: 1, brown: 2), flat below 20 Hz."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1.0 / sr), 20.0)
    spec *= f ** (-exponent / 2)
    spec[0] = 0.0
    return np.fft.irfft(spec, n)


def _modulated(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Noise with a long-term speech spectrum (a -6 dB/octave slope above a 500 Hz knee) whose
    level follows a random syllabic envelope (2-8 Hz) with pauses: non-stationary, speech-like."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sr)
    knee = rng.uniform(300.0, 800.0)
    spec *= 1.0 / np.sqrt(1.0 + (f / knee) ** 2) * (f > 60.0)
    out = np.fft.irfft(spec, n)
    rate = rng.uniform(2.0, 8.0)
    frames = int(np.ceil(n / sr * rate)) + 2
    levels = rng.uniform(0.0, 1.0, frames) ** 2 * (rng.random(frames) > 0.2)
    envelope = np.interp(np.arange(n) / sr * rate, np.arange(frames), levels)
    envelope = signal.lfilter([0.02], [1.0, -0.98], envelope)  # ~3 ms smoothing at 16 kHz
    return out * (0.05 + envelope)


def _noise(kind: str, rng: np.random.Generator, n: int, sr: int, talker=None) -> np.ndarray:
    """One noise signal; ``talker(rng)`` speaks one other utterance of ``n`` samples (talkers)."""
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        return _shaped_noise(rng, n, sr, 1.0)
    if kind == "brown":
        return _shaped_noise(rng, n, sr, 2.0)
    if kind in ("babble", "talkers"):  # 3-6 voices at equal level: formant ones, or talker's
        speak = talker if kind == "talkers" else (lambda g: speech_like(g, n, sr))
        voices = [speak(rng) for _ in range(int(rng.integers(3, 7)))]
        return np.sum([v / (np.std(v) + 1e-12) for v in voices], axis=0)
    if kind == "modulated":
        return _modulated(rng, n, sr)
    if kind == "hum":
        mains = 50.0 if rng.random() < 0.5 else 60.0
        t = np.arange(n) / sr
        drift = 1.0 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
        slope = rng.uniform(0.5, 1.5)
        hum = sum(
            h**-slope * np.sin(2 * np.pi * mains * h * drift * t + rng.uniform(0, 6.3))
            for h in range(1, int(min(40, 0.45 * sr / mains)))
        )
        floor = _shaped_noise(rng, n, sr, 1.0)
        return hum / np.std(hum) + 0.03 * floor / np.std(floor)
    if kind == "bursts":
        out = _shaped_noise(rng, n, sr, 1.0)
        out *= 0.05 / np.std(out)  # a quiet pink floor between the bursts
        for _ in range(max(1, rng.poisson(rng.uniform(1.0, 3.0) * n / sr))):
            length = int(rng.uniform(0.02, 0.4) * sr)
            start = int(rng.integers(0, max(1, n - length)))
            seg = min(length, n - start)
            lo = rng.uniform(100.0, 2000.0)
            hi = min(lo * rng.uniform(2.0, 8.0), 0.45 * sr)
            sos = signal.butter(2, [lo, hi], btype="bandpass", fs=sr, output="sos")
            burst = signal.sosfilt(sos, rng.standard_normal(seg))
            decay = np.exp(-np.linspace(0.0, rng.uniform(2.0, 8.0), seg))
            out[start : start + seg] += rng.uniform(0.3, 1.0) * burst / (np.std(burst) + 1e-12) * decay
        return out
    raise ValueError(f"unknown noise kind {kind!r}; choose from {NOISE_KINDS}")


def make_pair(settings: dict, split: str, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(clean, noisy, info)`` float32 arrays for one file; a pure function of its arguments."""
    rng = np.random.default_rng(np.random.SeedSequence([settings["seed"], SPLITS.index(split), index]))
    sr = settings["sample_rate"]
    n = int(round(rng.uniform(*settings["duration_s"]) * sr))
    kind = settings["noise_kinds"][rng.integers(len(settings["noise_kinds"]))]
    if settings["speech"] == "formant":
        clean, said = speech_like(rng, n, sr), {"voice": "formant", "text": ""}
        noise = _noise(kind, rng, n, sr, talker=lambda g: speech_like(g, n, sr))
    else:
        with tts.session() as eng:  # one fresh engine per file: its bytes depend on its seed only
            voice = tts.draw_voice(rng, split)
            clean, said = tts.utterance(eng, rng, split, n, sr, voice=voice)
            # babble talkers: other voices of the same split, saying other sentences
            noise = _noise(
                kind,
                rng,
                n,
                sr,
                talker=lambda g: tts.utterance(
                    eng, g, split, n, sr, voice=tts.draw_voice(g, split, exclude=voice.variant)
                )[0],
            )
    snr = float(rng.uniform(*settings["snr_db"]))
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr / 10)))
    noisy = clean + gain * noise
    # random loudness, peak < 1 for both signals; the same gain keeps the SNR
    level = rng.uniform(0.3, 0.95) / max(np.abs(noisy).max(), np.abs(clean).max())
    info = {"noise": kind, "snr_db": round(snr, 3), "samples": n, **said}
    return (clean * level).astype(np.float32), (noisy * level).astype(np.float32), info


# ----------------------------------------------------------------------------- dataset
def _settings(
    num_train, num_valid, num_test, sample_rate, duration_s, snr_db, noise_kinds, seed, speech="tts"
) -> dict:
    """Plain, validated settings (accepts OmegaConf lists); this is what the marker records."""
    duration_s = tuple(float(x) for x in duration_s)
    snr_db = tuple(float(x) for x in snr_db)
    noise_kinds = [noise_kinds] if isinstance(noise_kinds, str) else [str(k) for k in noise_kinds]
    counts = {"train": int(num_train), "valid": int(num_valid), "test": int(num_test)}
    if min(counts.values()) < 0:
        raise ValueError(f"file counts must be >= 0, got {counts}")
    if len(duration_s) != 2 or not 0.05 <= duration_s[0] <= duration_s[1]:
        raise ValueError(f"duration_s must be (min, max) with 0.05 <= min <= max, got {duration_s}")
    if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
        raise ValueError(f"snr_db must be (low, high) with low <= high, got {snr_db}")
    unknown = sorted(set(noise_kinds) - set(NOISE_KINDS))
    if not noise_kinds or unknown:
        raise ValueError(f"noise_kinds must be a non-empty subset of {NOISE_KINDS}, got {noise_kinds}")
    if speech not in SPEECH_SOURCES:
        raise ValueError(f"data.synthetic.speech={speech!r}; use one of {SPEECH_SOURCES}")
    if int(sample_rate) < 8000:
        raise ValueError(f"sample_rate must be >= 8000, got {sample_rate}")
    return {
        "counts": counts,
        "sample_rate": int(sample_rate),
        "duration_s": list(duration_s),
        "snr_db": list(snr_db),
        "noise_kinds": noise_kinds,
        "seed": int(seed),
        "speech": str(speech),
    }


def read_marker(out_dir: str | os.PathLike) -> dict | None:
    """The marker of a generated dataset, or None where there is none (or it is unreadable)."""
    try:
        marker = json.loads((Path(out_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == GENERATOR else None


def generate_dataset(
    out_dir: str | os.PathLike,
    *,
    num_train: int = 300,
    num_valid: int = 20,
    num_test: int = 20,
    sample_rate: int = 16000,
    duration_s: Sequence[float] = (2.0, 4.0),
    snr_db: Sequence[float] = (0.0, 15.0),
    noise_kinds: Sequence[str] = NOISE_KINDS,
    seed: int = 0,
    speech: str = "tts",
) -> Path:
    """Write ``out_dir/{train,valid,test}/{clean,noisy}/<split>_<index>.wav`` (16-bit PCM)
    and ``out_dir/<split>/metadata.csv`` (noise kind, SNR, length, voice and text of each file);
    a split with zero files gets no folder.

    Returns at once when ``out_dir/dataset.json`` records the same settings. Otherwise the set is
    generated into a hidden temp folder next to ``out_dir`` and renamed into place, replacing an
    older generated set; a non-empty folder that is not a generated set is never touched.
    """
    out = Path(out_dir)
    settings = _settings(
        num_train, num_valid, num_test, sample_rate, duration_s, snr_db, noise_kinds, seed, speech
    )
    marker = read_marker(out)
    if marker is not None and marker.get("version") == VERSION and marker.get("settings") == settings:
        return out
    if out.exists() and marker is None and any(out.iterdir()):
        raise FileExistsError(
            f"{out} exists, is not empty and has no {MARKER} from the generator; refusing to "
            "overwrite it. Point data.base_dir at an empty or new folder for the synthetic set."
        )

    if settings["speech"] == "tts":
        tts.check_available()  # fail before any file is written, saying what to do
    log.info("generating synthetic dataset in %s (%s)", out, settings["counts"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for split in (s for s in SPLITS if settings["counts"][s] > 0):
            rows = []
            for role in ("clean", "noisy"):
                (tmp / split / role).mkdir(parents=True)
            for index in range(settings["counts"][split]):
                clean, noisy, info = make_pair(settings, split, index)
                name = f"{split}_{index:05d}.wav"
                sf.write(tmp / split / "clean" / name, clean, settings["sample_rate"], subtype="PCM_16")
                sf.write(tmp / split / "noisy" / name, noisy, settings["sample_rate"], subtype="PCM_16")
                rows.append({"name": name, **info})
            with open(tmp / split / "metadata.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["name", "noise", "snr_db", "samples", "voice", "text"])
                writer.writeheader()
                writer.writerows(rows)
        marker = {"generator": GENERATOR, "version": VERSION, "settings": settings}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # last: marks completeness
        _swap_in(tmp, out, settings)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _swap_in(tmp: Path, out: Path, settings: dict) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        # another process finished first; fine if it wrote what we wanted
        other = read_marker(out)
        if not (other and other.get("version") == VERSION and other.get("settings") == settings):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
