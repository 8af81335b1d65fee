"""A real clean recording mixed with the built-in corpus's noise kinds at chosen SNRs.

This is how the project checks that a model helps natural speech, which the eSpeak NG corpus never
contains: every noise kind of :data:`NOISE_KINDS` (talkers speak with the corpus's test voices) at
each SNR, a few draws each. Each mix is a pure function of ``(seed, snr, kind, draw)``. The files
are written as ``<out>/{clean,noisy}/snr<SS>_<kind>_<draw>.wav`` (16-bit, both signals scaled by
one gain to a peak of 0.9), so ``eval.py input=<out>`` scores them against their references and
:func:`per_snr` averages its ``metrics.csv`` per SNR.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from meanflowse.atomic import atomic_path
from meanflowse.data import tts
from meanflowse.data.audio import load_audio
from meanflowse.data.signals import NOISE_KINDS, make_noise
from meanflowse.data.synthetic import mix_at_snr
from meanflowse.metrics import registry

SNRS_DB = (0, 5, 10, 15, 20)
_NAME = re.compile(r"snr(\d+)_")


def mix_name(snr_db: int, kind: str, draw: int) -> str:
    return f"snr{snr_db:02d}_{kind}_{draw}.wav"


def write_mixes(
    speech: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    snrs_db: tuple[int, ...] = SNRS_DB,
    kinds: tuple[str, ...] = NOISE_KINDS,
    draws: int = 3,
    seed: int = 0,
) -> list[Path]:
    """Write every mix of ``speech`` (mono) into ``out_dir``; returns the noisy files."""
    wav, sr = load_audio(speech)
    clean = wav.numpy().astype(np.float64)
    n = clean.shape[-1]
    out = Path(out_dir)
    written = []
    for snr in snrs_db:
        for kind in kinds:
            for draw in range(draws):
                key = [seed, int(snr), NOISE_KINDS.index(kind), draw]
                rng = np.random.default_rng(np.random.SeedSequence(key))
                noisy = mix_at_snr(clean, _noise(kind, rng, n, sr), snr)
                gain = 0.9 / max(np.abs(noisy).max(), np.abs(clean).max())
                name = mix_name(int(snr), kind, draw)
                for role, x in (("clean", clean), ("noisy", noisy)):
                    path = out / role / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(path) as tmp:
                        sf.write(tmp, (gain * x).astype(np.float32), sr, subtype="PCM_16", format="WAV")
                written.append(out / "noisy" / name)
    return written


def _noise(kind: str, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    if kind != "talkers":
        return make_noise(kind, rng, n, sr)
    with tts.session() as eng:  # a fresh engine per mix, as the corpus does: bytes from the seed only
        talker = lambda g: tts.utterance(eng, g, "test", n, sr, voice=tts.draw_voice(g, "test"))[0]
        return make_noise(kind, rng, n, sr, talker=talker)


def per_snr(metrics_csv: str | os.PathLike) -> dict[int, dict[str, float]]:
    """Mean of each score of eval.py's ``metrics.csv`` per SNR of the mix names: ``{snr: {"pesq":
    enhanced mean, "noisy_pesq": input mean, ..., "files": n}}`` (NaN scores left out)."""
    groups: dict[int, list[dict]] = {}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            m = _NAME.match(Path(row["file"]).name)
            if m and row.get("status") != "failed":  # enhanced now, or resumed from an earlier run
                groups.setdefault(int(m.group(1)), []).append(row)
    table = {}
    for snr, rows in sorted(groups.items()):
        entry: dict[str, float] = {"files": len(rows)}
        for key in registry.reference_keys():
            for col in (key, f"noisy_{key}"):
                values = [float(r[col]) for r in rows if r.get(col) not in (None, "")]
                values = [v for v in values if math.isfinite(v)]
                entry[col] = float(np.mean(values)) if values else math.nan
        table[snr] = entry
    return table
