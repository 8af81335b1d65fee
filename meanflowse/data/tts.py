"""Speech for the built-in corpus: eSpeak NG, in-process, from the ``espeakng-loader`` wheel.

The wheel ships ``libespeak-ng.so`` and its ``espeak-ng-data`` (no system package, nothing fetched
at run time). We drive its C API through ctypes: synchronous output with a synth callback that
collects the 16-bit samples, ``espeak_SetVoiceByName`` for accent + variant, ``espeak_SetParameter``
for rate, pitch, pitch range and word gap. eSpeak NG is GPL-3.0; it is loaded at run time only to
generate training data, and ``data.synthetic.speech=formant`` avoids it altogether.

Voices are ``<accent>+<variant>``. The variant (a formant/pitch/breath profile) is what makes a
speaker, so the splits get disjoint variant lists (speaker-disjoint, as VoiceBank-DEMAND is);
sentences come from the grammar in :mod:`meanflowse.data.sentences`, one split per sentence.
"""

from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from meanflowse.data.sentences import sentence

PACKAGE = "espeakng-loader"
HINT = (
    "pip install espeakng-loader==0.2.4 (requirements.txt pins it), or use the formant "
    "voices instead: data.synthetic.speech=formant"
)

# English accents shipped in espeak-ng-data/lang/gmw (en-Shaw is Shavian script: left out).
ACCENTS = (
    "en",
    "en-US",
    "en-GB-x-rp",
    "en-GB-scotland",
    "en-GB-x-gbclan",
    "en-GB-x-gbcwmd",
    "en-US-nyc",
    "en-029",
)
# Adult, human-sounding variants of espeak-ng-data/voices/!v (robotic, whispered, echo-heavy,
# child-like and joke voices left out; each checked for a pitch track inside 70-300 Hz), split
# so that no variant is in two splits.
VARIANTS = {
    "train": (
        "m1",
        "m2",
        "m4",
        "m5",
        "m6",
        "m8",
        "Andy",
        "Denis",
        "antonio",
        "sandro",
        "travis",
        "victor",
        "Hugo",
        "miguel",
        "adam",
        "benjamin",
        "edward",
        "john",
        "norbert",
        "gustave",
        "iven2",
        "edward2",
        "mike2",
        "Gene",
        "f1",
        "f2",
        "f4",
        "f5",
        "Andrea",
        "Annie",
        "belinda",
        "linda",
        "steph",
        "steph2",
        "grandma",
    ),
    "valid": ("m3", "Lee", "iven", "f3", "aunty"),
    "test": ("m7", "Henrique", "michel", "Diogo", "Marco", "steph3", "Alicia", "shelby"),
}
# eSpeak NG's Klatt variants (espeak-ng-data/voices/!v/klatt..klatt6): the same phonemes through
# its Klatt formant synthesiser, each with another voicing source. Training only (data.synthetic.
# train_klatt_share), so the splits stay speaker-disjoint; all six speak at a male pitch. At the
# default volume klatt4 and klatt5 clip a few samples a sentence (2-3 in four sentences), so they
# speak at KLATT_VOLUME: over 120 sentences with the corpus's voice draws none reached full scale,
# the highest peak 26.1k of 32.8k (klatt5; checked 2026-12-08).
KLATT_VARIANTS = ("klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6")
KLATT_VOLUME = 50
_FEMALE = {
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "Andrea",
    "Annie",
    "belinda",
    "linda",
    "steph",
    "steph2",
    "steph3",
    "grandma",
    "aunty",
    "Alicia",
    "shelby",
}


class TTSUnavailable(RuntimeError):
    """eSpeak NG could not be loaded or initialised; the message says what to do."""


@dataclass(frozen=True)
class Voice:
    accent: str
    variant: str
    rate: int  # words per minute (eSpeak default 175)
    pitch: int  # base pitch 0-100 (default 50)
    range: int  # pitch range 0-100 (default 50)
    word_gap: int  # extra pause between words, units of 10 ms
    volume: int = 100  # eSpeak's amplitude 0-200 (its default 100)

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant}"

    @property
    def female(self) -> bool:
        return self.variant in _FEMALE


def draw_voice(rng: np.random.Generator, split: str, exclude: str | None = None) -> Voice:
    """A speaker of ``split``: accent, variant, speaking rate, pitch, pitch range, word gap."""
    variants = [v for v in VARIANTS[split] if v != exclude] or list(VARIANTS[split])
    return Voice(
        accent=ACCENTS[rng.integers(len(ACCENTS))],
        variant=variants[rng.integers(len(variants))],
        rate=int(rng.integers(130, 211)),
        pitch=int(rng.integers(35, 61)),
        range=int(rng.integers(30, 81)),
        word_gap=int(rng.integers(0, 4)),
    )


class _Engine:
    """One freshly loaded eSpeak NG library; use it through :func:`session`.

    eSpeak keeps synthesis state in static variables that survive ``espeak_Terminate`` and
    ``espeak_ng_SetRandSeed``: measured, the same call gives other samples (even another length)
    each time it is repeated in one process, while a fresh process repeats itself exactly. A file
    must be a pure function of its seed, so every session loads the library afresh and unloads it
    afterwards (about 12 ms), and the calls inside one session are a fixed sequence.
    """

    # espeak_PARAMETER values and flags from speak_lib.h
    RATE, VOLUME, PITCH, RANGE, WORDGAP = 1, 2, 3, 4, 7
    OUTPUT_SYNCHRONOUS, POS_CHARACTER, CHARS_UTF8 = 1, 1, 1  # ENOUTPUT_MODE_SYNCHRONOUS
    PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: phonememode bit 1, IPA as UTF-8
    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self) -> None:
        try:
            import espeakng_loader

            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data = espeakng_loader.get_data_path()
        except (ImportError, OSError, RuntimeError) as err:
            raise TTSUnavailable(
                f"the TTS speech source needs the {PACKAGE} package "
                f"(eSpeak NG), which could not be loaded: {err}. {HINT}"
            ) from err
        self.lib, self.sample_rate = lib, 0
        try:
            lib.espeak_ng_InitializePath.argtypes = [ctypes.c_char_p]
            lib.espeak_ng_Initialize.argtypes = [ctypes.c_void_p]
            lib.espeak_ng_InitializeOutput.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_uint,
                ctypes.c_uint,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
            lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        except AttributeError as err:
            self.close()
            raise TTSUnavailable(
                f"the eSpeak NG library of {PACKAGE} lacks a function this project calls ({err}). {HINT}"
            ) from err
        # The espeak_ng_* initialisers return a status; the older espeak_Initialize calls exit()
        # when the voice data cannot be read, which would end the whole training process.
        lib.espeak_ng_InitializePath(data.encode())
        status = lib.espeak_ng_Initialize(None)
        if status == 0:
            status = lib.espeak_ng_InitializeOutput(self.OUTPUT_SYNCHRONOUS, 0, None)
        if status != 0:
            self.close()
            raise TTSUnavailable(
                f"eSpeak NG from {PACKAGE} failed to initialise with its data "
                f"folder {data} (status {status:#x}). {HINT}"
            )
        self.sample_rate = lib.espeak_ng_GetSampleRate()
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._collect)  # kept alive as long as the engine
        lib.espeak_SetSynthCallback(self._callback)

    def close(self) -> None:
        if self.lib is None:
            return
        if self.sample_rate:
            self.lib.espeak_Terminate()
        handle, self.lib = self.lib._handle, None
        _ctypes.dlclose(handle)  # the next session maps the library, and its statics, afresh

    def _collect(self, wav, count, _events) -> int:
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0: go on synthesising

    def synth(self, text: str, voice: Voice, seed: int = 0) -> np.ndarray:
        """int16 samples at ``self.sample_rate`` of ``text`` spoken by ``voice``."""
        if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise TTSUnavailable(
                f"eSpeak NG has no voice {voice.name!r} in its data folder; is "
                f"{PACKAGE} 0.2.4 installed? {HINT}"
            )
        for param, value in (
            (self.RATE, voice.rate),
            (self.PITCH, voice.pitch),
            (self.RANGE, voice.range),
            (self.WORDGAP, voice.word_gap),
            (self.VOLUME, voice.volume),
        ):
            self.lib.espeak_SetParameter(param, value, 0)
        self.lib.espeak_ng_SetRandSeed(seed)  # eSpeak's breath-noise generator
        raw = text.encode()
        self._chunks = []
        err = self.lib.espeak_Synth(raw, len(raw) + 1, 0, self.POS_CHARACTER, 0, self.CHARS_UTF8, None, None)
        if err != 0:
            raise TTSUnavailable(f"eSpeak NG failed to synthesise {text!r} (code {err}). {HINT}")
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def phonemes(self, text: str, voice: str = "en-us") -> str:
        """IPA phonemes (UTF-8) of ``text`` as ``voice`` would say it, one clause after another."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise TTSUnavailable(f"eSpeak NG has no voice {voice!r} in its data folder. {HINT}")
        raw = ctypes.create_string_buffer(text.encode())
        cursor = ctypes.c_void_p(ctypes.addressof(raw))  # eSpeak moves it clause by clause, NULL at the end
        clauses = []
        while cursor.value:
            ipa = self.lib.espeak_TextToPhonemes(ctypes.byref(cursor), self.CHARS_UTF8, self.PHONEMES_IPA)
            if ipa is None:  # nothing more it can read: stop rather than ask again forever
                break
            clauses.append(ipa)
        return " ".join(c.decode() for c in clauses if c)


_LOCK = threading.Lock()  # eSpeak's C state is process-wide: one session at a time


@contextlib.contextmanager
def session() -> Iterator[_Engine]:
    """A fresh eSpeak NG engine for a fixed sequence of calls (one corpus file).

    Raises :class:`TTSUnavailable`, saying what to do, when the library cannot be loaded.
    """
    with _LOCK:
        eng = _Engine()
        try:
            yield eng
        finally:
            eng.close()


def check_available() -> None:
    """Raise :class:`TTSUnavailable` now (before a long generation) if eSpeak cannot load."""
    with session():
        pass


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int):
    import torchaudio

    return torchaudio.transforms.Resample(orig, new)  # builds its sinc kernel once (~0.1 s)


def _resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    if orig == new:
        return x
    import torch

    with torch.no_grad():
        x32 = torch.from_numpy(x.astype(np.float32))  # 16-bit source: float32 is exact enough
        return _resampler(orig, new)(x32).numpy().astype(np.float64)


def utterance(
    eng: _Engine,
    rng: np.random.Generator,
    split: str,
    num_samples: int,
    sample_rate: int,
    voice: Voice | None = None,
) -> tuple[np.ndarray, dict]:
    """Speech of exactly ``num_samples`` samples with peak 1 (float64), and what was said by whom.

    Sentences by one voice follow each other with short pauses until the length is filled; the
    speech starts after a short random lead-in and is cut at the end when it overruns.
    """
    voice = voice or draw_voice(rng, split)

    def speak(text: str, g: np.random.Generator) -> np.ndarray:
        return eng.synth(text, voice, seed=int(g.integers(2**31))).astype(np.float64) / 32768.0

    out, texts = fill_with_sentences(rng, split, num_samples, sample_rate, speak, eng.sample_rate)
    return out, {"voice": voice.name, "text": texts}


def fill_with_sentences(
    rng: np.random.Generator,
    split: str,
    num_samples: int,
    sample_rate: int,
    speak,
    native_rate: int,
) -> tuple[np.ndarray, str]:
    """``speak(text, rng) -> samples at native_rate`` for sentences of ``split`` with short pauses
    until ``num_samples`` at ``sample_rate`` are filled: the signal with peak 1 and what was said."""
    need = int(np.ceil(num_samples * native_rate / sample_rate))
    lead = int(rng.uniform(0.0, 0.3) * native_rate)
    parts, total, texts = [np.zeros(lead)], lead, []
    while total < need:
        text = sentence(rng, split)
        wav = speak(text, rng)
        pause = np.zeros(int(rng.uniform(0.15, 0.5) * native_rate))
        parts += [wav, pause]
        total += len(wav) + len(pause)
        texts.append(text)
    out = _resample(np.concatenate(parts)[:need], native_rate, sample_rate)[:num_samples]
    out = np.pad(out, (0, num_samples - len(out)))
    fade = min(len(out), int(0.01 * sample_rate))  # no click where the last sentence is cut
    if fade:
        out[-fade:] *= np.linspace(1.0, 0.0, fade)
    peak = np.abs(out).max()
    return out / max(peak, 1e-12), " ".join(texts)
