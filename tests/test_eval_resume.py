"""eval.py's resume rules (provenance per file), which errors are per-file failures, summary
counts and the exit code of `python eval.py` (issue #13)."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from eval_helpers import SR, eval_cfg, rows, signal, write_tiny_checkpoint
from meanflowse.inference import evaluation
from meanflowse.inference.enhancer import Enhancer
from meanflowse.inference.evaluation import EvalError, evaluate
from meanflowse.metrics import scores as M

ROOT = Path(__file__).resolve().parents[1]
UNSCORED = "unscored_metrics.csv"  # metrics=false


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _folder(path: Path, names=("f0.wav", "f1.wav", "f2.wav"), seconds: float = 0.6) -> Path:
    path.mkdir(parents=True)
    for i, name in enumerate(names):
        sf.write(path / name, signal(seconds, seed=i)[0].numpy(), SR)
    return path


def _touch_later(path: Path) -> None:
    """A newer modification time, as an edit of the file would give."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def _statuses(out: Path, name: str = "metrics.csv") -> dict[str, str]:
    return {file: row["status"] for file, row in rows(out, name).items()}


# ------------------------------------------------------------------------------ 1. resume
def test_an_interrupted_overwrite_is_finished_by_a_resume(ckpt, tmp_path, monkeypatch):
    """Settings A wrote every file; an overwrite=true run with settings B stopped after one
    file. Resuming B keeps B's file and redoes the files A made (never reports them as B's)."""
    src, out = _folder(tmp_path / "in"), tmp_path / "out"
    evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}", "metrics=false"))
    real, written = evaluation.write_atomic, []

    def write_once(*args, **kwargs):  # the run is killed while the second file is written
        if written:
            raise KeyboardInterrupt
        written.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "write_atomic", write_once)
    b = [f"input={src}", f"output={out}", "metrics=false", "sampler.nfe=2"]
    with pytest.raises(KeyboardInterrupt):
        evaluate(eval_cfg(ckpt, tmp_path, *b, "overwrite=true"))
    monkeypatch.undo()
    assert written == [out / "f0.wav"]
    evaluate(eval_cfg(ckpt, tmp_path, *b))
    assert _statuses(out, UNSCORED) == {"f0.wav": "resumed", "f1.wav": "enhanced", "f2.wav": "enhanced"}
    again = evaluate(eval_cfg(ckpt, tmp_path, *b))  # now all B's: resumed, nothing refused
    assert set(_statuses(out, UNSCORED).values()) == {"resumed"} and again["num_files"] == 3


def test_same_named_files_this_run_did_not_make_are_refused(ckpt, tmp_path):
    src, out = _folder(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    for name in ("f0.wav", "f1.wav"):  # e.g. another tool's outputs, or the inputs copied
        sf.write(out / name, np.full(100, 0.1), SR)
    with pytest.raises(EvalError) as err:
        evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}"))
    msg = str(err.value)
    assert str(out) in msg and "2 files" in msg and "f0.wav" in msg and "overwrite=true" in msg
    assert sf.info(str(out / "f0.wav")).frames == 100  # refused before anything was written
    evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}", "overwrite=true"))
    assert set(_statuses(out).values()) == {"enhanced"}
    assert sf.info(str(out / "f0.wav")).frames == sf.info(str(src / "f0.wav")).frames


def test_a_source_or_reference_changed_after_enhancement_is_redone(ckpt, tmp_path):
    split = tmp_path / "split"
    _folder(split / "noisy")
    _folder(split / "clean")
    out = tmp_path / "out"
    cfg = eval_cfg(ckpt, tmp_path, f"input={split}", f"output={out}")
    evaluate(cfg)
    sf.write(split / "noisy" / "f0.wav", signal(0.6, seed=7)[0].numpy(), SR)  # re-recorded
    _touch_later(split / "noisy" / "f0.wav")
    _touch_later(split / "clean" / "f1.wav")
    evaluate(cfg)
    assert _statuses(out) == {"f0.wav": "enhanced", "f1.wav": "enhanced", "f2.wav": "resumed"}


def test_inputs_with_the_same_name_get_their_own_default_output(ckpt, tmp_path):
    outs = []
    for parent in ("a", "b"):
        _folder(tmp_path / parent / "noisy", names=("x.wav",))
        _, out = evaluation.input_items(eval_cfg(ckpt, tmp_path, f"input={tmp_path / parent / 'noisy'}"))
        outs.append(out)
    assert outs[0] != outs[1]
    for out in outs:
        assert out.parent == ckpt.resolve().parent.parent / "enhanced" and out.name.startswith("noisy-")
    # the same input always maps to the same folder (so a rerun resumes)
    _, again = evaluation.input_items(eval_cfg(ckpt, tmp_path, f"input={tmp_path / 'a' / 'noisy'}"))
    assert again == outs[0]


def test_a_split_of_another_dataset_gets_its_own_default_output(ckpt, tmp_path):
    other = tmp_path / "other"
    for role in ("clean", "noisy"):
        _folder(other / "test" / role, names=("t.wav",))
    train_cfg = Enhancer.from_checkpoint(ckpt).config
    _, out = evaluation.split_items(
        eval_cfg(ckpt, tmp_path, "split=test", f"data.base_dir={other}"), train_cfg
    )
    assert out.parent == ckpt.resolve().parent.parent / "enhanced"
    assert out.name.startswith("test-") and out.name != "test"


# ------------------------------------------------------------------------------ 2. failures
def test_an_error_while_enhancing_stops_the_run(ckpt, tmp_path, monkeypatch):
    """A CUDA out-of-memory or a backbone bug is not a bad input file: no "failed" rows."""
    src = _folder(tmp_path / "in", names=("f0.wav",))
    real, calls = Enhancer.enhance_many, []

    def oom_after_warmup(self, wavs, **kwargs):
        calls.append(len(wavs))
        if len(calls) > 1:
            raise RuntimeError("CUDA out of memory (test)")
        return real(self, wavs, **kwargs)

    monkeypatch.setattr(Enhancer, "enhance_many", oom_after_warmup)
    with pytest.raises(RuntimeError, match="out of memory"):
        evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"output={tmp_path / 'out'}"))
    assert len(calls) == 2


def test_an_error_writing_an_output_stops_the_run(ckpt, tmp_path):
    src = tmp_path / "in"
    _folder(src / "sub", names=("c.wav",))
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where a folder must go")
    with pytest.raises(OSError):
        evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}"))


def test_an_unscored_rerun_keeps_the_measured_reports(ckpt, tmp_path):
    """metrics=false into a folder with scored outputs: the earlier metrics.csv and summary.json
    stay byte for byte; the rerun's own rows go to unscored_metrics.csv / unscored_summary.json."""
    src, out = _folder(tmp_path / "in"), tmp_path / "out"
    ref = _folder(tmp_path / "ref")
    evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"reference={ref}", f"output={out}"))
    before = {n: (out / n).read_bytes() for n in ("metrics.csv", "summary.json")}
    assert json.loads(before["summary.json"])["si_sdr"] is not None
    evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"reference={ref}", f"output={out}", "metrics=false"))
    assert {n: (out / n).read_bytes() for n in before} == before
    assert set(_statuses(out, UNSCORED).values()) == {"resumed"}
    assert json.loads((out / "unscored_summary.json").read_text())["num_files"] == 3


def test_a_symlink_loop_in_the_input_is_one_failed_row(ckpt, tmp_path):
    """x.wav -> x.wav (and two folders linking to each other) are bad inputs, reported and
    skipped like an unreadable file; the other files are enhanced."""
    src, out = _folder(tmp_path / "in", names=("good.wav",)), tmp_path / "out"
    (src / "loop.wav").symlink_to("loop.wav")
    (src / "a").symlink_to("b")
    (src / "b").symlink_to("a")
    summary = evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}", "metrics=false"))
    r = rows(out, UNSCORED)
    assert r["good.wav"]["status"] == "enhanced" and (out / "good.wav").is_file()
    assert r["loop.wav"]["status"] == "failed" and "symbolic link" in r["loop.wav"]["error"]
    assert summary["num_files"] == 1 and summary["num_failed"] == 1


def test_a_full_disk_is_one_line_naming_the_file_and_earlier_outputs_stay(ckpt, tmp_path, monkeypatch):
    import errno

    import soundfile

    from meanflowse import atomic
    from meanflowse.inference import audio_io, reports

    src, out = _folder(tmp_path / "in"), tmp_path / "out"
    real, written = soundfile.write, []

    def write_then_full(file, *args, **kwargs):  # libsndfile's own words for ENOSPC
        if written:
            raise soundfile.LibsndfileError(2, f"Error writing {file}: ")
        written.append(file)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(audio_io.sf, "write", write_then_full)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: SimpleNamespace(free=0))
    with pytest.raises(OSError) as err:
        evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}", "metrics=false"))
    assert err.value.errno == errno.ENOSPC and "\n" not in str(err.value)
    assert str(err.value).startswith(f"{out / 'f1.wav'}: could not be written, the disk is full")
    assert (out / "f0.wav").is_file() and not (out / "f1.wav").exists()  # nothing half-written
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left
    monkeypatch.undo()

    def full(path, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(reports, "atomic_path", full)  # the disk fills while the reports are written
    with pytest.raises(OSError, match=r"unscored_metrics\.csv: could not be written, the disk is full"):
        evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}", "metrics=false"))


def test_a_long_file_shows_a_bar_of_its_pieces(ckpt, tmp_path, capsys):
    src, out = _folder(tmp_path / "in", names=("long.wav",), seconds=6.0), tmp_path / "out"
    cfg = eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}", "metrics=false", "chunk_s=1.0")
    cfg.progress = True
    evaluate(cfg)
    assert "long file" in capsys.readouterr().out and (out / "long.wav").is_file()


def test_a_corrupt_file_is_still_a_failed_row(ckpt, tmp_path):
    src, out = _folder(tmp_path / "in", names=("good.wav",)), tmp_path / "out"
    (src / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    summary = evaluate(eval_cfg(ckpt, tmp_path, f"input={src}", f"output={out}", "metrics=false"))
    r = rows(out, UNSCORED)
    assert r["bad.wav"]["status"] == "failed" and "AudioError" in r["bad.wav"]["error"]
    assert "bad.wav" in r["bad.wav"]["error"]
    assert summary["num_files"] == 1 and summary["num_failed"] == 1


def test_the_loaders_read_errors_are_audio_errors_naming_the_file(tmp_path, monkeypatch):
    """An OSError while reading (a failing disk or network mount) is a bad input, not a crash."""
    from meanflowse.data import audio

    path = _folder(tmp_path / "in", names=("a.wav",)) / "a.wav"

    def io_error(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(audio.sf, "read", io_error)
    with pytest.raises(audio.AudioError, match="a.wav.*Input/output error"):
        audio.load_audio(path)
    monkeypatch.setattr(audio.sf, "info", io_error)
    with pytest.raises(audio.AudioError, match="a.wav.*Input/output error"):
        audio.audio_info(path)


def test_compute_all_turns_metric_failures_into_nan_but_lets_bugs_through(monkeypatch):
    from pesq import NoUtterancesError

    x = signal(1.0)[0].numpy()

    def metric_error(*args):
        raise M.MetricError("ESTOI undefined: test")

    def pesq_error(*args):
        raise NoUtterancesError("no utterances (test)")

    monkeypatch.setattr(M, "estoi", metric_error)
    monkeypatch.setattr(M, "pesq_wb", pesq_error)
    out = M.compute_all(x, x * 0.5, SR, with_dnsmos=False)
    assert math.isnan(out["estoi"]) and out["errors"]["estoi"] == "ESTOI undefined: test"
    assert math.isnan(out["pesq"]) and "no utterances" in out["errors"]["pesq"]
    assert math.isfinite(out["si_sdr"])

    def bug(*args):
        raise TypeError("a bug (test)")

    monkeypatch.setattr(M, "si_sdr", bug)
    with pytest.raises(TypeError, match="a bug"):
        M.compute_all(x, x * 0.5, SR, with_dnsmos=False)
    monkeypatch.setattr(M, "dnsmos", bug)
    with pytest.raises(TypeError, match="a bug"):
        M.compute_all(None, x, SR)


# ------------------------------------------------------------------------------ 3. eval.py
def test_summary_counts_and_when_nothing_was_scored():
    from meanflowse.inference import reports
    from meanflowse.inference.reports import nothing_scored
    from meanflowse.metrics import registry

    summarize = functools.partial(reports.summarize, keys=registry.keys(registry.selected()))
    scored = summarize(
        [{"file": "a.wav", "pesq": 2.0}, {"file": "b.wav", "pesq": math.nan}], 1, nfe=1, rtf=0.1
    )
    assert scored["counts"]["pesq"] == 1 and scored["counts"]["si_sdr"] == 0
    assert nothing_scored(scored, metrics=True) is None
    unmeasured = summarize([{"file": "a.wav"}], 0, nfe=1, rtf=0.1)  # enhanced, no metric applies
    assert nothing_scored(unmeasured, metrics=False) is None
    assert "no metric has a finite value" in nothing_scored(unmeasured, metrics=True)
    assert "3 failed" in nothing_scored(summarize([], 3, nfe=1, rtf=math.nan), metrics=False)


def _eval_py(ckpt: Path, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "eval.py"),
            f"ckpt_path={ckpt}",
            "progress=false",
            "dnsmos=false",
            "speaker=false",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            *overrides,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_eval_py_exits_zero_with_counts_when_files_were_scored(ckpt, tmp_path):
    split = tmp_path / "split"
    _folder(split / "noisy", names=("a.wav", "b.wav"), seconds=1.0)
    _folder(split / "clean", names=("a.wav", "b.wav"), seconds=1.0)
    (split / "noisy" / "c.wav").write_text("not audio")
    out = tmp_path / "out"
    proc = _eval_py(ckpt, tmp_path, f"input={split}", f"output={out}")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((out / "summary.json").read_text())
    assert saved["num_files"] == 2 and saved["num_failed"] == 1
    assert saved["counts"]["si_sdr"] == 2 and "dnsmos_ovrl" not in saved["counts"]  # dnsmos=false
    # Hydra's eval.log keeps the run's record: what was done, the means, the failed file
    record = (tmp_path / "hydra" / "eval.log").read_text()
    assert f"{ckpt}:" in record and "2 files, 1 failed" in record
    assert f"SI-SDR (dB) {saved['si_sdr']:.4g}" in record and "failed c.wav" in record


def test_eval_py_exits_nonzero_when_nothing_was_scored(ckpt, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.wav", "b.wav"):
        (src / name).write_text("not audio")
    proc = _eval_py(ckpt, tmp_path, f"input={src}", f"output={tmp_path / 'out'}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("eval.py:") and "nothing was scored" in last and "2 failed" in last
