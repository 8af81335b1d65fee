"""The built-in synthetic corpus: determinism, layout, SNR, marker and temp-folder behaviour."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from meanflowse.data import sentences as grammar
from meanflowse.data import synthetic, tts
from meanflowse.data.synthetic import MARKER, NOISE_KINDS, generate_dataset, make_pair

TINY = dict(num_train=3, num_valid=1, num_test=1, duration_s=(0.5, 1.0), snr_db=(0.0, 10.0))


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    return 10 * np.log10(np.sum(clean.astype(float) ** 2) / np.sum((noisy - clean).astype(float) ** 2))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate_dataset(tmp_path / "a", **TINY, seed=3)
    b = generate_dataset(tmp_path / "b", **TINY, seed=3)
    c = generate_dataset(tmp_path / "c", **TINY, seed=4)
    assert _files(a) == _files(b) == _files(c)
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    wavs = [rel for rel in _files(a) if rel.suffix == ".wav"]
    assert all((a / rel).read_bytes() != (c / rel).read_bytes() for rel in wavs)


def test_files_do_not_depend_on_split_sizes(tmp_path):
    small = generate_dataset(tmp_path / "small", **{**TINY, "num_train": 2})
    big = generate_dataset(tmp_path / "big", **TINY)
    for rel in _files(small):
        if rel.suffix == ".wav":
            assert (small / rel).read_bytes() == (big / rel).read_bytes()


def test_layout_lengths_levels_and_metadata(tmp_path):
    root = generate_dataset(tmp_path / "syn", **{**TINY, "num_test": 0}, sample_rate=8000)
    assert not (root / "test").exists()  # a split of zero files gets no folder
    for split, count in (("train", 3), ("valid", 1)):
        clean = sorted(p.name for p in (root / split / "clean").iterdir())
        noisy = sorted(p.name for p in (root / split / "noisy").iterdir())
        assert clean == noisy == [f"{split}_{i:05d}.wav" for i in range(count)]
        rows = list(csv.DictReader(open(root / split / "metadata.csv")))
        assert [r["name"] for r in rows] == clean
        for name in clean:
            info = sf.info(str(root / split / "noisy" / name))
            assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
            assert 0.5 * 8000 <= info.frames <= 1.0 * 8000 + 1
            c, _ = sf.read(str(root / split / "clean" / name))
            y, _ = sf.read(str(root / split / "noisy" / name))
            assert len(c) == len(y) == info.frames
            assert 0.25 < np.abs(y).max() < 1.0 and np.abs(c).max() < 1.0
    marker = json.loads((root / MARKER).read_text())
    assert marker["settings"]["counts"] == {"train": 3, "valid": 1, "test": 0}


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_every_noise_kind_mixes_at_the_drawn_snr(kind):
    settings = synthetic._settings(1, 0, 0, 16000, (1.0, 1.0), (-5.0, 20.0), [kind], 0)
    for index in range(2):
        clean, noisy, info = make_pair(settings, "train", index)
        assert info["noise"] == kind and np.isfinite(noisy).all()
        assert -5.0 <= info["snr_db"] <= 20.0
        assert abs(_snr(clean, noisy) - info["snr_db"]) < 0.01


def test_snr_of_written_files_is_within_range(tmp_path):
    root = generate_dataset(
        tmp_path / "syn", num_train=8, num_valid=0, num_test=0, duration_s=(0.5, 1.0), snr_db=(2.0, 8.0)
    )
    rows = {r["name"]: r for r in csv.DictReader(open(root / "train" / "metadata.csv"))}
    for name, row in rows.items():
        c, _ = sf.read(str(root / "train" / "clean" / name))
        y, _ = sf.read(str(root / "train" / "noisy" / name))
        snr = _snr(c, y)
        assert 2.0 - 0.05 <= snr <= 8.0 + 0.05
        assert abs(snr - float(row["snr_db"])) < 0.05  # 16-bit rounding only


def test_speech_like_signal_has_pauses_and_a_pitch():
    x = synthetic.speech_like(np.random.default_rng(0), 48000, 16000)
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    energy = (frames**2).mean(axis=1)
    assert (energy < 1e-4 * energy.max()).mean() > 0.05  # pauses / gaps between syllables
    assert (energy > 1e-2 * energy.max()).mean() > 0.3  # and mostly sound
    loud = frames[np.argmax(energy)]
    ac = np.correlate(loud, loud, "full")[len(loud) - 1 :]
    lag = 16000 // 400 + np.argmax(ac[16000 // 400 : 16000 // 60])
    assert ac[lag] > 0.3 * ac[0]  # periodic at a voice pitch between 60 and 400 Hz


def test_marker_makes_it_idempotent_and_a_change_regenerates(tmp_path, monkeypatch):
    out = generate_dataset(tmp_path / "syn", **TINY)
    stamp = (out / MARKER).stat().st_mtime_ns

    def boom(*args, **kwargs):
        raise AssertionError("must not generate again")

    monkeypatch.setattr(synthetic, "make_pair", boom)
    assert generate_dataset(tmp_path / "syn", **{**TINY, "duration_s": [0.5, 1.0]}) == out
    assert (out / MARKER).stat().st_mtime_ns == stamp
    monkeypatch.undo()
    generate_dataset(tmp_path / "syn", **{**TINY, "num_train": 2})
    assert len(list((out / "train" / "clean").iterdir())) == 2
    assert json.loads((out / MARKER).read_text())["settings"]["counts"]["train"] == 2


def test_interrupted_run_leaves_no_half_dataset(tmp_path, monkeypatch):
    real = synthetic.make_pair
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(synthetic, "make_pair", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "syn", **TINY)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp folder

    monkeypatch.setattr(synthetic, "make_pair", real)
    out = generate_dataset(tmp_path / "syn", **TINY)
    before = _files(out)
    calls.clear()
    monkeypatch.setattr(synthetic, "make_pair", flaky)
    with pytest.raises(KeyboardInterrupt):  # a changed setting, interrupted: the old set stays
        generate_dataset(tmp_path / "syn", **{**TINY, "seed": 9})
    assert _files(out) == before
    assert json.loads((out / MARKER).read_text())["settings"]["seed"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["syn"]


def test_refuses_to_overwrite_a_foreign_folder_and_checks_settings(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        generate_dataset(tmp_path / "mine", **TINY)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="noise_kinds"):
        generate_dataset(tmp_path / "x", **TINY, noise_kinds=["jackhammer"])
    with pytest.raises(ValueError, match="snr_db"):
        generate_dataset(tmp_path / "x", **{**TINY, "snr_db": (10, 0)})
    for key, bad in [
        ("snr_db", "05"),
        ("snr_db", 5),
        ("train_rt60_s", (0.1, 4.0)),
        ("duration_s", (0.01, 1.0)),
    ]:
        with pytest.raises(ValueError, match=f"{key} must be \\(low, high\\)"):
            generate_dataset(tmp_path / "x", **{**TINY, key: bad})
    assert not (tmp_path / "x").exists()  # nothing written for bad settings


# ----------------------------------------------------------------------------- the TTS speech
def _frames(x: np.ndarray, size: int) -> np.ndarray:
    return x[: len(x) // size * size].reshape(-1, size)


def _pitch_track(x: np.ndarray, sr: int) -> np.ndarray:
    """f0 (Hz) of the voiced 40 ms frames: normalised autocorrelation peak over 60-400 Hz > 0.5."""
    f0 = []
    for frame in _frames(x, int(0.04 * sr)):
        frame = frame - frame.mean()
        ac = np.correlate(frame, frame, "full")[len(frame) - 1 :]
        if ac[0] < 1e-6:
            continue
        lo, hi = sr // 400, sr // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            f0.append(sr / lag)
    return np.array(f0)


@pytest.mark.parametrize("split,index", [(s, i) for s in ("train", "valid", "test") for i in range(4)])
def test_tts_clean_file_is_speech(split, index):
    settings = synthetic._settings(0, 0, 0, 16000, (3.0, 3.0), (0.0, 10.0), ["white"], 0)
    clean, _, info = make_pair(settings, split, index)
    sr = 16000
    f0 = _pitch_track(clean.astype(float), sr)
    assert len(f0) >= 10, "too few voiced frames"
    assert 70 <= np.median(f0) <= 300 and np.mean((f0 >= 70) & (f0 <= 300)) > 0.8, info
    # syllable rhythm: between 1 and 20 Hz, the 10 ms energy envelope is modulated most at 1.5-9 Hz
    env = np.sqrt((_frames(clean.astype(float), sr // 100) ** 2).mean(axis=1))
    spec = np.abs(np.fft.rfft(env - env.mean()))
    freqs = np.fft.rfftfreq(len(env), 0.01)
    band = (freqs >= 1.0) & (freqs <= 20.0)
    assert 1.5 <= freqs[band][np.argmax(spec[band])] <= 9.0
    # silence between words: quiet 10 ms frames inside the utterance, not only at its edges
    db = 20 * np.log10(env / env.max() + 1e-9)
    active = np.nonzero(db > -30)[0]
    inner = db[active[0] : active[-1]]
    assert (inner < -40).sum() >= 3, "no pauses between words"


def test_tts_splits_share_no_sentence_and_no_voice(tmp_path):
    root = generate_dataset(
        tmp_path / "syn", num_train=40, num_valid=6, num_test=6, duration_s=(0.5, 0.5), noise_kinds=["white"]
    )
    rows = {
        split: list(csv.DictReader(open(root / split / "metadata.csv")))
        for split in ("train", "valid", "test")
    }

    def sentences(split):
        return {s.strip() for r in rows[split] for s in grammar.sentences_of(r["text"])}

    def variants(split):
        return {r["voice"].split("+")[1] for r in rows[split]}

    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not sentences(a) & sentences(b), (a, b)
        assert not variants(a) & variants(b), (a, b)
    assert len(variants("train")) > 10  # many speakers, male and female
    assert {tts.Voice("en", v, 0, 0, 0, 0).female for v in variants("train")} == {True, False}
    for split in rows:  # every sentence is of its own split (the hash rule)
        assert all(
            grammar.split_of_sentence(s) == split
            for r in rows[split]
            for s in grammar.sentences_of(r["text"])
        ), split


def test_tts_file_does_not_depend_on_what_was_synthesised_before():
    settings = synthetic._settings(0, 0, 0, 16000, (1.0, 1.0), (0.0, 10.0), ["talkers"], 0)
    first = make_pair(settings, "train", 5)
    make_pair(settings, "test", 1)  # other voices and sentences in between
    again = make_pair(settings, "train", 5)
    assert first[2] == again[2]
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_talkers_babble_speaks_with_other_voices_than_the_clean_one(monkeypatch):
    spoken = []
    real = tts.utterance

    def spy(eng, rng, split, n, sr, voice=None):
        spoken.append((split, voice.variant))
        return real(eng, rng, split, n, sr, voice=voice)

    monkeypatch.setattr(tts, "utterance", spy)
    settings = synthetic._settings(0, 0, 0, 16000, (1.0, 1.0), (0.0, 10.0), ["talkers"], 0)
    make_pair(settings, "test", 0)
    (_, clean_voice), talkers = spoken[0], spoken[1:]
    assert 3 <= len(talkers) <= 6
    assert all(s == "test" and v != clean_voice and v in tts.VARIANTS["test"] for s, v in talkers)


def test_missing_tts_library_says_which_package_and_the_way_out(tmp_path, monkeypatch):
    import espeakng_loader

    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(tmp_path / "nope.so"))
    with pytest.raises(tts.TTSUnavailable) as err:
        generate_dataset(tmp_path / "syn", **TINY)
    assert "espeakng-loader" in str(err.value) and "data.synthetic.speech=formant" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    root = generate_dataset(tmp_path / "syn", **TINY, speech="formant")  # the way out works
    assert json.loads((root / MARKER).read_text())["settings"]["speech"] == "formant"


def test_broken_tts_data_folder_gives_a_clear_error(tmp_path, monkeypatch):
    import espeakng_loader

    (tmp_path / "data").mkdir()
    monkeypatch.setattr(espeakng_loader, "get_data_path", lambda: str(tmp_path / "data"))
    with pytest.raises(tts.TTSUnavailable, match="espeakng-loader.*data.synthetic.speech=formant"):
        make_pair(synthetic._settings(0, 0, 0, 16000, (0.5, 0.5), (0, 10), ["white"], 0), "train", 0)


def test_unknown_speech_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="data.synthetic.speech"):
        generate_dataset(tmp_path / "x", **TINY, speech="festival")
