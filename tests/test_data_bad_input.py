"""Every kind of bad input of issue 4, through the DataModule and the command lines.

Each case is one pair ``train/{clean,noisy}/x.wav`` added to a small good dataset; the
DataModule either raises one :class:`DatasetError` naming the file and the problem, or hands out
finite batches with the documented handling. The README's bad-input table mirrors ``CASES``.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch

from meanflowse.data.datamodule import PairedSpecDataModule
from meanflowse.data.folder import DatasetError, DatasetWarning

SR = 16000
ROOT = Path(__file__).resolve().parents[1]
FRAMES = 32  # a short crop: (32 - 1) * 128 = 3968 samples


def tone(n: int = 8000, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * 440.0 * np.arange(n) / sr)).astype(np.float32)


def write(path: Path, data, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def good_dataset(root: Path) -> Path:
    for split, name in (("train", "g1"), ("train", "g2"), ("valid", "v1")):
        for role in ("clean", "noisy"):
            write(root / split / role / f"{name}.wav", tone())
    return root


def both(root: Path, data, sr: int = SR, subtype: str = "PCM_16", noisy=None) -> None:
    write(root / "train" / "clean" / "x.wav", data, sr, subtype)
    write(root / "train" / "noisy" / "x.wav", data if noisy is None else noisy, sr, subtype)


def truncate(path: Path, samples: int) -> None:
    """Cut a 16-bit mono WAV after ``samples`` samples (an interrupted copy)."""
    path.write_bytes(path.read_bytes()[: 44 + 2 * samples])


def make_empty(root):
    both(root, tone())
    (root / "train" / "noisy" / "x.wav").write_bytes(b"")


def make_text(root):
    both(root, tone())
    (root / "train" / "noisy" / "x.wav").write_text("not audio, just text\n" * 20)


def make_header_only(root):
    both(root, tone(), noisy=np.zeros(0, np.float32))


def make_truncated(root):
    both(root, tone())
    for role in ("clean", "noisy"):
        truncate(root / "train" / role / "x.wav", 6000)


def make_truncated_flac(root):
    """A compressed file cut short cannot be decoded up to the cut: an error, not a warning."""
    for role in ("clean", "noisy"):
        path = root / "train" / role / "x.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), tone(), SR, format="FLAC")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 7 // 10])


def make_nan(root):
    bad = tone()
    bad[100] = np.nan
    both(root, tone(), subtype="FLOAT", noisy=bad)


# name -> (make the pair x, None for a handled case or a regex of the one reported problem)
ERRORS: dict[str, tuple[Callable, str]] = {
    "empty file": (make_empty, r"noisy/x\.wav: empty file \(0 bytes\)"),
    "text file named .wav": (make_text, r"noisy/x\.wav: not a readable audio file"),
    "truncated FLAC": (make_truncated_flac, r"noisy/x\.flac: reading failed"),
    "header without samples": (make_header_only, r"noisy/x\.wav: the file has a header but no samples"),
    "one sample": (lambda r: both(r, tone(1)), r"train/\{clean,noisy\}/x: too short: 1 samples"),
    "NaN samples": (make_nan, r"noisy/x\.wav: 1 NaN or infinite samples \(first at sample 100\)"),
    "lengths beyond the tolerance": (
        lambda r: both(r, tone(8000), noisy=tone(8000 + 400)),
        r"x: clean has 8000 samples and noisy 8400 .* misaligned",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_files_are_one_clear_error_before_training(tmp_path, case):
    make, pattern = ERRORS[case]
    make(good_dataset(tmp_path))
    dm = PairedSpecDataModule(base_dir=str(tmp_path), num_workers=0, batch_size=2, num_frames=FRAMES)
    with pytest.raises(DatasetError) as info:
        dm.prepare_data()
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.problems[0].startswith(str(tmp_path))  # names the file
    assert "Fix or remove these files" in str(info.value)
    assert re.search(pattern, info.value.problems[0]), info.value.problems[0]
    with pytest.raises(DatasetError, match=pattern):  # setup without prepare_data: the same
        PairedSpecDataModule(base_dir=str(tmp_path), num_workers=0, num_frames=FRAMES).setup("fit")


def batch_of_x(dm: PairedSpecDataModule) -> tuple[dict, dict]:
    """The prepared pair x and its normalised training crop as waveforms."""
    ds = dm.dataset("train")
    index = [p.name for p in ds.pairs].index("x")
    for batch in dm.train_dataloader():  # every batch finite, whatever the input was
        assert all(batch[k].isfinite().all() for k in ("clean", "noisy", "peak"))
    return ds.pairs[index], ds.waveforms(index)


def prepared(root: Path, **kw) -> PairedSpecDataModule:
    dm = PairedSpecDataModule(base_dir=str(root), num_workers=0, batch_size=3, num_frames=FRAMES, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_truncated_wav_uses_the_samples_present_with_a_warning(tmp_path):
    make_truncated(good_dataset(tmp_path))
    with pytest.warns(DatasetWarning, match=r"2 truncated file\(s\)"):
        dm = prepared(tmp_path)
    pair, waves = batch_of_x(dm)
    assert pair.length == 6000 and pair.noisy == pair.noisy_source


def test_all_zero_noisy_is_kept_with_a_warning_and_stays_zero(tmp_path):
    both(good_dataset(tmp_path), tone(), noisy=np.zeros(8000, np.float32))
    with pytest.warns(DatasetWarning, match=r"1 all-zero noisy file\(s\).*\n.*noisy/x\.wav"):
        dm = prepared(tmp_path)
    _, waves = batch_of_x(dm)
    assert waves["noisy"].abs().max() == 0 and waves["clean"].isfinite().all()


def test_all_zero_clean_is_a_handled_case(tmp_path):
    both(good_dataset(tmp_path), np.zeros(8000, np.float32), noisy=tone())
    _, waves = batch_of_x(prepared(tmp_path))
    assert waves["clean"].abs().max() == 0 and waves["noisy"].abs().max() == pytest.approx(1.0)


def test_values_beyond_one_are_kept_and_normalised_by_the_noisy_peak(tmp_path):
    both(good_dataset(tmp_path), tone(amp=2.0), subtype="FLOAT", noisy=tone(amp=4.0))
    pair, waves = batch_of_x(prepared(tmp_path))
    assert pair.noisy == pair.noisy_source  # float WAV at the model rate: read in place
    assert waves["peak"].item() == pytest.approx(4.0, rel=1e-3)
    assert waves["noisy"].abs().max() == pytest.approx(1.0)
    assert waves["clean"].abs().max() == pytest.approx(0.5, rel=1e-3)


@pytest.mark.parametrize(
    "subtype,atol",
    [("PCM_U8", 1 / 64), ("PCM_24", 1e-6), ("PCM_32", 1e-6), ("FLOAT", 1e-6), ("DOUBLE", 1e-6)],
)
def test_sample_formats_are_read_in_place_as_float(tmp_path, subtype, atol):
    both(good_dataset(tmp_path), tone(amp=0.9), subtype=subtype)
    assert sf.info(str(tmp_path / "train" / "noisy" / "x.wav")).subtype == subtype
    dm = prepared(tmp_path)
    pair, waves = batch_of_x(dm)
    assert pair.noisy == pair.noisy_source and pair.length == 8000
    whole = dm.dataset("train").load_pair([p.name for p in dm.dataset("train").pairs].index("x"))
    np.testing.assert_allclose(whole["noisy"].numpy(), tone(amp=0.9), atol=atol)


def test_three_channels_are_averaged_to_mono_in_the_cache(tmp_path):
    x = tone()
    three = np.stack([x, 0.5 * x, -0.25 * x], axis=1)
    both(good_dataset(tmp_path), three, subtype="FLOAT")
    dm = prepared(tmp_path)
    pair, _ = batch_of_x(dm)
    assert pair.noisy != pair.noisy_source and sf.info(str(pair.noisy)).channels == 1
    whole = dm.dataset("train").load_pair([p.name for p in dm.dataset("train").pairs].index("x"))
    np.testing.assert_allclose(whole["clean"].numpy(), x * (1 + 0.5 - 0.25) / 3, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_rates_are_resampled_once_into_the_cache(tmp_path, rate):
    n = rate // 2
    both(good_dataset(tmp_path), tone(n, rate), sr=rate)
    pair, _ = batch_of_x(prepared(tmp_path))
    info = sf.info(str(pair.noisy))
    assert pair.noisy != pair.noisy_source and ".cache" in pair.noisy.parts
    assert (info.samplerate, info.frames, pair.length) == (SR, math.ceil(n * SR / rate), 8000)


def test_lengths_within_the_tolerance_are_trimmed_to_the_shorter(tmp_path):
    both(good_dataset(tmp_path), tone(8000), noisy=tone(8000 + 200))  # 12.5 ms < 20 ms
    dm = prepared(tmp_path)
    pair, _ = batch_of_x(dm)
    assert pair.length == 8000
    whole = dm.dataset("train").load_pair([p.name for p in dm.dataset("train").pairs].index("x"))
    assert whole["clean"].shape == whole["noisy"].shape == (8000,)
    with pytest.raises(DatasetError, match="misaligned"):  # a tighter tolerance reports it
        prepared(tmp_path, length_tolerance_s=0.005)


# ----------------------------------------------------------------------------- one list
def test_all_problems_of_all_splits_and_a_missing_valid_split_in_one_list(tmp_path):
    """Through Lightning's own call of ``prepare_data`` (fitting): the missing valid split is
    in the same list as the file problems."""
    good_dataset(tmp_path)
    names = []
    for i, (make, _) in enumerate(ERRORS.values()):
        sub = tmp_path / f"case{i}"
        make(good_dataset(sub))
        for role in ("clean", "noisy"):  # move the bad pair x in as x<i>
            [src] = (sub / "train" / role).glob("x.*")
            os.replace(src, tmp_path / "train" / role / f"x{i}{src.suffix}")
        names.append(f"x{i}")
    write(tmp_path / "test" / "noisy" / "t.wav", np.zeros(0, np.float32))
    os.rename(tmp_path / "valid", tmp_path / "elsewhere")
    dm = PairedSpecDataModule(base_dir=str(tmp_path), num_workers=0, num_frames=FRAMES)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        max_epochs=1,
    )
    with pytest.raises(DatasetError) as info:
        trainer.fit(_NeverTrained(), datamodule=dm)
    problems = info.value.problems
    assert len(problems) == len(ERRORS) + 2, problems
    assert sum("valid: split folder not found" in p for p in problems) == 1
    assert sum("test/noisy/t.wav: the file has a header but no samples" in p for p in problems) == 1
    for name in names:
        assert sum(f"/{name}" in p for p in problems) == 1, (name, problems)


class _NeverTrained(L.LightningModule):
    """Stands in for the model: the data module fails in ``prepare_data``, before any step."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        raise AssertionError("training started on a bad dataset")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_missing_base_dir_is_one_line(tmp_path):
    dm = PairedSpecDataModule(base_dir=str(tmp_path / "nope"), num_workers=0)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    with pytest.raises(DatasetError) as info:
        trainer.fit(_NeverTrained(), datamodule=dm)
    assert info.value.problems == [
        f"{tmp_path / 'nope'}: data.base_dir not found (expected {tmp_path / 'nope'}/"
        "{train,valid,test}/{clean,noisy}/)"
    ]


# ----------------------------------------------------------------------------- command lines
def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_prepare_command_lists_problems_without_a_traceback(tmp_path):
    make_nan(good_dataset(tmp_path))
    (tmp_path / "train" / "clean" / "g2.wav").write_text("text")
    out = _run(["-m", "meanflowse.data.prepare", f"data.base_dir={tmp_path}"], ROOT)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr + out.stdout
    assert "2 problem(s)" in out.stderr
    assert "noisy/x.wav: 1 NaN or infinite samples" in out.stderr
    assert "clean/g2.wav: not a readable audio file" in out.stderr


def test_train_command_lists_problems_without_a_traceback(tmp_path):
    make_empty(good_dataset(tmp_path / "data"))
    out = _run(
        [
            "train.py",
            "data=folder",
            f"data.base_dir={tmp_path / 'data'}",
            "data.num_workers=0",
            "logger=none",
            "trainer=cpu",
            "backbone=ncsnpp_tiny",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        ROOT,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
    assert "1 problem(s)" in out.stderr and "noisy/x.wav: empty file (0 bytes)" in out.stderr
