"""The built-in corpus's settings (``data.synthetic``), validated into the plain dict that
:mod:`meanflowse.data.synthetic` generates from and records in its marker. A key that is off is left
out of the dict, so the markers of datasets made before the key existed still match."""

from __future__ import annotations

import math
from collections.abc import Sequence

from meanflowse.data.signals import NOISE_KINDS

SPEECH_SOURCES = ("tts", "formant")


def _span(name: str, value, low: float = -math.inf, high: float = math.inf) -> tuple[float, float]:
    """A (low, high) pair of a setting as floats, checked: ``low <= a <= b <= high``."""
    try:  # a string is a sequence too: "05" would read as (0, 5)
        pair = () if isinstance(value, str) else tuple(float(x) for x in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
        rule = " <= ".join(
            [
                *([f"{low:g}"] if low > -math.inf else []),
                "low",
                "high",
                *([f"{high:g}"] if high < math.inf else []),
            ]
        )
        raise ValueError(f"{name} must be (low, high) with {rule}, got {value}")
    return pair


def validated_settings(
    num_train: int = 300,
    num_valid: int = 20,
    num_test: int = 20,
    sample_rate: int = 16000,
    duration_s: Sequence[float] = (2.0, 4.0),
    snr_db: Sequence[float] = (0.0, 15.0),
    noise_kinds: Sequence[str] = NOISE_KINDS,
    seed: int = 0,
    speech: str = "tts",
    near_clean_share: float = 0.0,
    near_clean_snr_db: Sequence[float] = (30.0, 50.0),
    train_snr_db: Sequence[float] | None = None,
    train_tilt_db: float = 0.0,
    train_natural_share: float = 0.0,
    train_reverb_share: float = 0.0,
    train_rt60_s: Sequence[float] = (0.15, 0.6),
    train_drr_db: Sequence[float] = (2.0, 12.0),
    natural_near_clean_share: float | None = None,
    train_eq_db: float = 0.0,
    train_level_swing_db: float = 0.0,
    train_mix_swing_db: float = 0.0,
    train_klatt_share: float = 0.0,
) -> dict:
    """Plain, validated settings (accepts OmegaConf lists); this is what the marker records. The
    names and defaults here are ``data.synthetic``'s keys and the corpus's defaults (one place:
    ``generate_dataset`` passes its keywords through)."""
    duration_s = _span("duration_s", duration_s, low=0.05)
    snr_db = _span("snr_db", snr_db)
    near_clean_snr_db = _span("near_clean_snr_db", near_clean_snr_db)
    train_snr_db = None if train_snr_db is None else _span("train_snr_db", train_snr_db)
    train_rt60_s = _span("train_rt60_s", train_rt60_s, low=0.05, high=3.0)
    train_drr_db = _span("train_drr_db", train_drr_db)
    for name, share in [
        ("near_clean_share", near_clean_share),
        ("natural_near_clean_share", 0.0 if natural_near_clean_share is None else natural_near_clean_share),
        ("train_natural_share", train_natural_share),
        ("train_reverb_share", train_reverb_share),
        ("train_klatt_share", train_klatt_share),
    ]:
        if not 0.0 <= float(share) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")
    for name, value, high, unit in [
        ("train_tilt_db", train_tilt_db, 24, "dB per octave"),
        ("train_eq_db", train_eq_db, 24, "dB"),
        ("train_level_swing_db", train_level_swing_db, 40, "dB"),
        ("train_mix_swing_db", train_mix_swing_db, 40, "dB"),
    ]:
        if not 0.0 <= float(value) <= high:
            raise ValueError(f"{name} must be in [0, {high}] {unit}, got {value}")
    if natural_near_clean_share is not None and not float(train_natural_share) > 0:
        if float(natural_near_clean_share) != 0.0:
            raise ValueError(
                "natural_near_clean_share sets the near-clean share of the natural voice's files: it needs "
                "train_natural_share > 0 (or leave it null)"
            )
        # A zero share has no files to act on: the demo preset sets 0, and its eSpeak-only form
        # (train_natural_share=0, the hint when the voice's wheel is missing) must still work.
        natural_near_clean_share = None
    for name, share, why in [
        ("train_natural_share", train_natural_share, "eSpeak NG makes its phonemes"),
        ("train_klatt_share", train_klatt_share, "the Klatt voices are eSpeak NG's"),
    ]:
        if float(share) > 0 and speech != "tts":
            raise ValueError(f"{name} needs data.synthetic.speech=tts ({why})")
    noise_kinds = [noise_kinds] if isinstance(noise_kinds, str) else [str(k) for k in noise_kinds]
    counts = {"train": int(num_train), "valid": int(num_valid), "test": int(num_test)}
    if min(counts.values()) < 0:
        raise ValueError(f"file counts must be >= 0, got {counts}")
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
        **(
            {"near_clean_share": float(near_clean_share), "near_clean_snr_db": list(near_clean_snr_db)}
            if near_clean_share or natural_near_clean_share
            else {}
        ),
        **(
            {"natural_near_clean_share": float(natural_near_clean_share)}
            if natural_near_clean_share is not None
            else {}
        ),
        **({"train_snr_db": list(train_snr_db)} if train_snr_db is not None else {}),
        **({"train_tilt_db": float(train_tilt_db)} if train_tilt_db else {}),
        **({"train_eq_db": float(train_eq_db)} if train_eq_db else {}),
        **({"train_level_swing_db": float(train_level_swing_db)} if train_level_swing_db else {}),
        **({"train_mix_swing_db": float(train_mix_swing_db)} if train_mix_swing_db else {}),
        **({"train_natural_share": float(train_natural_share)} if train_natural_share else {}),
        **({"train_klatt_share": float(train_klatt_share)} if train_klatt_share else {}),
        **(
            {
                "train_reverb_share": float(train_reverb_share),
                "train_rt60_s": list(train_rt60_s),
                "train_drr_db": list(train_drr_db),
            }
            if train_reverb_share
            else {}
        ),
    }
