"""Paired clean/noisy spectrogram batches for training and validation (method.md section 1).

Each item is a crop of ``num_frames`` STFT frames, ``(num_frames - 1) * hop_length`` samples:
at a random position for ``train`` (the same for clean and noisy), centred otherwise; shorter
files are zero-padded on both sides. Clean and noisy crops are divided by the noisy crop's peak
before the STFT. The random draws of item ``i`` in epoch ``e`` come from generators seeded with
``(seed, e, i)`` (crop position), ``(seed, e, i, 1)`` (training level, ``train_gain_db``) and
``(seed, e, i, 2)`` (training SNR change, ``train_snr_jitter_db``), so batches depend neither on
``num_workers`` nor on the number of devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from meanflowse.bounds import SNR_JITTER
from meanflowse.data.audio import PEAK_FLOOR, check_finite
from meanflowse.data.epoch_loader import EpochDataLoader, EpochRandomSampler
from meanflowse.data.folder import (
    DEFAULT_LENGTH_TOLERANCE_S,
    SPLITS,
    DatasetError,
    Pair,
)
from meanflowse.data.folder_cache import prepare_dataset, prepare_split
from meanflowse.data.synthetic import generate_dataset
from meanflowse.method.stft import SpecConfig, wav_to_spec

# the splits each Lightning stage reads (trainer.state.fn values and `setup` stages)
STAGE_SPLITS = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",), "predict": ("test",)}


def _read(path: Path, start: int, frames: int) -> np.ndarray:
    data = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)[0]
    check_finite(data, path)
    return data.mean(axis=1)  # prepared files are mono; averaging is a no-op guard


class PairedSpecDataset(Dataset):
    """Crops of prepared pairs as compressed spectrograms ``[2, F, num_frames]``.

    Items are dicts ``{"clean", "noisy": float32 [2, F, T], "peak": float32 scalar, "name": str}``;
    ``"clean"`` is absent for a split without clean files. ``peak`` is what the waveforms were
    divided by (the noisy crop's ``max|y|``, after the SNR change, over the level gain), so
    ``clean * peak`` is the file's clean crop. :meth:`load_pair` gives whole files.
    """

    def __init__(
        self,
        pairs: list[Pair],
        *,
        spec: SpecConfig,
        sample_rate: int,
        num_frames: int = 256,
        random_crop: bool = False,
        gain_db: tuple[float, float] = (0.0, 0.0),
        snr_jitter_db: float = 0.0,
        seed: int = 0,
    ):
        self.pairs = list(pairs)
        self.spec = spec
        self.sample_rate = sample_rate
        self.num_frames = num_frames
        self.crop_samples = spec.samples_for_frames(num_frames)
        self.random_crop = random_crop
        self.gain_db = (float(gain_db[0]), float(gain_db[1]))
        self.snr_jitter_db = float(snr_jitter_db)
        self.seed = seed
        # shared memory, so persistent DataLoader workers see the epoch the main process sets
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    @property
    def has_clean(self) -> bool:
        return bool(self.pairs) and self.pairs[0].clean is not None

    def load_pair(self, index: int) -> dict:
        """Whole files, unnormalised: ``{"noisy": [L], "clean": [L] (if any), "name",
        "sample_rate"}``; both trimmed to the pair's common length."""
        pair = self.pairs[index]
        out = {
            "name": pair.name,
            "sample_rate": self.sample_rate,
            "noisy": torch.from_numpy(_read(pair.noisy, 0, pair.length)),
        }
        if pair.clean is not None:
            out["clean"] = torch.from_numpy(_read(pair.clean, 0, pair.length))
        return out

    def crop_start(self, index: int) -> int:
        """First sample of the crop of ``index`` (negative: the file is shorter than a crop)."""
        spare = self.pairs[index].length - self.crop_samples
        if spare <= 0:
            return spare // 2 if spare < 0 else 0
        if not self.random_crop:
            return spare // 2
        rng = np.random.default_rng((self.seed, int(self._epoch), index))
        return int(rng.integers(0, spare + 1))

    def gain(self, index: int) -> float:
        """The crop's level below full scale, drawn from ``gain_db`` per (seed, epoch, index).

        The enhancer scales a whole file by its peak, so most of a real recording reaches the
        model well below the peak of 1 that a peak-normalised crop has; a gain < 1 on training
        crops shows the model those levels. 1 when the range is (0, 0) (the default)."""
        low, high = self.gain_db
        if low == high == 0.0:
            return 1.0
        rng = np.random.default_rng((self.seed, int(self._epoch), index, 1))
        return float(10 ** (rng.uniform(low, high) / 20))

    def snr_shift(self, index: int) -> float:
        """The crop's SNR change in dB, drawn from +-``snr_jitter_db`` per (seed, epoch, index).

        A fixed corpus holds each clean file at one SNR; rescaling its noise (``noisy - clean``)
        anew each epoch shows the model every voice at many SNRs, so it learns how much to
        change from the input itself. 0 when ``snr_jitter_db`` is 0 (the default)."""
        if self.snr_jitter_db == 0.0:
            return 0.0
        rng = np.random.default_rng((self.seed, int(self._epoch), index, 2))
        return float(rng.uniform(-self.snr_jitter_db, self.snr_jitter_db))

    def waveforms(self, index: int) -> dict:
        """The normalised crop as waveforms ``{"noisy", "clean"?: [crop_samples], "peak"}``."""
        pair = self.pairs[index]
        n, start = self.crop_samples, self.crop_start(index)
        pad_left = max(0, -start)
        start, frames = max(0, start), min(n, pair.length)
        # numpy up to the STFT: small torch ops stall on a busy intra-op thread pool
        waves = {
            role: np.pad(_read(path, start, frames), (pad_left, n - frames - pad_left))
            for role, path in (("noisy", pair.noisy), ("clean", pair.clean))
            if path is not None
        }
        shift = self.snr_shift(index)
        if shift != 0.0 and "clean" in waves:  # the noise, rescaled: SNR + shift dB
            noise = waves["noisy"] - waves["clean"]
            waves["noisy"] = waves["clean"] + np.float32(10 ** (-shift / 20)) * noise
        peak = max(float(np.abs(waves["noisy"]).max()), PEAK_FLOOR)
        peak /= self.gain(index)
        out = {role: torch.from_numpy(wav / np.float32(peak)) for role, wav in waves.items()}
        out["peak"] = torch.tensor(peak, dtype=torch.float32)
        return out

    def __getitem__(self, index: int) -> dict:
        waves = self.waveforms(index)
        item = {"name": self.pairs[index].name, "peak": waves.pop("peak")}
        for role, wav in waves.items():
            item[role] = wav_to_spec(wav, self.spec).float()
        return item


def _plain(value):
    """OmegaConf nodes -> dicts and lists (hyperparameters, the synthetic marker compare them)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _snr_jitter(value) -> float:
    """``data.train_snr_jitter_db`` as a float, or a ValueError naming the key and its range."""
    if not SNR_JITTER.holds(value):
        raise ValueError(SNR_JITTER.problem(value))
    return float(value)


class PairedSpecDataModule(L.LightningDataModule):
    """Clean/noisy spectrogram batches from ``base_dir/{train,valid,test}/{clean,noisy}/``.

    With ``synthetic`` set, the built-in dataset is generated into ``base_dir`` on first use
    (``synthetic`` holds :func:`meanflowse.data.synthetic.generate_dataset` keyword arguments).
    Folders are scanned, verified and resampled into the cache by ``prepare_data``
    (:func:`meanflowse.data.folder_cache.prepare_split`). Batches: ``{"clean", "noisy": [B, 2, F, T],
    "peak": [B], "name": list[str]}``.
    """

    def __init__(
        self,
        *,
        base_dir: str,
        sample_rate: int = 16000,
        spec: Mapping | None = None,
        num_frames: int = 256,
        batch_size: int = 8,
        global_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        limit_files: int | None = None,
        synthetic: Mapping | None = None,
        cache_dir: str | None = None,
        length_tolerance_s: float = DEFAULT_LENGTH_TOLERANCE_S,
        train_gain_db: Sequence[float] = (0.0, 0.0),
        train_snr_jitter_db: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        spec = asdict(SpecConfig(**_plain(spec or {})))  # the full spec, defaults included
        synthetic = _plain(synthetic)
        train_gain_db = [float(x) for x in train_gain_db]  # plain: checkpoints hold no OmegaConf types
        self.save_hyperparameters(logger=False)
        self.base_dir = Path(base_dir)
        self.sample_rate = int(sample_rate)
        self.spec = SpecConfig(**spec)
        self.num_frames = int(num_frames)
        self.batch_size = int(batch_size)
        # the batch of one optimizer step over every device (train.py accumulates micro-batches
        # of batch_size to reach it; fit.accumulation); None: batch_size x devices, no accumulation
        self.global_batch_size = None if global_batch_size is None else int(global_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.limit_files = limit_files
        self.synthetic = synthetic
        self.cache_dir = cache_dir
        self.length_tolerance_s = float(length_tolerance_s)
        self.train_gain_db = tuple(train_gain_db)
        if len(self.train_gain_db) != 2 or not self.train_gain_db[0] <= self.train_gain_db[1] <= 0.0:
            raise ValueError(f"data.train_gain_db={list(train_gain_db)}: [low, high] dB, low <= high <= 0")
        self.train_snr_jitter_db = _snr_jitter(train_snr_jitter_db)
        self.seed = int(seed)
        self._datasets: dict[str, PairedSpecDataset] = {}

    # ------------------------------------------------------------------ preparing
    def _prepare_kwargs(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "min_samples": self.spec.n_fft,
            "length_tolerance_s": self.length_tolerance_s,
            "cache_dir": self.cache_dir,
            "limit": self.limit_files,
        }

    def _generate(self) -> None:
        if self.synthetic is not None:
            generate_dataset(self.base_dir, sample_rate=self.sample_rate, **self.synthetic)

    def _required_splits(self, stage: str | None = None) -> tuple[str, ...]:
        """The splits ``stage`` (by default the attached trainer's) reads; () when unknown."""
        if stage is None and self.trainer is not None:
            stage = getattr(self.trainer.state.fn, "value", None)
        return STAGE_SPLITS.get(stage or "", ())

    def _missing_split(self, split: str) -> str:
        if not self.base_dir.is_dir():
            return (
                f"{self.base_dir}: data.base_dir not found (expected {self.base_dir}/"
                f"{{{','.join(SPLITS)}}}/{{clean,noisy}}/)"
            )
        return (
            f"{self.base_dir / split}: split folder not found; the data module reads "
            f"{self.base_dir}/{{{','.join(SPLITS)}}}/{{clean,noisy}}/ (VoiceBank-DEMAND "
            "has no valid split: move a few speakers of train, e.g. p226 and p287, to valid/)"
        )

    def prepare_data(self) -> None:
        """Generate (synthetic) and scan/verify/resample every split folder that exists, raising
        one :class:`DatasetError` for all problems before training starts: those of every file
        and the split folders the trainer's stage needs but does not find."""
        self._generate()
        problems = list(
            dict.fromkeys(
                self._missing_split(s) for s in self._required_splits() if not (self.base_dir / s).is_dir()
            )
        )
        if any((self.base_dir / s).is_dir() for s in SPLITS) or not problems:
            try:
                prepare_dataset(self.base_dir, splits=SPLITS, **self._prepare_kwargs())
            except DatasetError as err:
                problems += err.problems
        if problems:
            raise DatasetError(problems, where=str(self.base_dir))

    def setup(self, stage: str | None = None) -> None:
        for split in self._required_splits(stage or ""):
            self.dataset(split)

    def dataset(self, split: str) -> PairedSpecDataset:
        """The dataset of ``split`` (prepared on first use)."""
        if split not in self._datasets:
            self._generate()
            if not (self.base_dir / split).is_dir():
                raise DatasetError([self._missing_split(split)], where=str(self.base_dir))
            pairs = prepare_split(self.base_dir, split, **self._prepare_kwargs())
            self._datasets[split] = PairedSpecDataset(
                pairs,
                spec=self.spec,
                sample_rate=self.sample_rate,
                num_frames=self.num_frames,
                random_crop=split == "train",
                gain_db=self.train_gain_db if split == "train" else (0.0, 0.0),
                snr_jitter_db=self.train_snr_jitter_db if split == "train" else 0.0,
                seed=self.seed,
            )
        return self._datasets[split]

    def test_files(self, split: str = "test") -> list[Pair]:
        """Prepared pairs of ``split``: ``pair.noisy``/``pair.clean`` (None when the split has no
        clean files) are mono files at ``sample_rate``; ``pair.name`` is the relative name."""
        return list(self.dataset(split).pairs)

    # ------------------------------------------------------------------ loaders
    def _trainer_epoch(self) -> int | None:
        return None if self.trainer is None else int(self.trainer.current_epoch)

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        ds = self.dataset(split)
        kwargs = {}
        if train:
            # under DDP Lightning swaps in its DistributedSampler (seeded by the global seed)
            sampler = EpochRandomSampler(ds, seed=self.seed)
            kwargs = {
                "sampler": sampler,
                "drop_last": len(ds) >= self.batch_size,
                "epoch_fn": self._trainer_epoch,
            }
        return EpochDataLoader(
            ds,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
