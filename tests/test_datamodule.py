"""PairedSpecDataModule: batches, normalisation, crops, reproducibility, configs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from meanflowse.data.datamodule import PairedSpecDataModule
from meanflowse.data.folder import DatasetError
from meanflowse.data.synthetic import NOISE_KINDS
from meanflowse.method.stft import spec_to_wav

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SYN = dict(num_train=6, num_valid=2, num_test=2, duration_s=[1.0, 3.0], snr_db=[0.0, 10.0])


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "syn"
    PairedSpecDataModule(base_dir=str(root), synthetic=SYN).prepare_data()
    return root


def make(base_dir, **kw) -> PairedSpecDataModule:
    kw = {"batch_size": 4, "num_workers": 0, **kw}
    dm = PairedSpecDataModule(base_dir=str(base_dir), **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def epochs(dm, n=2):
    loader = dm.train_dataloader()
    return [[b for b in loader] for _ in range(n)]


def test_batches_have_the_documented_shapes(syn_dir):
    dm = make(syn_dir)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"clean", "noisy", "peak", "name"}
    for key in ("clean", "noisy"):
        assert batch[key].shape == (4, 2, 256, 256) and batch[key].dtype == torch.float32
    assert batch["peak"].shape == (4,) and len(batch["name"]) == 4
    assert len(dm.train_dataloader()) == 1  # 6 files, batch 4, drop_last
    val = list(dm.val_dataloader())
    assert [b["noisy"].shape[0] for b in val] == [2]
    assert not dm.train_dataloader().pin_memory or torch.cuda.is_available()


def test_items_are_normalised_by_the_noisy_peak(syn_dir):
    dm = make(syn_dir)
    ds = dm.dataset("train")
    for i in range(len(ds)):
        waves = ds.waveforms(i)
        assert waves["noisy"].abs().max() == pytest.approx(1.0)
        raw = ds.load_pair(i)
        start = ds.crop_start(i)
        if start >= 0:  # the crop is the raw signal divided by the raw crop's peak
            seg = raw["noisy"][start : start + ds.crop_samples]
            assert waves["peak"] == pytest.approx(seg.abs().max().item())
            torch.testing.assert_close(
                waves["clean"] * waves["peak"], raw["clean"][start : start + ds.crop_samples]
            )
    item = ds[0]
    wav = spec_to_wav(item["noisy"], dm.spec, ds.crop_samples)
    assert wav.abs().max().item() == pytest.approx(1.0, abs=1e-4)


def test_train_gain_puts_training_crops_below_their_peak_and_leaves_valid_alone(syn_dir):
    dm = make(syn_dir, train_gain_db=[-12.0, -6.0])
    ds, plain = dm.dataset("train"), make(syn_dir).dataset("train")
    levels = []
    for i in range(len(ds)):
        waves, ref = ds.waveforms(i), plain.waveforms(i)
        level = waves["noisy"].abs().max().item()
        assert 10 ** (-12 / 20) - 1e-6 <= level <= 10 ** (-6 / 20) + 1e-6
        for role in ("noisy", "clean"):  # one gain on both; peak still undoes the scaling
            torch.testing.assert_close(waves[role] * waves["peak"], ref[role] * ref["peak"])
        levels.append(level)
    assert len(set(levels)) == len(levels)  # drawn per file
    assert ds.waveforms(0)["noisy"].abs().max().item() == pytest.approx(levels[0])  # same epoch: same
    ds.set_epoch(1)
    assert ds.waveforms(0)["noisy"].abs().max().item() != pytest.approx(levels[0])  # new epoch: new
    assert dm.dataset("valid").waveforms(0)["noisy"].abs().max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="train_gain_db"):
        PairedSpecDataModule(base_dir=str(syn_dir), train_gain_db=[0.0, 6.0])


def test_snr_jitter_rescales_the_noise_of_training_crops_and_leaves_valid_alone(syn_dir):
    dm = make(syn_dir, train_snr_jitter_db=6.0)
    ds, plain = dm.dataset("train"), make(syn_dir).dataset("train")
    scales = []
    for i in range(len(ds)):
        waves, ref = ds.waveforms(i), plain.waveforms(i)
        clean, raw_clean = waves["clean"] * waves["peak"], ref["clean"] * ref["peak"]
        torch.testing.assert_close(clean, raw_clean)  # the speech is untouched
        noise = waves["noisy"] * waves["peak"] - clean
        raw_noise = ref["noisy"] * ref["peak"] - raw_clean
        scale = (noise @ raw_noise / (raw_noise @ raw_noise)).item()
        torch.testing.assert_close(noise, scale * raw_noise, atol=1e-5, rtol=0)  # one gain
        assert scale == pytest.approx(10 ** (-ds.snr_shift(i) / 20), rel=1e-4)
        assert 10 ** (-6 / 20) - 1e-4 <= scale <= 10 ** (6 / 20) + 1e-4
        assert waves["noisy"].abs().max().item() == pytest.approx(1.0)  # still peak-normalised
        scales.append(scale)
    assert len({round(s, 6) for s in scales}) == len(scales)  # drawn per file
    shift, before = ds.snr_shift(0), ds.waveforms(0)["noisy"]
    ds.set_epoch(1)
    assert ds.snr_shift(0) != shift  # new epoch: new SNR, and so another crop
    assert not torch.allclose(ds.waveforms(0)["noisy"], before)
    for split in ("valid", "test"):
        held_out = dm.dataset(split)
        assert held_out.snr_shift(0) == 0.0
        untouched = make(syn_dir).dataset(split).waveforms(0)["noisy"]
        torch.testing.assert_close(held_out.waveforms(0)["noisy"], untouched)
    for bad in (-1.0, float("nan"), float("inf"), 41.0, [-6.0, 6.0], "six", True):
        with pytest.raises(ValueError, match="train_snr_jitter_db"):
            PairedSpecDataModule(base_dir=str(syn_dir), train_snr_jitter_db=bad)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_short_files_are_zero_padded_on_both_sides(syn_dir, split):
    ds = make(syn_dir).dataset(split)
    lengths = [p.length for p in ds.pairs]
    short = [i for i, n in enumerate(lengths) if n < ds.crop_samples]
    long = [i for i, n in enumerate(lengths) if n >= ds.crop_samples]
    assert (short, long) != ([], []) and bool(short) == (split == "test")
    for i in short:
        waves = ds.waveforms(i)
        pad = ds.crop_samples - lengths[i]
        left, inner = pad // 2, slice(pad // 2, pad // 2 + lengths[i])
        assert waves["noisy"][:left].abs().sum() == 0 and waves["noisy"][inner.stop :].abs().sum() == 0
        assert waves["noisy"][inner].abs().max() == pytest.approx(1.0)
        assert ds[i]["noisy"].shape == (2, 256, 256)
    for i in long:  # valid and test crops are centred
        assert ds.crop_start(i) == (lengths[i] - ds.crop_samples) // 2


def test_same_seed_same_batches_whatever_the_workers(syn_dir):
    a = epochs(make(syn_dir, seed=1))
    b = epochs(make(syn_dir, seed=1, num_workers=2))
    for ea, eb in zip(a, b):
        for ba, bb in zip(ea, eb):
            assert ba["name"] == bb["name"]
            torch.testing.assert_close(ba["noisy"], bb["noisy"], rtol=0, atol=0)
            torch.testing.assert_close(ba["clean"], bb["clean"], rtol=0, atol=0)
    ds = make(syn_dir, seed=1).dataset("train")
    starts = lambda: [ds.crop_start(i) for i in range(len(ds))]  # noqa: E731
    first = starts()
    ds.set_epoch(1)
    assert starts() != first  # new crops each epoch
    other = make(syn_dir, seed=2).dataset("train")
    assert [other.crop_start(i) for i in range(len(other))] != first


def test_limit_files_and_test_files(syn_dir):
    dm = make(syn_dir, limit_files=3)
    assert len(dm.dataset("train")) == 3 and len(dm.dataset("valid")) == 2
    assert [p.name for p in dm.dataset("train").pairs] == ["train_00000", "train_00001", "train_00002"]
    dm.setup("test")
    files = dm.test_files("test")
    assert len(files) == 2 and all(p.clean is not None and p.noisy.is_file() for p in files)
    whole = dm.dataset("test").load_pair(0)
    assert whole["noisy"].shape == (files[0].length,) and whole["sample_rate"] == 16000
    loader = dm.train_dataloader()  # fewer files than a batch: keep the partial batch
    assert not loader.drop_last and len(loader) == 1


def test_noisy_only_test_split_and_missing_valid(tmp_path, syn_dir):
    shutil.copytree(syn_dir / "train", tmp_path / "train")
    shutil.copytree(syn_dir / "test" / "noisy", tmp_path / "test" / "noisy")
    dm = PairedSpecDataModule(base_dir=str(tmp_path), batch_size=2, num_workers=0)
    dm.prepare_data()  # prepares the splits that exist
    with pytest.raises(DatasetError, match="valid: split folder not found"):
        dm.setup("fit")
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert "clean" not in batch and batch["noisy"].shape == (2, 2, 256, 256)
    assert all(p.clean is None for p in dm.test_files())


def test_rejects_unknown_settings(tmp_path):
    with pytest.raises(TypeError):
        PairedSpecDataModule(base_dir=str(tmp_path), batch_sise=3)
    with pytest.raises(TypeError):
        PairedSpecDataModule(base_dir=str(tmp_path), spec={"nfft": 512})
    dm = PairedSpecDataModule(base_dir=str(tmp_path), synthetic={"num_trian": 3})
    with pytest.raises(TypeError):
        dm.prepare_data()


def test_resampled_dataset_flows_through(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for role in ("clean", "noisy"):
            path = tmp_path / split / role / "a.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), 0.1 * rng.standard_normal((48000, 2)), 48000, format="FLAC")
    dm = make(tmp_path, batch_size=1)
    [pair] = dm.test_files("train")
    assert pair.length == 16000 and pair.noisy != pair.noisy_source
    assert next(iter(dm.train_dataloader()))["noisy"].shape == (1, 2, 256, 256)


SPEC_16K = {"n_fft": 510, "hop_length": 128, "spec_factor": 0.15, "spec_abs_exponent": 0.5}
SPEC_48K = {"n_fft": 1534, "hop_length": 384, "spec_factor": 0.065, "spec_abs_exponent": 0.667}


@pytest.mark.parametrize(
    "name,rate,spec,bins",
    [
        ("synthetic", 16000, SPEC_16K, 256),
        ("folder", 16000, SPEC_16K, 256),
        ("vbd", 16000, SPEC_16K, 256),
        ("folder_48k", 48000, SPEC_48K, 768),
    ],
)
def test_data_configs_compose_and_instantiate(tmp_path, name, rate, spec, bins):
    conf = tmp_path / "conf"
    shutil.copytree(CONFIGS / "data", conf / "data")
    (conf / "root.yaml").write_text(
        f"defaults:\n  - data: {name}\n  - _self_\npaths:\n  data_dir: {tmp_path}/data\n"
    )
    overrides = [] if name == "synthetic" else [f"data.base_dir={tmp_path}/vbd"]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="root", overrides=overrides)
    assert dict(cfg.data.spec) == spec
    dm = instantiate(cfg.data)
    assert isinstance(dm, PairedSpecDataModule) and dm.spec.num_bins == bins
    assert dm.sample_rate == rate and dm.num_frames == 256
    saved = tmp_path / "hparams.pt"  # what a checkpoint stores: readable by the safe loader
    torch.save({"datamodule_hyper_parameters": dict(dm.hparams)}, saved)
    assert torch.load(saved, weights_only=True)["datamodule_hyper_parameters"]["train_gain_db"] == [0.0, 0.0]
    if name == "synthetic":
        assert dm.base_dir == tmp_path / "data" / "synthetic"
        assert dm.synthetic["noise_kinds"] == list(NOISE_KINDS)


def test_48k_preset_resamples_to_48k_and_gives_768_bins(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "valid"):  # 16 kHz sources: upsampled into a 48 kHz cache
        for role in ("clean", "noisy"):
            path = tmp_path / split / role / "a.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), 0.1 * rng.standard_normal(8000), 16000)
    dm = make(tmp_path, batch_size=1, sample_rate=48000, num_frames=64, spec=SPEC_48K)
    [pair] = dm.test_files("train")
    assert pair.length == 24000 and sf.info(str(pair.noisy)).samplerate == 48000
    assert "sr48000-" in str(pair.noisy)
    batch = next(iter(dm.train_dataloader()))
    assert batch["noisy"].shape == (1, 2, 768, 64)
