"""Enhancement at any length, rate and channel count; eval.py inputs, outputs, resume, failures.

Chunking is checked with stand-in backbones whose result is known exactly (identity) or is
local in time-frequency (a magnitude gate), so a wrong cross-fade, chunk position or gain shows.
The pipeline tests use a checkpoint written from an untrained tiny model (no training needed
for I/O); tests that need a trained model live in test_train_eval.py.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from conftest import TinyNet
from eval_helpers import SR, write_tiny_checkpoint
from eval_helpers import eval_cfg as _eval_cfg
from eval_helpers import rows as _rows
from eval_helpers import signal as _signal
from meanflowse.inference.enhancer import Enhancer, chunk_starts, chunk_weight, load_module
from meanflowse.inference.evaluation import EvalError, evaluate
from meanflowse.inference.model import InferenceModel
from meanflowse.method.curriculum import CurriculumConfig
from meanflowse.method.objectives import MeanFlowObjective
from meanflowse.method.path import PathConfig
from meanflowse.method.samplers import SamplerConfig
from meanflowse.method.stft import SpecConfig
from meanflowse.metrics import scores as M
from meanflowse.training.lit_module import MeanFlowSEModule


class Identity(nn.Module):
    """u = x_t - y: one euler_mf step from t=1 to 0 returns y, so enhancement is the identity."""

    frame_multiple = 8

    def forward(self, x_t, y, t, d):
        return x_t - y


class Gate(nn.Module):
    """One step returns ``y * |y| / (|y| + 0.05)``: a pointwise, level-dependent TF gate."""

    frame_multiple = 8

    def forward(self, x_t, y, t, d):
        mag = y.pow(2).sum(1, keepdim=True).sqrt()
        return x_t - y * mag / (mag + 0.05)


def _enhancer(backbone: nn.Module, **kw) -> Enhancer:
    module = MeanFlowSEModule(
        backbone=backbone,
        path=PathConfig(),
        objective=MeanFlowObjective(),
        curriculum=CurriculumConfig(),
        sampler=SamplerConfig(name="euler_mf"),
    )
    return Enhancer(module=module.eval().inference, spec=SpecConfig(), sample_rate=SR, **kw)


def _snr_db(ref: torch.Tensor, est: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (est - ref).pow(2).sum()))


# ------------------------------------------------------------------------------ chunk plan
@pytest.mark.parametrize("length", [100, 15232, 15233, 40000, 97531])
def test_chunks_are_equal_sized_cover_the_signal_and_fade_to_one(length):
    chunk, overlap = 15232, 1600
    starts = chunk_starts(length, chunk=chunk, overlap=overlap)
    size = min(length, chunk)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= chunk - overlap for a, b in zip(starts, starts[1:]))
    total = torch.zeros(length)
    for k, s in enumerate(starts):
        w = chunk_weight(starts, k, size)
        assert w.shape == (size,) and bool((w > 0).all())
        total[s : s + size] += w
    # the regular overlaps are complementary raised-cosine fades: they sum to exactly one
    regular = starts[-1]  # where the last, end-aligned window (longer overlap) begins
    torch.testing.assert_close(total[:regular], torch.ones(regular), atol=1e-6, rtol=0)


def test_chunked_identity_reconstructs_a_long_stereo_signal():
    wav = _signal(7.3, channels=2)
    enh = _enhancer(Identity(), chunk_s=1.0, overlap_s=0.1, batch_size=3)
    assert enh.chunk < wav.shape[-1] / 5  # several chunks, the last one irregular
    out = enh.enhance(wav)
    assert out.shape == wav.shape
    torch.testing.assert_close(out, wav, atol=2e-5, rtol=0)


def test_a_long_file_reports_each_network_call_in_pieces():
    """What the long-file progress bar follows: one report per network call, counting pieces
    (chunks x channels) up to their total; the output is the same as without the callback."""
    enh = _enhancer(Identity(), chunk_s=1.0, overlap_s=0.1, batch_size=3)
    wav = _signal(5.0, channels=2)
    calls = []
    out = enh.enhance_many([wav], on_batch=lambda done, total: calls.append((done, total)))[0]
    pieces = len(chunk_starts(wav.shape[-1], chunk=enh.chunk, overlap=enh.overlap)) * 2
    assert calls[-1] == (pieces, pieces) and pieces > 4
    assert [d for d, _ in calls] == sorted({d for d, _ in calls}) and all(t == pieces for _, t in calls)
    assert len(calls) == -(-pieces // 3)  # batches of 3 pieces
    torch.testing.assert_close(out, enh.enhance_many([wav])[0])


def test_chunked_equals_whole_file_for_a_local_model_and_crossfade_has_no_seams():
    wav = _signal(6.1)[0]
    whole = _enhancer(Gate(), chunk_s=30.0).enhance(wav)
    chunked_enh = _enhancer(Gate(), chunk_s=1.0, overlap_s=0.1, batch_size=4)
    chunked = chunked_enh.enhance(wav)
    assert _snr_db(whole, chunked) > 35.0
    # what a per-chunk cut without cross-fade gives: each piece enhanced alone and butted together
    piece = chunked_enh.chunk
    hard = torch.cat(
        [_enhancer(Gate(), chunk_s=30.0).enhance(wav[i : i + piece]) for i in range(0, wav.shape[-1], piece)]
    )
    assert _snr_db(whole, hard) < _snr_db(whole, chunked) - 10.0
    # and no seams: the error near chunk borders is no larger than elsewhere
    err = (chunked - whole).abs()
    starts = chunk_starts(wav.shape[-1], chunk=piece, overlap=chunked_enh.overlap)
    near = torch.cat([err[s - 300 : s + 300] for s in starts[1:]])
    ref = torch.cat([whole[s - 300 : s + 300] for s in starts[1:]]).abs().mean()
    assert float(near.mean()) < 0.01 * float(ref)


def test_batching_and_chunking_order_do_not_change_the_result():
    torch.manual_seed(0)
    net = TinyNet()
    wavs = [
        _signal(1.3, 2, seed=1),
        _signal(1.31, 1, seed=2),
        _signal(0.4, 1, seed=3),
        _signal(3.2, 1, seed=4),
    ]
    one = _enhancer(net, chunk_s=1.0, overlap_s=0.1, batch_size=1)
    many = _enhancer(net, chunk_s=1.0, overlap_s=0.1, batch_size=5)
    alone = [one.enhance(w) for w in wavs]
    together = many.enhance_many(wavs)
    for a, b in zip(alone, together):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(alone[0][0, :100], wavs[0][0, :100])  # the net did something


@pytest.mark.parametrize("length", [1, 64, 300])
def test_a_very_short_signal_is_enhanced_not_an_error(length):
    wav = _signal(1.0)[:, :length]
    out = _enhancer(Identity()).enhance(wav)
    assert out.shape == wav.shape
    torch.testing.assert_close(out, wav, atol=1e-5, rtol=0)


def test_a_file_of_chunk_s_seconds_is_one_piece():
    for seconds in (1.0, 2.5, 10.0):
        enh = _enhancer(Identity(), chunk_s=seconds, overlap_s=0.1)
        assert enh.chunk >= seconds * SR
        assert enh.chunk - seconds * SR < enh.frame_multiple * enh.spec.hop_length  # rounded up, not more
        assert chunk_starts(int(seconds * SR), chunk=enh.chunk, overlap=enh.overlap) == [0]


def test_enhancer_refuses_bad_chunk_settings():
    with pytest.raises(ValueError, match="overlap_s"):
        _enhancer(Identity(), chunk_s=1.0, overlap_s=0.9)
    with pytest.raises(ValueError, match="STFT window"):
        _enhancer(Identity(), chunk_s=1.0, overlap_s=0.001)
    with pytest.raises(ValueError, match="batch_size"):
        _enhancer(Identity(), batch_size=0)


def test_bf16_and_channels_last_track_the_fp32_result():
    """bf16 autocast touches the network only: the output stays fp32 and close to the fp32 one;
    channels_last changes the layout, not the numbers."""
    torch.manual_seed(0)
    net = TinyNet()
    wav = _signal(1.3, 2, seed=5)
    ref = _enhancer(net, channels_last=False).enhance(wav)
    cl = _enhancer(net, channels_last=True)
    assert next(cl.module.backbone.parameters()).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl.enhance(wav), ref, atol=1e-5, rtol=1e-4)
    half = _enhancer(net, precision="bf16").enhance(wav)
    assert half.dtype == torch.float32 and half.shape == ref.shape
    assert 20.0 < _snr_db(ref, half) < 80.0  # close, and not silently fp32
    with pytest.raises(ValueError, match="precision"):
        _enhancer(net, precision="fp16")


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint as train.py writes it, of an untrained tiny model, with an EMA shadow."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_checkpoint_loads_ema_weights_by_default(ckpt):
    ema, _ = load_module(ckpt)
    raw, _ = load_module(ckpt, use_ema=False)
    name, p = next(iter(raw.named_parameters()))
    torch.testing.assert_close(dict(ema.named_parameters())[name], p + 0.01)


def test_sampler_comes_from_the_checkpoint_and_nfe_is_overridable(ckpt, tmp_path):
    sf.write(tmp_path / "a.wav", _signal(0.5)[0].numpy(), SR)
    enh = Enhancer.from_checkpoint(ckpt, device="auto")
    assert enh.sampler_name == "euler_mf" and enh.steps == 1  # auto, MeanFlow-trained
    assert enh.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    calls = []
    hook = InferenceModel.net_fn  # what eval.py's Enhancer calls (no LightningModule there)
    InferenceModel.net_fn = lambda self, *a: calls.append(1) or hook(self, *a)
    try:
        summary = evaluate(
            _eval_cfg(
                ckpt, tmp_path, f"input={tmp_path / 'a.wav'}", f"output={tmp_path / 'out'}", "sampler.nfe=3"
            )
        )
    finally:
        InferenceModel.net_fn = hook
    assert summary["nfe"] == 3 and len(calls) == 2 * 3  # warm-up + one file, 3 steps each


def test_output_keeps_rate_length_channels_and_format(ckpt, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    cases = {
        "stereo44k.wav": (44100, 2, "PCM_24", 1.3),
        "sub/mono22k.flac": (22050, 1, "PCM_16", 0.7),
        "long48k.wav": (48000, 1, "FLOAT", 2.6),
        "short8k.wav": (8000, 3, "PCM_U8", 0.3),
    }
    for name, (sr, ch, subtype, sec) in cases.items():
        sig = np.random.default_rng(len(name)).standard_normal((int(sr * sec), ch)) * 0.1
        sf.write(src / name, sig, sr, subtype=subtype)
    out = tmp_path / "out"
    summary = evaluate(
        _eval_cfg(
            ckpt,
            tmp_path,
            f"input={src}",
            f"output={out}",
            "chunk_s=1.0",
            "overlap_s=0.1",
            "batch_size=4",
            "metrics=false",
        )
    )
    assert summary["num_files"] == 4 and summary["num_failed"] == 0
    assert summary["rtf"] > 0 and math.isnan(summary["pesq"])
    for name in cases:
        a, b = sf.info(str(src / name)), sf.info(str(out / name))
        assert (b.samplerate, b.channels, b.frames, b.subtype, b.format) == (
            a.samplerate,
            a.channels,
            a.frames,
            a.subtype,
            a.format,
        ), name
        data = sf.read(str(out / name))[0]
        assert np.isfinite(data).all() and np.abs(data).max() > 0
    assert not list(out.rglob(".*"))  # no temp files left behind


def test_resume_skips_finished_files_and_overwrite_redoes_them(ckpt, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        sf.write(src / f"f{i}.wav", _signal(0.6, seed=i)[0].numpy(), SR)
    cfg = _eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}")
    evaluate(cfg)
    first = (out / "f0.wav").stat().st_mtime_ns  # a skipped file is left as it is
    (out / "f1.wav").unlink()  # as if the run had been interrupted
    sf.write(out / "f2.wav", np.zeros(10), SR)  # an output changed since it was written: redone
    again = evaluate(cfg)
    rows = _rows(out)
    assert (out / "f0.wav").stat().st_mtime_ns == first
    assert [rows[f"f{i}.wav"]["status"] for i in range(3)] == ["resumed", "enhanced", "enhanced"]
    assert sf.info(str(out / "f2.wav")).frames == sf.info(str(src / "f2.wav")).frames
    assert again["num_files"] == 3 and math.isfinite(again["rtf"])
    evaluate(_eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}", "overwrite=true"))
    assert (out / "f0.wav").stat().st_mtime_ns != first
    assert {r["status"] for r in _rows(out).values()} == {"enhanced"}


def test_outputs_of_other_settings_or_a_retrained_checkpoint_are_not_resumed(ckpt, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    sf.write(src / "f0.wav", _signal(0.6)[0].numpy(), SR)
    evaluate(_eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}"))
    lines = (out / "eval_provenance.jsonl").read_text().splitlines()
    recorded = json.loads(lines[-1])
    assert recorded["file"] == "f0.wav" and recorded["settings"]["nfe"] == 1
    assert recorded["settings"]["checkpoint"] == str(ckpt.resolve())
    with pytest.raises(EvalError, match=r"other settings \(nfe differ.*overwrite=true"):
        evaluate(_eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}", "sampler.nfe=2"))
    stat = ckpt.stat()  # a retrained checkpoint at the same path: a newer modification time
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        with pytest.raises(EvalError, match="checkpoint_mtime_ns"):
            evaluate(_eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}"))
        evaluate(_eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}", "overwrite=true"))
        assert _rows(out)["f0.wav"]["status"] == "enhanced"
        again = evaluate(_eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}"))  # same: resumes
        assert _rows(out)["f0.wav"]["status"] == "resumed" and again["num_files"] == 1
    finally:
        os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_refuses_to_write_over_inputs(ckpt, tmp_path):
    split = tmp_path / "split"
    for role in ("clean", "noisy"):
        (split / role).mkdir(parents=True)
        sf.write(split / role / "a.wav", _signal(0.5)[0].numpy(), SR)
    for inp, out in [
        (split / "noisy", split / "noisy"),
        (split, split / "noisy"),
        (split, split / "clean"),
        (split / "noisy" / "a.wav", split / "noisy"),
    ]:
        with pytest.raises(EvalError, match="input folder"):
            evaluate(_eval_cfg(ckpt, tmp_path, f"input={inp}", f"output={out}"))
    assert sf.info(str(split / "noisy" / "a.wav")).frames == int(0.5 * SR)
    assert not list(split.rglob("eval_provenance.jsonl"))  # refused before anything was written
    # an output folder inside the input folder is fine: its files are not taken as inputs
    evaluate(_eval_cfg(ckpt, tmp_path, f"input={split / 'noisy'}", f"output={split / 'noisy' / 'enh'}"))
    again = evaluate(
        _eval_cfg(ckpt, tmp_path, f"input={split / 'noisy'}", f"output={split / 'noisy' / 'enh'}")
    )
    assert again["num_files"] == 1


def test_a_bad_file_is_reported_and_skipped(ckpt, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    sf.write(src / "good.wav", _signal(0.4)[0].numpy(), SR)
    (src / "text.wav").write_text("not audio")
    (src / "empty.wav").write_bytes(b"")
    (src / "phone.m4a").write_bytes(b"\0" * 64)
    nan = np.zeros(4000, dtype=np.float32)
    nan[100] = np.nan
    sf.write(src / "nan.wav", nan, SR, subtype="FLOAT")
    summary = evaluate(_eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}"))
    assert summary["num_files"] == 1 and summary["num_failed"] == 4
    rows = _rows(out)
    assert rows["good.wav"]["status"] == "enhanced" and (out / "good.wav").is_file()
    for name in ("text.wav", "empty.wav", "phone.m4a", "nan.wav"):
        assert rows[name]["status"] == "failed" and name in rows[name]["error"], rows[name]
        assert not (out / name).exists()


def test_background_io_gives_the_same_files_rows_and_failures(ckpt, tmp_path):
    """overlap_io=true (writing and measuring on a worker thread) changes timing, nothing else:
    the same outputs, the same metric rows, the same failures."""
    split = tmp_path / "split"
    for role in ("clean", "noisy"):
        (split / role / "sub").mkdir(parents=True)
    for i, name in enumerate(["a.wav", "b.wav", "sub/c.wav", "sub/d.wav"]):
        clean = _signal(0.5 + 0.1 * i, seed=i)[0] * 0.5
        sf.write(split / "clean" / name, clean.numpy(), SR)
        sf.write(split / "noisy" / name, (clean + 0.05 * torch.randn(clean.shape)).numpy(), SR)
    (split / "noisy" / "bad.wav").write_text("not audio")
    results = {}
    for overlap in ("false", "true"):
        out = tmp_path / f"out_{overlap}"
        summary = evaluate(
            _eval_cfg(ckpt, tmp_path, f"input={split}", f"output={out}", f"overlap_io={overlap}")
        )
        rows = {
            k: {c: v.replace(str(out), "OUT") for c, v in r.items() if c != "rtf"}
            for k, r in _rows(out).items()
        }
        results[overlap] = summary, rows, sf.read(str(out / "b.wav"))[0]
    (s_off, rows_off, b_off), (s_on, rows_on, b_on) = results["false"], results["true"]
    for name in rows_off:  # metrics to round-off (numpy may sum in another order on a thread)
        assert rows_on[name].keys() == rows_off[name].keys(), name
        for key, value in rows_off[name].items():
            try:
                assert float(rows_on[name][key]) == pytest.approx(float(value), rel=1e-9), (name, key)
            except ValueError:
                assert rows_on[name][key] == value, (name, key)
    assert [rows_on[n]["status"] for n in ("a.wav", "b.wav", "bad.wav", "sub/c.wav")] == [
        "enhanced",
        "enhanced",
        "failed",
        "enhanced",
    ]
    assert s_on["num_files"] == s_off["num_files"] == 4 and s_on["num_failed"] == 1
    assert s_on["pesq"] == s_off["pesq"] and math.isfinite(s_on["rtf"])
    np.testing.assert_array_equal(b_on, b_off)


def test_background_worker_bounds_pending_jobs_and_reraises_bugs():
    import threading
    import time

    from meanflowse.inference.background import MAX_PENDING, Background

    state = {"submitted": 0, "finished": 0}
    lock = threading.Lock()

    def job(k):
        time.sleep(0.01)
        with lock:
            state["finished"] += 1
        return k

    with Background(enabled=True) as worker:
        for k in range(3 * MAX_PENDING):
            worker.submit(job, k)
            state["submitted"] += 1
            with lock:
                assert state["submitted"] - state["finished"] <= MAX_PENDING + 1
        assert worker.results() == list(range(3 * MAX_PENDING))

    def broken(k):
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        with Background(enabled=True) as worker:
            worker.submit(broken, 0)
            worker.results()
    with pytest.raises(KeyError, match="a bug"):
        Background(enabled=False).submit(broken, 0)


def test_metrics_and_summary_keys(ckpt, tmp_path):
    split = tmp_path / "split"
    for role in ("clean", "noisy"):
        (split / role).mkdir(parents=True)
    clean = _signal(1.0)[0] * 0.5
    sf.write(split / "clean" / "a.wav", clean.numpy(), SR)
    sf.write(split / "noisy" / "a.flac", (clean + 0.05 * torch.randn(clean.shape)).numpy(), SR)
    out = tmp_path / "out"
    summary = evaluate(_eval_cfg(ckpt, tmp_path, f"input={split}", f"output={out}"))
    # the summary holds the metrics the run was set to measure: DNSMOS is off here, so it is absent
    keys = {"pesq", "estoi", "si_sdr"}
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved) == keys | {
        "rtf",
        "nfe",
        "num_files",
        "num_failed",
        "noisy",
        "counts",
        "ci95",
        "files_with_metric_errors",
    }
    assert set(saved["noisy"]) == keys and set(saved["ci95"]) == keys
    # one file: a mean but no interval; DNSMOS is off, which is no metric error
    assert saved["ci95"]["si_sdr"] is None and saved["files_with_metric_errors"] == 0
    # how many files each mean is over
    assert set(saved["counts"]) == keys and saved["counts"]["si_sdr"] == 1
    header = next(csv.reader(open(out / "metrics.csv")))
    assert not any(c.startswith(("dnsmos", "noisy_dnsmos")) for c in header)
    # DNSMOS on: its three keys join the summary and the rows, each over the one file
    on = tmp_path / "on"
    evaluate(_eval_cfg(ckpt, tmp_path, f"input={split}", f"output={on}", "dnsmos=true"))
    with_dnsmos = json.loads((on / "summary.json").read_text())
    dnsmos = {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}
    assert set(with_dnsmos["counts"]) == keys | dnsmos and with_dnsmos["counts"]["dnsmos_ovrl"] == 1
    assert dnsmos <= set(next(csv.reader(open(on / "metrics.csv"))))
    noisy = sf.read(str(split / "noisy" / "a.flac"))[0]  # as stored: 16-bit
    assert saved["noisy"]["si_sdr"] == pytest.approx(M.si_sdr(clean.numpy(), noisy), abs=1e-3)
    enhanced = sf.read(str(out / "a.flac"))[0]
    assert saved["si_sdr"] == pytest.approx(M.si_sdr(clean.numpy(), enhanced), abs=1e-3)
    assert summary["num_files"] == 1


def test_bad_argument_combinations_are_clear_errors(ckpt, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, _signal(0.5)[0].numpy(), SR)
    bad = {
        "exactly one": [f"input={wav}", "split=test"],
        "exactly one ": [],
        "split=bogus": ["split=bogus"],
        "data.base_dir": [f"input={wav}", f"data.base_dir={tmp_path}"],
        "reference=": ["split=test", f"reference={tmp_path}"],
        "sampler.nfe=0: must be an integer >= 1": [f"input={wav}", "sampler.nfe=0"],
        "sampler.nfe=1.5: must be an integer >= 1": [f"input={wav}", "sampler.nfe=1.5"],
        "chunk_s=0: must be a finite number > 0.0": [f"input={wav}", "chunk_s=0"],
        "chunk_s=inf: must be a finite number > 0.0": [f"input={wav}", "chunk_s=inf"],
        "sampler.nfe=2.0: must be an integer >= 1": [f"input={wav}", "sampler.nfe=2.0"],
        "seed=-1: must be an integer >= 0": [f"input={wav}", "seed=-1"],
        "batch_size=-1: must be an integer >= 1": [f"input={wav}", "batch_size=-1"],
        "limit_files=0: must be an integer >= 1": [f"input={wav}", "limit_files=0"],
        "sampler.t_end=1.0: must be a finite number >= 0.0 and < 1.0": [f"input={wav}", "sampler.t_end=1.0"],
        "overlap_s": [f"input={wav}", "chunk_s=1.0", "overlap_s=0.9"],
        "overlap_s=1.0 must be shorter than chunk_s=1.0": [f"input={wav}", "chunk_s=1.0", "overlap_s=1.0"],
        "precision": [f"input={wav}", "precision=fp16"],
        "channels_last": [f"input={wav}", "channels_last=maybe"],
        "no such file": [f"input={tmp_path / 'missing'}"],
    }
    for match, overrides in bad.items():
        with pytest.raises(EvalError, match=match.strip()):
            evaluate(_eval_cfg(ckpt, tmp_path, *overrides))


def test_plots(ckpt, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="plots=true needs matplotlib (optional)")
    split = tmp_path / "split"
    for role in ("clean", "noisy"):
        (split / role).mkdir(parents=True)
        sf.write(split / role / "a.wav", _signal(1.0, seed=int(role == "noisy"))[0].numpy(), SR)
    out = tmp_path / "out"
    evaluate(_eval_cfg(ckpt, tmp_path, f"input={split}", f"output={out}", "plots=true"))
    assert (out / "plots" / "a.png").stat().st_size > 1000
    assert (out / "plots" / "summary.png").stat().st_size > 1000
    monkeypatch.setitem(sys.modules, "meanflowse.inference.plots", None)  # as if matplotlib were missing
    with pytest.raises(EvalError, match="matplotlib"):
        evaluate(_eval_cfg(ckpt, tmp_path, f"input={split}", f"output={out}", "plots=true"))


def test_eval_without_a_checkpoint_says_what_to_pass_in_one_line(tmp_path):
    import subprocess

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "eval.py"), "input=noisy.wav", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "MissingMandatoryValue" not in proc.stderr
    assert "ckpt_path=" in proc.stderr and "outputs/demo/checkpoints/last.ckpt" in proc.stderr


def test_reference_may_be_one_file_for_one_input_file(ckpt, tmp_path):
    clean = _signal(1.0)[0] * 0.5
    sf.write(tmp_path / "take1_noisy.wav", (clean + 0.05 * torch.randn(clean.shape)).numpy(), SR)
    sf.write(tmp_path / "take1_clean.wav", clean.numpy(), SR)
    out = tmp_path / "out"
    summary = evaluate(
        _eval_cfg(
            ckpt,
            tmp_path,
            f"input={tmp_path / 'take1_noisy.wav'}",
            f"reference={tmp_path / 'take1_clean.wav'}",
            f"output={out}",
        )
    )
    assert summary["counts"]["si_sdr"] == 1
    enhanced = sf.read(str(out / "take1_noisy.wav"))[0]
    assert summary["si_sdr"] == pytest.approx(M.si_sdr(clean.numpy(), enhanced), abs=1e-3)
    # a clean file for a folder of inputs says what to pass instead
    with pytest.raises(EvalError, match="goes with a single input file"):
        evaluate(_eval_cfg(ckpt, tmp_path, f"input={tmp_path}", f"reference={tmp_path / 'take1_clean.wav'}"))
