"""Data: the built-in synthetic corpus, robust audio loading, paired folders, the DataModule.

The DataModule (and so Lightning) is imported on first use, so ``python -m
meanflowse.data.prepare`` and the generator start quickly.
"""

from meanflowse.data.audio import AudioError, TruncatedAudioWarning, load_audio, peak_scale
from meanflowse.data.folder import (
    DatasetError,
    DatasetWarning,
    Pair,
    scan_split,
)
from meanflowse.data.folder_cache import cache_path, prepare_dataset, prepare_split
from meanflowse.data.synthetic import NOISE_KINDS, generate_dataset

__all__ = [
    "AudioError",
    "TruncatedAudioWarning",
    "load_audio",
    "peak_scale",
    "DatasetError",
    "DatasetWarning",
    "Pair",
    "cache_path",
    "prepare_dataset",
    "prepare_split",
    "scan_split",
    "NOISE_KINDS",
    "generate_dataset",
    "PairedSpecDataModule",
    "PairedSpecDataset",
]


def __getattr__(name: str):
    if name in ("PairedSpecDataModule", "PairedSpecDataset"):
        from meanflowse.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
