"""The built-in corpus's signals without a TTS engine: formant speech-like voices and eight noise kinds.

``speech_like`` is a harmonic glottal source with a moving pitch, 3-5 formant resonances that glide
between vowel targets, fricative noise bursts, a syllable rhythm of 3-6 Hz and pauses.
``make_noise`` draws one noise of a kind: stationary coloured noise (white, pink, brown), babble of
formant voices or of a caller's talkers, mains hum, band-pass bursts, or noise with a speech-like
spectrum and syllabic modulation. Both are pure functions of the generator they are given.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

NOISE_KINDS = ("white", "pink", "brown", "babble", "hum", "bursts", "talkers", "modulated")


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


def make_noise(kind: str, rng: np.random.Generator, n: int, sr: int, talker=None) -> np.ndarray:
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


def spectral_tilt(x: np.ndarray, sr: int, db_per_octave: float) -> np.ndarray:
    """``x`` with its spectrum tilted by ``db_per_octave`` around 1 kHz (flat below 62.5 Hz,
    at most +-24 dB): brighter for a positive tilt, darker for a negative one."""
    f = np.maximum(np.fft.rfftfreq(len(x), 1.0 / sr), 62.5)
    return _with_gain(x, np.clip(db_per_octave * np.log2(f / 1000.0), -24.0, 24.0))


def _with_gain(x: np.ndarray, gain_db: np.ndarray) -> np.ndarray:
    """``x`` with each rfft bin scaled by ``gain_db`` (one value per bin): a zero-phase filter."""
    return np.fft.irfft(np.fft.rfft(x) * 10 ** (gain_db / 20), len(x))


# Where a channel's gains are drawn: every octave the corpus's 16 kHz audio carries.
CHANNEL_POINTS_HZ = (125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)


def channel_response(x: np.ndarray, sr: int, gains_db) -> np.ndarray:
    """``x`` through a smooth channel (a microphone, a speaker's own timbre): ``gains_db[i]`` dB at
    ``CHANNEL_POINTS_HZ[i]``, linear in log-frequency between them and flat beyond both ends."""
    if len(gains_db) != len(CHANNEL_POINTS_HZ):
        raise ValueError(f"channel_response needs {len(CHANNEL_POINTS_HZ)} gains, got {len(gains_db)}")
    f = np.maximum(np.fft.rfftfreq(len(x), 1.0 / sr), 1.0)
    return _with_gain(x, np.interp(np.log2(f), np.log2(CHANNEL_POINTS_HZ), np.asarray(gains_db, float)))


def swing_gain(n: int, sr: int, rng: np.random.Generator, swing_db: float) -> np.ndarray:
    """A slowly wandering gain for ``n`` samples: a new value in [-swing_db, 0] dB every
    0.2-0.5 s, linear in dB between them. A natural voice's loudness rises and falls within a
    sentence (weak syllables, phrase ends); eSpeak's hardly does."""
    knots = [0.0]
    while knots[-1] < n / sr:
        knots.append(knots[-1] + rng.uniform(0.2, 0.5))
    gains_db = rng.uniform(-swing_db, 0.0, len(knots))
    return 10.0 ** (np.interp(np.arange(n) / sr, knots, gains_db) / 20.0)


def room_response(rng: np.random.Generator, sr: int, rt60_s: float, drr_db: float) -> np.ndarray:
    """A synthetic room impulse response: the direct path (1 at sample 0), then after a 2-8 ms gap
    a diffuse tail of Gaussian noise decaying by 60 dB in ``rt60_s``, whose energy lies
    ``drr_db`` below the direct path's (the direct-to-reverberant ratio). The statistical model of
    late reverberation (Schroeder, Polack); no early reflections are modelled."""
    gap = int(round(rng.uniform(0.002, 0.008) * sr))
    t = np.arange(int(round(rt60_s * sr))) / sr
    tail = rng.standard_normal(len(t)) * np.exp(-3 * np.log(10) * t / rt60_s)  # -60 dB at rt60
    tail *= 10 ** (-drr_db / 20) / np.sqrt(np.sum(tail**2))
    return np.concatenate([[1.0], np.zeros(gap - 1), tail])


def reverberate(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``x`` heard through the room ``h``, cut to ``x``'s length (the tail past its end is dropped)."""
    return signal.fftconvolve(x, h)[: len(x)]
