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
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import soundfile as sf

from meanflowse.data import natural_voice, tts
from meanflowse.data.corpus_settings import validated_settings as _settings
from meanflowse.data.signals import (  # NOISE_KINDS: meanflowse.data and callers import it from here
    CHANNEL_POINTS_HZ,
    NOISE_KINDS,  # noqa: F401
    channel_response,
    make_noise,
    reverberate,
    room_response,
    spectral_tilt,
    speech_like,
    swing_gain,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
MARKER = "dataset.json"
GENERATOR = "meanflowse.data.synthetic"
VERSION = 2  # bump when the generated signals change, so cached datasets are rebuilt


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean + g * noise`` with ``g`` such that the power ratio of the two is ``snr_db``."""
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return clean + gain * noise


def _side_stream(settings: dict, split: str, index: int, tag: int) -> np.random.Generator:
    """A file's own random stream for one optional draw (``tag``: 1 the natural voice, 2 the room,
    3 the channel, 4 the speech's level swing, 5 the mix's, 6 the Klatt voice), apart from its main
    stream, so switching that draw on leaves the others' bytes."""
    return np.random.default_rng(np.random.SeedSequence([settings["seed"], SPLITS.index(split), index, tag]))


def make_pair(settings: dict, split: str, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(clean, noisy, info)`` float32 arrays for one file; a pure function of its arguments."""
    rng = np.random.default_rng(np.random.SeedSequence([settings["seed"], SPLITS.index(split), index]))
    sr = settings["sample_rate"]
    n = int(round(rng.uniform(*settings["duration_s"]) * sr))
    kind = settings["noise_kinds"][rng.integers(len(settings["noise_kinds"]))]
    natural = False
    if settings["speech"] == "formant":
        clean, said = speech_like(rng, n, sr), {"voice": "formant", "text": ""}
        noise = make_noise(kind, rng, n, sr, talker=lambda g: speech_like(g, n, sr))
    else:
        # A share of the training files is spoken by the natural voice; its own stream decides
        # which, so the other files keep their bytes.
        pick = _side_stream(settings, split, index, 1)
        share = settings.get("train_natural_share", 0.0)
        natural = split == "train" and pick.random() < share
        # A share of the other training files is spoken through eSpeak's Klatt synthesiser: the
        # drawn voice (accent, rate, pitch) with a Klatt variant from its own stream. The text,
        # noise and SNR are drawn after the speech, so they stay unless the Klatt voice's sentences
        # fill the file's length with another count (1 file in 30 in a check).
        klatt_pick = _side_stream(settings, split, index, 6)
        klatt = (
            split == "train" and not natural and klatt_pick.random() < settings.get("train_klatt_share", 0.0)
        )
        with tts.session() as eng:  # one fresh engine per file: its bytes depend on its seed only
            drawn = voice = tts.draw_voice(rng, split)
            if klatt:
                variant = tts.KLATT_VARIANTS[klatt_pick.integers(len(tts.KLATT_VARIANTS))]
                voice = dataclasses.replace(drawn, variant=variant, volume=tts.KLATT_VOLUME)
            if natural:
                clean, said = natural_voice.utterance(eng, rng, split, n, sr)
            else:
                clean, said = tts.utterance(eng, rng, split, n, sr, voice=voice)
            # babble talkers: other voices of the same split, saying other sentences
            noise = make_noise(
                kind,
                rng,
                n,
                sr,
                talker=lambda g: tts.utterance(
                    eng, g, split, n, sr, voice=tts.draw_voice(g, split, exclude=drawn.variant)
                )[0],
            )
    # The train_* keys and the near-clean share change the training files only (valid and test
    # stay the files they were, so a recipe change is measured on the same test set); each key is
    # recorded only when used, so the markers of older datasets still match.
    train = split == "train"
    snr = float(rng.uniform(*(settings.get("train_snr_db") if train else None) or settings["snr_db"]))
    share = settings.get("near_clean_share", 0.0) if train else 0.0
    if natural:  # the natural voice may have its own share (None: the same as the others)
        share = settings.get("natural_near_clean_share", share)
    if share > 0 and rng.random() < share:
        snr = float(rng.uniform(*settings["near_clean_snr_db"]))  # good input: learn to leave it
    if train and settings.get("train_reverb_share", 0.0) > 0:
        clean = _in_a_room(clean, settings, split, index)
    tilt = settings.get("train_tilt_db", 0.0) if train else 0.0
    if tilt > 0:  # another spectral balance of the speech (microphone, voice): keep it, not fix it
        clean = spectral_tilt(clean, sr, float(rng.uniform(-tilt, tilt)))
    if train and settings.get("train_eq_db", 0.0) > 0:
        clean = _through_a_channel(clean, settings, index)
    if train and settings.get("train_level_swing_db", 0.0) > 0:  # off: it deepens the gate (real_voices R65)
        clean = clean * swing_gain(
            n, sr, _side_stream(settings, "train", index, 4), settings["train_level_swing_db"]
        )
    noisy = mix_at_snr(clean, noise, snr)
    if train and settings.get("train_mix_swing_db", 0.0) > 0:
        # the whole recording's level wanders (a talker moving, a gain control): a quieter
        # stretch is not a noisier one, and snr_db stays the SNR of the mix before the swing
        gain = swing_gain(n, sr, _side_stream(settings, "train", index, 5), settings["train_mix_swing_db"])
        clean, noisy = clean * gain, noisy * gain
    # random loudness, peak < 1 for both signals; the same gain keeps the SNR
    level = rng.uniform(0.3, 0.95) / max(np.abs(noisy).max(), np.abs(clean).max())
    info = {"noise": kind, "snr_db": round(snr, 3), "samples": n, **said}
    return (clean * level).astype(np.float32), (noisy * level).astype(np.float32), info


def _in_a_room(clean: np.ndarray, settings: dict, split: str, index: int) -> np.ndarray:
    """A share of the training files is speech recorded in a room: clean target and noisy input
    both carry the same reverberation, so the model learns to keep a room's sound (a real "clean"
    recording has one) rather than strip it. Its own stream picks the files and draws the room,
    so the other files keep their bytes."""
    rng = _side_stream(settings, split, index, 2)
    if rng.random() >= settings["train_reverb_share"]:
        return clean
    rt60, drr = rng.uniform(*settings["train_rt60_s"]), rng.uniform(*settings["train_drr_db"])
    return reverberate(clean, room_response(rng, settings["sample_rate"], rt60, drr))


def _through_a_channel(clean: np.ndarray, settings: dict, index: int) -> np.ndarray:
    """A training file's speech through its own smooth channel, every octave from 125 Hz to 8 kHz
    raised or lowered by up to ``train_eq_db``, target and input alike: a real recording's
    microphone and speaker give it a spectral balance unlike any training voice's, which the model
    should keep, not correct. Its own stream, so the other draws keep their bytes."""
    rng, eq = _side_stream(settings, "train", index, 3), settings["train_eq_db"]
    return channel_response(clean, settings["sample_rate"], rng.uniform(-eq, eq, len(CHANNEL_POINTS_HZ)))


# ----------------------------------------------------------------------------- dataset
def read_marker(out_dir: str | os.PathLike) -> dict | None:
    """The marker of a generated dataset, or None where there is none (or it is unreadable)."""
    try:
        marker = json.loads((Path(out_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("generator") == GENERATOR else None


def generate_dataset(out_dir: str | os.PathLike, **synthetic) -> Path:
    """Write ``out_dir/{train,valid,test}/{clean,noisy}/<split>_<index>.wav`` (16-bit PCM)
    and ``out_dir/<split>/metadata.csv`` (noise kind, SNR, length, voice and text of each file);
    a split with zero files gets no folder.

    Returns at once when ``out_dir/dataset.json`` records the same settings. Otherwise the set is
    generated into a hidden temp folder next to ``out_dir`` and renamed into place, replacing an
    older generated set; a non-empty folder that is not a generated set is never touched.
    ``synthetic``: the keys of ``data.synthetic`` (and ``sample_rate``), with the names, defaults
    and checks of :func:`meanflowse.data.corpus_settings.validated_settings`.
    """
    out = Path(out_dir)
    settings = _settings(**synthetic)
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
        if settings.get("train_natural_share"):
            natural_voice.check_available()
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
