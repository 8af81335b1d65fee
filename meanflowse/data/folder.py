"""Paired folder datasets: scan and validate ``base_dir/<split>/{clean,noisy}/`` from headers.

Layout: ``base_dir/{train,valid,test}/{clean,noisy}/**/NAME.<ext>``; a clean and a noisy file
form a pair when their paths relative to ``clean/`` and ``noisy/`` match without the extension
(so ``clean/p1/a.flac`` pairs with ``noisy/p1/a.wav``). A split may have no ``clean/`` folder
at all only when it is not ``train`` or ``valid`` (noisy-only test sets).

:func:`scan_split` reads only headers and raises one :class:`DatasetError` listing every problem
of the split; :func:`meanflowse.data.folder_cache.prepare_split` then verifies the samples and
caches what needs resampling.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from meanflowse.data.audio import AudioError, audio_info, is_truncated

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
AUDIO_EXTS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".w64", ".caf"}
)
# audio that libsndfile cannot read: reported, never silently skipped
UNSUPPORTED_EXTS = frozenset({".m4a", ".aac", ".wma", ".mp4", ".webm", ".amr", ".mka"})
DIRECT_FORMATS = frozenset({"WAV", "WAVEX", "FLAC"})  # read in place when rate and channels fit
RESAMPLER = "torchaudio.functional.resample(sinc_interp_hann, lowpass_filter_width=6, rolloff=0.99)"
CACHE_VERSION = 1
DEFAULT_MIN_SAMPLES = 510  # one STFT window at n_fft=510
DEFAULT_LENGTH_TOLERANCE_S = 0.02


class DatasetError(ValueError):
    """Every problem found in a dataset, reported together before anything is trained."""

    max_lines = 50

    def __init__(self, problems: Sequence[str] | str, where: str = "dataset"):
        if isinstance(problems, str):  # re-raised from a message (pickling, DataLoader workers)
            super().__init__(problems)
            self.problems = [problems]
            return
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[: self.max_lines])
        more = len(self.problems) - self.max_lines
        super().__init__(
            f"{len(self.problems)} problem(s) in {where}:\n{shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\nFix or remove these files and run again; `python -m meanflowse.data.prepare "
            "data.base_dir=...` checks a dataset without training."
        )


class DatasetWarning(UserWarning):
    """Files that are usable but probably not what was meant (truncated, silent)."""


@dataclass(frozen=True)
class AudioFile:
    """Header facts of one source file."""

    path: Path
    sample_rate: int
    frames: int
    channels: int
    format: str
    truncated: bool

    def length_at(self, sample_rate: int) -> int:
        """Samples after resampling to ``sample_rate`` (torchaudio rounds up)."""
        return math.ceil(self.frames * sample_rate / self.sample_rate)

    def needs_cache(self, sample_rate: int) -> bool:
        return self.sample_rate != sample_rate or self.channels != 1 or self.format not in DIRECT_FORMATS


@dataclass(frozen=True)
class ScannedPair:
    name: str  # path relative to clean/ and noisy/, without extension, with '/'
    clean: AudioFile | None
    noisy: AudioFile


@dataclass(frozen=True)
class Pair:
    """A prepared pair: ``clean``/``noisy`` are mono WAV/FLAC files at the model rate (the cache
    copy or the original); ``length`` is the shorter of the two, what the pipeline uses."""

    name: str
    noisy: Path
    clean: Path | None
    length: int
    noisy_source: Path
    clean_source: Path | None


# ----------------------------------------------------------------------------- scanning
def _index_folder(folder: Path, problems: list[str]) -> dict[str, Path | None]:
    """Audio files by name (relative path without extension); None for an ambiguous name."""
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            path = Path(dirpath) / fname
            ext = path.suffix.lower()
            if ext in UNSUPPORTED_EXTS:
                problems.append(
                    f"{path}: {ext} cannot be read by libsndfile; convert it to WAV "
                    "or FLAC (e.g. `ffmpeg -i in.m4a out.wav`)"
                )
            elif ext in AUDIO_EXTS:
                found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    index = {}
    for name, paths in found.items():
        if len(paths) > 1:
            problems.append(
                f"{folder}: {' and '.join(p.name for p in paths)} have the same name; keep one of them"
            )
        index[name] = paths[0] if len(paths) == 1 else None
    return index


def _header(path: Path, problems: list[str]) -> AudioFile | None:
    try:
        info = audio_info(path)
    except AudioError as err:
        problems.append(str(err))
        return None
    return AudioFile(
        path, int(info.samplerate), int(info.frames), int(info.channels), str(info.format), is_truncated(info)
    )


def _length_problem(
    name: str,
    split_dir: Path,
    clean_len: int | None,
    noisy_len: int,
    sample_rate: int,
    min_samples: int,
    tolerance: int,
) -> str | None:
    where = f"{split_dir}/{{clean,noisy}}/{name}"
    if clean_len is not None and abs(clean_len - noisy_len) > tolerance:
        return (
            f"{where}: clean has {clean_len} samples and noisy {noisy_len} at {sample_rate} Hz, "
            f"{abs(clean_len - noisy_len) / sample_rate:.3f} s apart (tolerance "
            f"data.length_tolerance_s={tolerance / sample_rate:g}); the pair is probably "
            "misaligned: fix or remove it (smaller differences are trimmed to the shorter)"
        )
    length = noisy_len if clean_len is None else min(clean_len, noisy_len)
    if length < min_samples:
        return (
            f"{where}: too short: {length} samples at {sample_rate} Hz, fewer than one STFT "
            f"window ({min_samples} = n_fft); remove the pair"
        )
    return None


def scan_split(
    base_dir: str | os.PathLike,
    split: str,
    *,
    sample_rate: int = 16000,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    length_tolerance_s: float = DEFAULT_LENGTH_TOLERANCE_S,
    require_clean: bool | None = None,
) -> list[ScannedPair]:
    """Pairs of ``base_dir/split`` sorted by name, from headers only.

    Raises one :class:`DatasetError` listing all problems: missing folders or partners, two files
    with one name (``a.wav`` and ``a.flac``), unreadable files, too-short files, clean and noisy
    lengths further apart than ``length_tolerance_s``, an empty split. A different sample rate is
    not a problem (:func:`prepare_split` resamples). ``require_clean=None`` requires ``clean/``
    for train and valid, and for other splits only when that folder exists.
    """
    pairs, problems = _scan(
        Path(base_dir) / split, split, sample_rate, min_samples, length_tolerance_s, require_clean
    )
    if problems:
        raise DatasetError(problems, where=str(Path(base_dir) / split))
    return pairs


def _scan(
    split_dir: Path,
    split: str,
    sample_rate: int,
    min_samples: int,
    length_tolerance_s: float,
    require_clean: bool | None,
) -> tuple[list[ScannedPair], list[str]]:
    """The good pairs and the problems of a split (see :func:`scan_split`)."""
    if not split_dir.is_dir():
        return [], [
            f"{split_dir}: split folder not found (expected {split_dir}/clean/ and {split_dir}/noisy/)"
        ]
    clean_dir, noisy_dir = split_dir / "clean", split_dir / "noisy"
    if require_clean is None:
        require_clean = split in ("train", "valid") or clean_dir.exists()
    problems: list[str] = []
    for folder, needed in ((clean_dir, require_clean), (noisy_dir, True)):
        if needed and not folder.is_dir():
            problems.append(f"{folder}: folder not found")
    noisy = _index_folder(noisy_dir, problems) if noisy_dir.is_dir() else {}
    clean = _index_folder(clean_dir, problems) if require_clean and clean_dir.is_dir() else {}
    if not noisy and not clean and noisy_dir.is_dir():
        problems.append(
            f"{split_dir}: no audio files (looked for {', '.join(sorted(AUDIO_EXTS))} "
            "under clean/ and noisy/)"
        )

    tolerance = round(length_tolerance_s * sample_rate)
    pairs, truncated = [], []
    for name in sorted(set(noisy) | set(clean)):
        if noisy.get(name, 0) is None or clean.get(name, 0) is None:
            continue  # ambiguous name, reported above
        if name not in noisy:
            problems.append(f"{clean[name]}: no noisy partner (expected {noisy_dir}/{name}.wav)")
            continue
        if require_clean and name not in clean:
            problems.append(f"{noisy[name]}: no clean partner (expected {clean_dir}/{name}.wav)")
            continue
        n_file = _header(noisy[name], problems)
        c_file = _header(clean[name], problems) if require_clean else None
        if n_file is None or (require_clean and c_file is None):
            continue
        truncated += [f.path for f in (c_file, n_file) if f is not None and f.truncated]
        problem = _length_problem(
            name,
            split_dir,
            c_file and c_file.length_at(sample_rate),
            n_file.length_at(sample_rate),
            sample_rate,
            min_samples,
            tolerance,
        )
        if problem:
            problems.append(problem)
        else:
            pairs.append(ScannedPair(name, c_file, n_file))
    if truncated:
        _warn(
            f"{len(truncated)} truncated file(s) in {split_dir} (the header declares more "
            "samples than the file holds; the samples present are used)",
            truncated,
        )
    return pairs, problems


def _warn(message: str, paths: Sequence[Path]) -> None:
    listed = "\n".join(f"  - {p}" for p in paths[:20])
    more = f"\n  ... and {len(paths) - 20} more" if len(paths) > 20 else ""
    warnings.warn(f"{message}:\n{listed}{more}", DatasetWarning, stacklevel=3)
