"""The real-voice check's mixes: the drawn SNR is the written one, names carry it, and per_snr
averages eval.py's metrics.csv per SNR; the corpus's training-only knobs (near-clean share, the
training SNR range, the spectral tilt, rooms, channels) leave valid and test byte for byte as they were."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import load_script
from meanflowse.data import synthetic
from meanflowse.data.real_mixes import mix_name, per_snr, write_mixes
from meanflowse.data.signals import CHANNEL_POINTS_HZ, channel_response, spectral_tilt, speech_like

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
SR = 16000


def measured_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    return 10 * math.log10(
        np.sum(clean.astype(np.float64) ** 2) / np.sum((noisy - clean).astype(np.float64) ** 2)
    )


def test_mixes_are_written_at_their_snr_for_every_kind(tmp_path):
    speech = tmp_path / "speech.wav"
    sf.write(speech, 0.5 * speech_like(np.random.default_rng(1), SR, SR), SR, subtype="PCM_16")
    kinds = ("white", "hum", "talkers")
    noisy = write_mixes(speech, tmp_path / "mixes", snrs_db=(0, 20), kinds=kinds, draws=2)
    assert len(noisy) == 2 * 3 * 2
    for snr in (0, 20):
        for kind in kinds:
            for draw in range(2):
                name = mix_name(snr, kind, draw)
                clean, _ = sf.read(tmp_path / "mixes" / "clean" / name)
                mix, sr = sf.read(tmp_path / "mixes" / "noisy" / name)
                assert sr == SR and sf.info(tmp_path / "mixes" / "noisy" / name).subtype == "PCM_16"
                assert max(np.abs(mix).max(), np.abs(clean).max()) == pytest.approx(0.9, abs=1e-4)
                assert measured_snr(clean, mix) == pytest.approx(snr, abs=0.05), name
    a = sf.read(tmp_path / "mixes" / "noisy" / mix_name(0, "white", 0))[0]
    b = sf.read(tmp_path / "mixes" / "noisy" / mix_name(0, "white", 1))[0]
    assert not np.array_equal(a, b)  # draws differ
    again = write_mixes(speech, tmp_path / "again", snrs_db=(20, 0), kinds=("talkers", "white"), draws=1)
    for path in again:  # the same bytes, whatever was mixed before (talkers included)
        assert path.read_bytes() == (tmp_path / "mixes" / "noisy" / path.name).read_bytes(), path.name


def test_per_snr_averages_each_snr_and_leaves_out_nan_and_failures(tmp_path):
    rows = [
        {"file": "snr00_white_0.wav", "status": "enhanced", "pesq": "1.5", "noisy_pesq": "1.0"},
        {"file": "snr00_hum_0.wav", "status": "resumed", "pesq": "2.5", "noisy_pesq": "nan"},
        {"file": "snr05_white_0.wav", "status": "enhanced", "pesq": "3.0", "noisy_pesq": "2.0"},
        {"file": "snr05_hum_0.wav", "status": "failed", "pesq": "", "noisy_pesq": ""},
    ]
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "status", "pesq", "noisy_pesq"])
        w.writeheader()
        w.writerows(rows)
    table = per_snr(path)
    assert list(table) == [0, 5]
    assert table[0]["pesq"] == 2.0 and table[0]["noisy_pesq"] == 1.0 and table[0]["files"] == 2
    assert table[5]["pesq"] == 3.0 and table[5]["files"] == 1
    assert math.isnan(table[5]["estoi"])


@pytest.mark.skipif(not (REAL / "speech.wav").is_file(), reason="../shared/data/real is absent")
def test_the_real_recording_mixes_at_every_snr(tmp_path):
    noisy = write_mixes(REAL / "speech.wav", tmp_path, kinds=("pink",), draws=1)
    assert [p.name for p in noisy] == [mix_name(s, "pink", 0) for s in (0, 5, 10, 15, 20)]
    clean, sr = sf.read(REAL / "speech.wav")
    mixed, _ = sf.read(tmp_path / "clean" / noisy[0].name)
    assert sr == SR and len(mixed) == len(clean)
    assert np.corrcoef(mixed, clean)[0, 1] > 0.9999  # the recording itself, rescaled


def _settings(**kw):
    return synthetic._settings(12, 0, 6, SR, (0.5, 0.5), (0.0, 10.0), ["white"], 0, "formant", **kw)


def test_near_clean_share_mixes_that_share_at_the_near_clean_snrs():
    assert "near_clean_share" not in _settings()  # unused: the markers of older datasets still match
    every = _settings(near_clean_share=1.0, near_clean_snr_db=(30.0, 40.0))
    none = _settings()
    for i in range(6):
        clean, noisy, info = synthetic.make_pair(every, "train", i)
        assert 30.0 <= info["snr_db"] <= 40.0
        assert measured_snr(clean, noisy) == pytest.approx(info["snr_db"], abs=0.01)
        assert 0.0 <= synthetic.make_pair(none, "train", i)[2]["snr_db"] <= 10.0
        assert 0.0 <= synthetic.make_pair(every, "test", i)[2]["snr_db"] <= 10.0  # train only
    half = [synthetic.make_pair(_settings(near_clean_share=0.5), "train", i)[2]["snr_db"] for i in range(40)]
    assert 5 <= sum(s >= 30.0 for s in half) <= 35
    for bad in ({"near_clean_share": 1.5}, {"near_clean_share": 0.2, "near_clean_snr_db": (40.0, 30.0)}):
        with pytest.raises(ValueError, match="near_clean"):
            _settings(**bad)


def test_training_knobs_change_training_files_only():
    knobs = _settings(train_snr_db=(20.0, 25.0), train_tilt_db=6.0, near_clean_share=0.5)
    for i in range(6):
        assert all(
            np.array_equal(a, b)
            for a, b in zip(
                synthetic.make_pair(knobs, "test", i)[:2], synthetic.make_pair(_settings(), "test", i)[:2]
            )
        )
        clean, noisy, info = synthetic.make_pair(knobs, "train", i)
        assert 20.0 <= info["snr_db"] <= 25.0 or info["snr_db"] >= 30.0
        assert measured_snr(clean, noisy) == pytest.approx(info["snr_db"], abs=0.01)
    assert "train_tilt_db" not in _settings() and "train_snr_db" not in _settings()
    for bad in ({"train_tilt_db": -1.0}, {"train_snr_db": (10.0, 0.0)}):
        with pytest.raises(ValueError, match="train_"):
            _settings(**bad)


def test_spectral_tilt_is_that_many_db_per_octave_around_1_khz():
    x = np.random.default_rng(0).standard_normal(SR)
    f = np.fft.rfftfreq(SR, 1 / SR)

    def gain_db(y, hz):
        band = (f > 0.95 * hz) & (f < 1.05 * hz)
        return 20 * np.log10(np.abs(np.fft.rfft(y))[band].mean() / np.abs(np.fft.rfft(x))[band].mean())

    for tilt in (-6.0, 3.0):
        y = spectral_tilt(x, SR, tilt)
        assert gain_db(y, 1000) == pytest.approx(0.0, abs=0.3)
        assert gain_db(y, 4000) == pytest.approx(2 * tilt, abs=0.3)
        assert gain_db(y, 250) == pytest.approx(-2 * tilt, abs=0.3)


def test_a_room_response_has_the_asked_reverberation_time_and_direct_to_reverberant_ratio():
    from meanflowse.data.signals import reverberate, room_response

    for rt60, drr in ((0.2, 3.0), (0.5, 10.0)):
        h = room_response(np.random.default_rng(1), SR, rt60, drr)
        assert h[0] == 1.0 and 0.002 * SR - 1 <= np.flatnonzero(h[1:])[0] <= 0.008 * SR  # the gap
        assert 10 * math.log10(1.0 / np.sum(h[1:] ** 2)) == pytest.approx(drr, abs=1e-6)
        # Schroeder's backward integral of the tail falls 60 dB in rt60 (fit between -5 and -25 dB)
        tail = h[np.flatnonzero(h[1:])[0] + 1 :]
        edc = 10 * np.log10(np.cumsum(tail[::-1] ** 2)[::-1] / np.sum(tail**2))
        fit = (edc < -5) & (edc > -25)
        slope = np.polyfit(np.flatnonzero(fit) / SR, edc[fit], 1)[0]
        assert -60 / slope == pytest.approx(rt60, rel=0.1)
    x = np.random.default_rng(2).standard_normal(3000)
    h = room_response(np.random.default_rng(3), SR, 0.1, 6.0)
    assert np.allclose(reverberate(x, h), np.convolve(x, h)[: len(x)])


def test_reverb_share_puts_that_share_of_training_files_in_a_room_and_nothing_else():
    assert "train_reverb_share" not in _settings() and "train_rt60_s" not in _settings()
    plain, half = _settings(), _settings(train_reverb_share=0.5, train_rt60_s=(0.3, 0.3))
    same = []
    for i in range(12):
        test_a, test_b = synthetic.make_pair(plain, "test", i)[:2], synthetic.make_pair(half, "test", i)[:2]
        assert all(np.array_equal(a, b) for a, b in zip(test_a, test_b))  # valid and test: as they were
        (c0, _, i0), (c1, n1, i1) = (
            synthetic.make_pair(plain, "train", i),
            synthetic.make_pair(half, "train", i),
        )
        assert i0 == i1  # the same noise, SNR and text: the room has its own random stream
        assert measured_snr(c1, n1) == pytest.approx(i1["snr_db"], abs=0.01)
        same.append(np.array_equal(c0, c1))
        if not same[-1]:  # in a room: the clean file is the dry one reverberated
            assert abs(np.corrcoef(c0, c1)[0, 1]) < 0.999
    assert 2 <= sum(same) <= 10, same
    for bad in ({"train_reverb_share": 1.5}, {"train_rt60_s": (0.6, 0.2)}, {"train_drr_db": (9.0, 1.0)}):
        with pytest.raises(ValueError, match="train_"):
            _settings(**bad)


def test_a_channel_has_its_gains_at_the_octave_points_and_interpolates_between_them():
    x = np.random.default_rng(0).standard_normal(4 * SR)
    f = np.fft.rfftfreq(len(x), 1 / SR)
    gains = [3.0, -6.0, 0.0, 6.0, -3.0, 9.0, -9.0]
    y = channel_response(x, SR, gains)
    power = np.abs(np.fft.rfft(y)) ** 2 / np.abs(np.fft.rfft(x)) ** 2

    def gain_db(hz):  # the filter is exact per bin: read the bin nearest hz (0.25 Hz apart)
        return 10 * np.log10(power[np.argmin(np.abs(f - hz))])

    for hz, g in zip(CHANNEL_POINTS_HZ, gains):  # 8 kHz is the Nyquist bin itself
        assert gain_db(hz) == pytest.approx(g, abs=0.01)
    assert gain_db(np.sqrt(4000.0 * 8000.0)) == pytest.approx((9.0 - 9.0) / 2, abs=0.01)
    assert gain_db(np.sqrt(1000.0 * 2000.0)) == pytest.approx((6.0 - 3.0) / 2, abs=0.01)  # halfway, log-f
    assert gain_db(80.0) == pytest.approx(3.0, abs=0.01)  # flat below 125 Hz
    with pytest.raises(ValueError, match="7 gains"):
        channel_response(x, SR, [0.0, 1.0])


def _training_pairs_changed_by(**change):
    """``((clean, noisy) before, (clean, noisy) after, info)`` for 4 training files with and without
    a train-only ``change``, having checked that it leaves the test files' bytes and every file's
    draws (noise, SNR, text: the change has its own random stream) as they were."""
    key = next(iter(change))
    assert key not in _settings()  # unused: the markers of older datasets still match
    plain, changed = _settings(), _settings(**change)
    for i in range(4):
        assert all(
            np.array_equal(a, b)
            for a, b in zip(
                synthetic.make_pair(plain, "test", i)[:2], synthetic.make_pair(changed, "test", i)[:2]
            )
        )
        (c0, n0, i0), (c1, n1, i1) = (
            synthetic.make_pair(plain, "train", i),
            synthetic.make_pair(changed, "train", i),
        )
        assert i0 == i1
        yield (c0, n0), (c1, n1), i1


def test_train_eq_db_colours_each_training_file_and_nothing_else():
    for (c0, _), (c1, n1), info in _training_pairs_changed_by(train_eq_db=6.0):
        assert measured_snr(c1, n1) == pytest.approx(info["snr_db"], abs=0.01)
        spec0, spec1 = np.abs(np.fft.rfft(c0.astype(np.float64))), np.abs(np.fft.rfft(c1.astype(np.float64)))
        f = np.fft.rfftfreq(len(c0), 1 / SR)
        band = (f > 150) & (f < 7000) & (spec0 > 1e-3 * spec0.max())  # where the speech has energy
        ratio_db = 20 * np.log10(spec1[band] / spec0[band])  # the channel, up to the file's level
        spread = np.percentile(ratio_db, 95) - np.percentile(ratio_db, 5)
        assert 1.0 < spread <= 2 * 6.0 + 1.0
    with pytest.raises(ValueError, match="train_eq_db"):
        _settings(train_eq_db=30.0)


def test_swing_gain_stays_within_its_range_and_moves_slowly():
    """signals.swing_gain: the gain is within [-swing, 0] dB, reaches most of that range over a
    few seconds, and changes by at most swing / 0.2 s per second (linear between 0.2-0.5 s knots)."""
    from meanflowse.data.signals import swing_gain

    gain_db = 20 * np.log10(swing_gain(5 * SR, SR, np.random.default_rng(5), 12.0))
    assert gain_db.max() <= 1e-9 and gain_db.min() >= -12.0 - 1e-9
    assert gain_db.max() - gain_db.min() > 6.0
    assert np.abs(np.diff(gain_db)).max() <= 12.0 / (0.2 * SR) + 1e-9


def test_train_level_swing_db_changes_the_training_speech_level_and_nothing_else():
    for (c0, _), (c1, n1), info in _training_pairs_changed_by(train_level_swing_db=12.0):
        assert measured_snr(c1, n1) == pytest.approx(info["snr_db"], abs=0.01)  # the SNR of the swung speech
        loud = np.abs(c0) > 0.05 * np.abs(c0).max()  # float32 files: compare where the speech is
        ratio_db = 20 * np.log10(
            np.abs(c1[loud].astype(np.float64)) / np.abs(c0[loud])
        )  # up to the file's level
        assert 1.0 < ratio_db.max() - ratio_db.min() <= 12.0 + 0.01
    with pytest.raises(ValueError, match="train_level_swing_db"):
        _settings(train_level_swing_db=60.0)


def test_train_mix_swing_db_moves_speech_and_noise_together_in_training_files_only():
    """The mix's swing scales a training file's speech and noise by one gain: where both are there
    the noise (noisy - clean) changes by the speech's ratio, so the local SNR stays; the ratio
    spans more than 1 dB and at most the swing."""
    for before, after, _ in _training_pairs_changed_by(train_mix_swing_db=12.0):
        c0, n0, c1, n1 = (a.astype(np.float64) for a in (*before, *after))
        speech = np.abs(c0) > 0.05 * np.abs(c0).max()
        noise = np.abs(n0 - c0) > 0.05 * np.abs(n0 - c0).max()
        both = speech & noise
        assert both.sum() > 1000
        np.testing.assert_allclose((n1 - c1)[both] / (n0 - c0)[both], c1[both] / c0[both], rtol=1e-4)
        ratio_db = 20 * np.log10(c1[speech] / c0[speech])
        assert 1.0 < ratio_db.max() - ratio_db.min() <= 12.0 + 0.01
    with pytest.raises(ValueError, match="train_mix_swing_db"):
        _settings(train_mix_swing_db=41.0)


def _where_it_loses():
    return load_script("experiments/real_voices/where_it_loses.py", "where_it_loses")


def test_estoi_band_parts_add_up_to_pystoi_s_estoi():
    """experiments/real_voices/where_it_loses.py splits ESTOI by band: the parts must sum to the
    score pystoi gives, for a distorted and for an untouched signal."""
    from pystoi import stoi

    bands = _where_it_loses()
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    clean = np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    for est in (clean + 0.3 * rng.standard_normal(t.size), clean):
        parts = bands.band_parts(clean, est, 16000)
        assert parts.shape == (15,)
        assert abs(parts.sum() - stoi(clean, est, 16000, extended=True)) < 1e-9


def test_error_by_level_closed_forms():
    """experiments/real_voices/where_it_loses.py: an output at half the clean amplitude is 6.02 dB
    down with a -6.02 dB error in every level group, and an input at twice it has a 0 dB error."""
    module = _where_it_loses()
    t = np.arange(32000) / 16000
    rng = np.random.default_rng(1)
    clean = np.sin(2 * np.pi * 180 * t) * np.exp(-3 * (t % 0.5)) + 1e-3 * rng.standard_normal(t.size)
    table = module.level_table(clean, 2 * clean, 0.5 * clean, 16000)
    half = 20 * np.log10(0.5)
    np.testing.assert_allclose(table[:, 0], half, atol=1e-6)
    np.testing.assert_allclose(table[:, 1], half, atol=1e-6)
    np.testing.assert_allclose(table[:, 2], 0.0, atol=1e-6)


def test_error_by_level_averages_only_the_files_that_reach_a_level():
    """A file with no bins in a level group (a NaN row) leaves that group's mean to the others
    instead of turning it NaN; a group no file reaches stays NaN with a count of 0."""
    module = _where_it_loses()
    a = np.array([[1.0, -20.0, -30.0], [2.0, -10.0, -15.0], [np.nan] * 3])
    b = np.array([[3.0, -22.0, -34.0], [np.nan] * 3, [np.nan] * 3])
    means, counts = module.average_levels([a, b])
    np.testing.assert_allclose(means[0], [2.0, -21.0, -32.0])
    np.testing.assert_allclose(means[1], [2.0, -10.0, -15.0])
    assert np.isnan(means[2]).all()
    assert counts.tolist() == [2, 1, 0]


def _gated(clean: np.ndarray, fs: int, rng: np.random.Generator) -> np.ndarray:
    """``clean`` under a gain that wanders between -12 and 0 dB (a new value every 100 ms, linear
    in between): a slow gate, which per-frame band energies can undo."""
    points = np.arange(0, clean.size + int(0.1 * fs), int(0.1 * fs))
    gain_db = np.interp(np.arange(clean.size), points, rng.uniform(-12, 0, points.size))
    return clean * 10 ** (gain_db / 20)


def test_frame_gains_closed_form():
    """experiments/real_voices/where_it_loses.py: an output at half the clean amplitude is 6.02 dB
    down in every frame class and band that has frames; the classes split the frames."""
    module = _where_it_loses()
    t = np.arange(32000) / 16000
    rng = np.random.default_rng(2)
    clean = np.sin(2 * np.pi * 180 * t) * np.exp(-8 * (t % 0.5)) + 1e-3 * rng.standard_normal(t.size)
    gains = module.frame_gains(clean, 0.5 * clean, 16000)
    assert set(gains) == set(module.FRAME_CLASSES)
    assert sum(len(g) for g in gains.values()) == module._spec(clean, 16000).shape[1]
    assert all(len(g) for g in gains.values())  # the decay reaches every class
    for rows in gains.values():
        np.testing.assert_allclose(rows, 20 * np.log10(0.5), atol=1e-6)


def test_oracle_estoi_undoes_a_gate_and_nothing_else():
    """Setting the band energy right in every frame undoes a frame-by-frame gate (ESTOI near 1,
    above the gated signal's); setting it in no frame leaves the gated signal's ESTOI."""
    from pystoi import stoi

    module = _where_it_loses()
    rng = np.random.default_rng(3)
    t = np.arange(48000) / 16000
    clean = sum(
        np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * r * t))
        for f, r in ((200, 3), (1200, 5), (2800, 7))
    )
    clean += 0.05 * rng.standard_normal(t.size)
    gated = _gated(clean, 16000, rng)
    before = stoi(clean, gated, 16000, extended=True)
    scores = module.oracle_estoi(clean, gated, 16000)
    assert set(scores) == set(module.ORACLE_SETS)
    assert scores["none"] == pytest.approx(before, abs=1e-4)
    assert scores["all"] > max(before + 0.02, 0.98)


def test_attenuation_limit_brings_removed_noise_back_limit_db_down():
    """meanflowse.inference.attenuation (blend.py, meanflowse-enhance --atten-lim-db): a perfect
    output blended at L dB has the input's noise back exactly L dB down (SNR = input SNR + L); no
    limit is the output, L = 0 dB the input, a negative limit an error."""
    from meanflowse.inference.attenuation import limit_attenuation

    rng = np.random.default_rng(4)
    clean, noise = rng.standard_normal(16000), rng.standard_normal(16000)
    noisy = clean + noise  # 0 dB
    for limit in (6.0, 20.0):  # the perfect output plus g * noise
        out = limit_attenuation(noisy, clean, limit)
        assert measured_snr(clean, out) == pytest.approx(measured_snr(clean, noisy) + limit, abs=1e-9)
    np.testing.assert_array_equal(limit_attenuation(noisy, clean, None), clean)
    np.testing.assert_allclose(limit_attenuation(noisy, clean, 0.0), noisy)
    with pytest.raises(ValueError, match="dB >= 0"):
        limit_attenuation(noisy, clean, -6.0)
