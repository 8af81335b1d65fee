"""Robust loading of every kind of bad input, folder scanning and the resample cache."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import soundfile as sf

from meanflowse.data import folder_cache
from meanflowse.data.audio import AudioError, TruncatedAudioWarning, load_audio, peak_scale
from meanflowse.data.folder import (
    DatasetError,
    DatasetWarning,
    scan_split,
)
from meanflowse.data.folder_cache import cache_path, prepare_dataset, prepare_split
from meanflowse.data.prepare import main as prepare_main

SR = 16000


def tone(n: int = SR // 2, sr: int = SR, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def write(path, data, sr=SR, subtype="PCM_16", **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype, **kw)
    return path


def pair(root, split, name, data=None, sr=SR, ext=".wav", noisy_data=None, **kw):
    data = tone() if data is None else data
    write(root / split / "clean" / f"{name}{ext}", data, sr, **kw)
    write(root / split / "noisy" / f"{name}{ext}", data if noisy_data is None else noisy_data, sr, **kw)


# ----------------------------------------------------------------------------- load_audio
def test_missing_empty_and_non_audio_files_raise_audio_error(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty.wav: empty file \(0 bytes\)"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "text.wav").write_text("this is not a wav file, just some text\n" * 10)
    with pytest.raises(AudioError, match="text.wav: not a readable audio file.*convert"):
        load_audio(tmp_path / "text.wav")
    header_only = write(tmp_path / "hdr.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="no samples"):
        load_audio(header_only)


def test_truncated_wav_loads_what_is_there_with_a_warning(tmp_path):
    full = write(tmp_path / "full.wav", tone(SR))
    data = full.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: 44 + 2 * 5000])
    with pytest.warns(TruncatedAudioWarning, match="cut.wav: truncated"):
        wav, sr = load_audio(tmp_path / "cut.wav")
    assert sr == SR and wav.shape == (5000,)
    np.testing.assert_allclose(wav.numpy(), tone(SR)[:5000], atol=1 / 32768)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(full)  # an intact file does not warn


def test_nan_samples_raise_and_values_beyond_one_are_kept(tmp_path):
    bad = tone()
    bad[100] = np.nan
    write(tmp_path / "nan.wav", bad, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan.wav: 1 NaN or infinite samples \(first at sample 100\)"):
        load_audio(tmp_path / "nan.wav")
    loud = tone(amp=3.0)
    write(tmp_path / "loud.wav", loud, subtype="FLOAT")
    wav, _ = load_audio(tmp_path / "loud.wav")
    assert wav.abs().max() == pytest.approx(3.0)
    assert (wav / peak_scale(wav)).abs().max() == pytest.approx(1.0)


def test_zeros_load_and_normalise_without_nan(tmp_path):
    wav, _ = load_audio(write(tmp_path / "zeros.wav", np.zeros(SR, np.float32)))
    assert wav.abs().max() == 0
    scaled = wav / peak_scale(wav)
    assert scaled.isfinite().all() and scaled.abs().max() == 0


@pytest.mark.parametrize(
    "subtype,atol",
    [
        ("PCM_U8", 1 / 128),
        ("PCM_16", 1 / 32768),
        ("PCM_24", 1 / 2**23),
        ("PCM_32", 1e-7),
        ("FLOAT", 0.0),
        ("DOUBLE", 1e-7),
    ],
)
def test_sample_formats_load_as_float_in_range(tmp_path, subtype, atol):
    x = tone(amp=0.9)
    wav, sr = load_audio(write(tmp_path / f"{subtype}.wav", x, subtype=subtype))
    assert wav.dtype.is_floating_point and str(wav.dtype) == "torch.float32" and sr == SR
    assert wav.abs().max() <= 1.0
    np.testing.assert_allclose(wav.numpy(), x, atol=atol + 1e-7)


def test_flac_and_multichannel(tmp_path):
    x = tone()
    wav, _ = load_audio(write(tmp_path / "a.flac", x, format="FLAC"))
    np.testing.assert_allclose(wav.numpy(), x, atol=1 / 32768)
    three = np.stack([x, 0.5 * x, np.zeros_like(x)], axis=1)
    path = write(tmp_path / "three.wav", three, subtype="FLOAT")
    mono, _ = load_audio(path)
    np.testing.assert_allclose(mono.numpy(), x * 0.5, atol=1e-7)  # mean of the channels
    multi, _ = load_audio(path, mono=False)
    assert multi.shape == (3, len(x))


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_other_rates_are_resampled(tmp_path, rate):
    n = rate // 2
    wav, sr = load_audio(write(tmp_path / f"{rate}.wav", tone(n, rate, 440.0), rate), target_sr=SR)
    assert sr == SR and wav.shape == (math.ceil(n * SR / rate),)
    spectrum = np.abs(np.fft.rfft(wav.numpy() * np.hanning(len(wav))))
    assert abs(np.argmax(spectrum) * SR / len(wav) - 440.0) < 5.0
    same, sr = load_audio(tmp_path / f"{rate}.wav")
    assert sr == rate and same.shape == (n,)


# ----------------------------------------------------------------------------- scanning
def test_scan_reports_all_problems_at_once(tmp_path):
    pair(tmp_path, "train", "good")
    write(tmp_path / "train" / "noisy" / "lonely_noisy.wav", tone())
    write(tmp_path / "train" / "clean" / "lonely_clean.wav", tone())
    pair(tmp_path, "train", "dup")
    write(tmp_path / "train" / "noisy" / "dup.flac", tone(), format="FLAC")
    pair(tmp_path, "train", "text")
    (tmp_path / "train" / "noisy" / "text.wav").write_text("not audio")
    pair(tmp_path, "train", "empty")
    (tmp_path / "train" / "clean" / "empty.wav").write_bytes(b"")
    pair(tmp_path, "train", "short", data=tone(1))
    pair(tmp_path, "train", "skew", noisy_data=tone(SR))
    (tmp_path / "train" / "noisy" / "phone.m4a").write_bytes(b"\0" * 64)
    (tmp_path / "train" / "noisy" / "README.txt").write_text("ignored")
    with pytest.raises(DatasetError) as info:
        scan_split(tmp_path, "train")
    problems = info.value.problems
    expected = [
        "lonely_noisy.wav: no clean partner",
        "lonely_clean.wav: no noisy partner",
        "dup.flac and dup.wav have the same name",
        "text.wav: not a readable audio file",
        "empty.wav: empty file",
        "short: too short: 1 samples",
        "skew: clean has 8000 samples and noisy 16000",
        "phone.m4a: .m4a cannot be read",
    ]
    for text in expected:
        assert sum(text in p for p in problems) == 1, (text, problems)
    assert len(problems) == len(expected)
    assert f"{len(expected)} problem(s)" in str(info.value)


def test_scan_missing_and_empty_splits(tmp_path):
    with pytest.raises(DatasetError, match="split folder not found"):
        scan_split(tmp_path, "train")
    (tmp_path / "train" / "clean").mkdir(parents=True)
    (tmp_path / "train" / "noisy").mkdir()
    with pytest.raises(DatasetError, match="no audio files"):
        scan_split(tmp_path, "train")
    write(tmp_path / "valid" / "noisy" / "a.wav", tone())
    with pytest.raises(DatasetError, match="clean: folder not found"):
        scan_split(tmp_path, "valid")  # train and valid need clean files


def test_pairs_match_recursively_across_formats_and_test_may_be_noisy_only(tmp_path):
    write(tmp_path / "train" / "clean" / "spk1" / "a.flac", tone(), format="FLAC")
    write(tmp_path / "train" / "noisy" / "spk1" / "a.wav", tone())
    pair(tmp_path, "train", "b")
    scanned = scan_split(tmp_path, "train")
    assert [p.name for p in scanned] == ["b", "spk1/a"]
    write(tmp_path / "test" / "noisy" / "x.wav", tone())
    [only] = prepare_split(tmp_path, "test")
    assert only.clean is None and only.noisy.name == "x.wav"


def test_small_length_differences_are_trimmed(tmp_path):
    pair(tmp_path, "train", "a", data=tone(SR), noisy_data=tone(SR - 100))
    [p] = prepare_split(tmp_path, "train", length_tolerance_s=0.02)
    assert p.length == SR - 100
    with pytest.raises(DatasetError, match="misaligned"):
        prepare_split(tmp_path, "train", length_tolerance_s=0.001)


def test_truncated_and_silent_files_are_reported_as_warnings(tmp_path):
    pair(tmp_path, "train", "a", noisy_data=np.zeros(SR // 2, np.float32))
    data = write(tmp_path / "full.wav", tone(SR)).read_bytes()
    (tmp_path / "train" / "clean" / "b.wav").write_bytes(data[: 44 + 2 * 8000])
    write(tmp_path / "train" / "noisy" / "b.wav", tone(8000))
    with pytest.warns(DatasetWarning) as record:
        pairs = prepare_split(tmp_path, "train")
    messages = " ".join(str(r.message) for r in record)
    assert "1 truncated file(s)" in messages and "clean/b.wav" in messages
    assert "1 all-zero noisy file(s)" in messages and "noisy/a.wav" in messages
    assert [p.length for p in pairs] == [SR // 2, 8000]


def test_nan_found_when_preparing(tmp_path):
    bad = tone()
    bad[7] = np.inf
    pair(tmp_path, "train", "a", noisy_data=bad, subtype="FLOAT")
    pair(tmp_path, "train", "b", data=tone(1))
    pair(tmp_path, "valid", "c")
    (tmp_path / "valid" / "noisy" / "c.wav").write_text("not audio")
    with pytest.raises(DatasetError) as info:
        prepare_dataset(tmp_path)
    problems = info.value.problems  # header and sample problems of all splits in one error
    assert len(problems) == 3
    assert any("noisy/a.wav: 1 NaN or infinite samples (first at sample 7)" in p for p in problems)
    assert any("b: too short" in p for p in problems)
    assert any("valid/noisy/c.wav: not a readable audio file" in p for p in problems)


# ----------------------------------------------------------------------------- cache
def test_resample_cache_is_created_reused_and_keyed_by_rate(tmp_path, monkeypatch):
    pair(tmp_path, "train", "native")
    pair(tmp_path, "train", "narrow", data=tone(4000, 8000), sr=8000)
    pair(tmp_path, "train", "cd", data=tone(22050, 44100), sr=44100, ext=".flac", format="FLAC")
    stereo = np.stack([tone(), tone()], axis=1)
    pair(tmp_path, "train", "stereo", data=stereo)

    pairs = {p.name: p for p in prepare_split(tmp_path, "train", sample_rate=SR)}
    cache = cache_path(tmp_path, SR)
    assert cache.parent == tmp_path / ".cache" and cache.name.startswith("sr16000-")
    assert pairs["native"].noisy == pairs["native"].noisy_source  # read in place
    for name, length in (("narrow", 8000), ("cd", 8000), ("stereo", 8000)):
        p = pairs[name]
        assert p.noisy == cache / "train" / "noisy" / f"{name}.wav" and p.length == length
        info = sf.info(str(p.noisy))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, "FLOAT", length)
    stamps = {f: f.stat().st_mtime_ns for f in cache.rglob("*.wav")}
    assert len(stamps) == 6

    calls = []
    real = folder_cache._verify
    monkeypatch.setattr(folder_cache, "_verify", lambda *a: calls.append(a[0].path.name) or real(*a))
    again = {p.name: p for p in prepare_split(tmp_path, "train", sample_rate=SR)}
    assert again == pairs and calls == []  # nothing read again
    assert {f: f.stat().st_mtime_ns for f in cache.rglob("*.wav")} == stamps

    write(tmp_path / "train" / "noisy" / "narrow.wav", tone(4000, 8000, amp=0.25), 8000)
    prepare_split(tmp_path, "train", sample_rate=SR)
    assert calls == ["narrow.wav"]  # a changed source is prepared again

    calls.clear()
    at8k = {p.name: p for p in prepare_split(tmp_path, "train", sample_rate=8000)}
    assert len(calls) == 8 and cache_path(tmp_path, 8000) != cache
    assert at8k["narrow"].noisy == at8k["narrow"].noisy_source and at8k["native"].length == 4000
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


def test_cache_dir_setting_and_removed_cache_files(tmp_path):
    pair(tmp_path / "data", "train", "a", data=tone(4000, 8000), sr=8000)
    [p] = prepare_split(tmp_path / "data", "train", cache_dir=tmp_path / "elsewhere")
    assert p.noisy.is_relative_to(tmp_path / "elsewhere") and not (tmp_path / "data" / ".cache").exists()
    p.noisy.unlink()
    [p] = prepare_split(tmp_path / "data", "train", cache_dir=tmp_path / "elsewhere")
    assert p.noisy.is_file()


def test_prepare_cli(tmp_path, capsys):
    pair(tmp_path, "train", "a", data=tone(24000, 48000), sr=48000)
    pair(tmp_path, "test", "b")
    assert prepare_main([f"data.base_dir={tmp_path}", "data.sample_rate=16000"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "1 noisy file(s) read from the cache" in out
    (tmp_path / "test" / "noisy" / "b.wav").write_bytes(b"")
    assert prepare_main([f"base_dir={tmp_path}"]) == 1
    assert "b.wav: empty file" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown argument"):
        prepare_main([f"data.base_dir={tmp_path}", "data.sampel_rate=8000"])
    with pytest.raises(SystemExit, match="data.sample_rate must be int"):
        prepare_main([f"data.base_dir={tmp_path}", "data.sample_rate=16k"])
    assert os.path.isdir(tmp_path / ".cache")
