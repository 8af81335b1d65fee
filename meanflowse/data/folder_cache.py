"""Prepare a paired folder split: verify every file's samples once and cache what needs resampling.

:func:`prepare_split` reads each file of a scanned split (:mod:`meanflowse.data.folder`) once: it
verifies the samples (NaN, silence, exact length) and writes a float32 mono WAV at the model rate
into the cache for every file that is at another rate, has several channels or is not WAV/FLAC.
What was verified is recorded in ``<cache>/<split>.json`` (keyed by file size and mtime), so later
runs only stat the files. Writes are atomic (temp file + ``os.replace``), so an interrupted run
resumes cleanly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from meanflowse.atomic import atomic_path, write_text_atomic
from meanflowse.data.audio import AudioError, load_audio
from meanflowse.data.folder import (
    CACHE_VERSION,
    DEFAULT_LENGTH_TOLERANCE_S,
    DEFAULT_MIN_SAMPLES,
    RESAMPLER,
    SPLITS,
    AudioFile,
    DatasetError,
    Pair,
    _length_problem,
    _scan,
    _warn,
)

log = logging.getLogger(__name__)


def cache_path(
    base_dir: str | os.PathLike, sample_rate: int, cache_dir: str | os.PathLike | None = None
) -> Path:
    """``<base_dir>/.cache/sr<rate>-<hash>`` (or under ``cache_dir``): one folder per setting,
    so changing the rate or the resampler prepares again instead of reusing stale files."""
    key = {"sample_rate": int(sample_rate), "resampler": RESAMPLER, "version": CACHE_VERSION}
    if cache_dir is not None:  # a shared cache root: keep datasets apart
        key["base_dir"] = str(Path(base_dir).resolve())
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    root = Path(cache_dir) if cache_dir is not None else Path(base_dir) / ".cache"
    return root / f"sr{int(sample_rate)}-{digest}"


def _atomic_write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text, suffix=".tmp")  # .tmp: never mistaken for a cached .wav


def _atomic_write_wav(path: Path, wav, sample_rate: int) -> None:
    with atomic_path(path, suffix=".tmp") as tmp:
        # float32 keeps resampling overshoot beyond +-1 and all the precision: nothing is lost
        sf.write(str(tmp), wav.numpy(), sample_rate, subtype="FLOAT", format="WAV")


def _verify(file: AudioFile, sample_rate: int, target: Path | None) -> dict:
    with warnings.catch_warnings():  # truncation was reported by the scan
        warnings.simplefilter("ignore")
        wav, _ = load_audio(file.path, target_sr=sample_rate)
    if target is not None:
        _atomic_write_wav(target, wav, sample_rate)
    # numpy: small torch ops stall on a busy intra-op thread pool (10 ms each on a shared CPU)
    return {
        "frames": int(wav.shape[-1]),
        "peak": float(np.abs(wav.numpy()).max()),
        "cached": target is not None,
    }


def prepare_split(
    base_dir: str | os.PathLike,
    split: str,
    *,
    sample_rate: int = 16000,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    length_tolerance_s: float = DEFAULT_LENGTH_TOLERANCE_S,
    cache_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    require_clean: bool | None = None,
) -> list[Pair]:
    """Scan, verify and (where needed) resample one split; returns its pairs sorted by name.

    ``limit`` keeps the first ``limit`` pairs (the scan still checks every header).
    Raises :class:`DatasetError` listing every problem of the split, those of the headers
    (:func:`scan_split`) and those found in the samples (NaN, unreadable data) together.
    """
    split_dir = Path(base_dir) / split
    # header problems do not stop here: the good pairs are verified too, so one run reports all
    scanned, problems = _scan(split_dir, split, sample_rate, min_samples, length_tolerance_s, require_clean)
    if not scanned and problems:
        raise DatasetError(problems, where=str(split_dir))
    if limit is not None:
        scanned = scanned[: int(limit)]
    cache = cache_path(base_dir, sample_rate, cache_dir)
    manifest_path = cache / f"{split}.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    if not (cache / "key.json").is_file():
        try:
            _atomic_write_text(
                cache / "key.json",
                json.dumps(
                    {
                        "base_dir": str(Path(base_dir).resolve()),
                        "sample_rate": int(sample_rate),
                        "resampler": RESAMPLER,
                        "version": CACHE_VERSION,
                    },
                    indent=2,
                )
                + "\n",
            )
        except OSError as err:
            raise DatasetError(
                [f"{cache}: cannot write the cache ({err}); set data.cache_dir to a writable folder"],
                where=str(split_dir),
            ) from err

    silent: list[Path] = []
    pairs: list[Pair] = []
    todo = sum(1 for sp in scanned for f in (sp.clean, sp.noisy) if f is not None)
    done = changed = 0
    for sp in scanned:
        ready = {}
        for role, file in (("clean", sp.clean), ("noisy", sp.noisy)):
            if file is None:
                continue
            rel = file.path.relative_to(split_dir)
            key = rel.as_posix()
            stat = file.path.stat()
            stamp = [stat.st_size, stat.st_mtime_ns]
            target = cache / split / rel.with_suffix(".wav") if file.needs_cache(sample_rate) else None
            entry = manifest.get(key)
            if (
                entry is None
                or entry.get("stamp") != stamp
                or entry.get("cached") != (target is not None)
                or (target is not None and not target.is_file())
            ):
                try:
                    entry = {**_verify(file, sample_rate, target), "stamp": stamp}
                except AudioError as err:
                    problems.append(str(err))
                    continue
                manifest[key] = entry
                changed += 1
                if changed % 500 == 0:  # resume point for big datasets
                    _atomic_write_text(manifest_path, json.dumps(manifest))
            done += 1
            if done % 2000 == 0:
                log.info("%s: %d/%d files verified", split_dir, done, todo)
            ready[role] = (target or file.path, entry)
        if "noisy" not in ready or (sp.clean is not None and "clean" not in ready):
            continue
        noisy_path, noisy_entry = ready["noisy"]
        clean_path, clean_entry = ready.get("clean", (None, None))
        clean_len = clean_entry["frames"] if clean_entry else None
        problem = _length_problem(
            sp.name,
            split_dir,
            clean_len,
            noisy_entry["frames"],
            sample_rate,
            min_samples,
            round(length_tolerance_s * sample_rate),
        )
        if problem:
            problems.append(problem)
            continue
        if noisy_entry["peak"] == 0.0:
            silent.append(sp.noisy.path)
        length = noisy_entry["frames"] if clean_len is None else min(clean_len, noisy_entry["frames"])
        pairs.append(
            Pair(sp.name, noisy_path, clean_path, length, sp.noisy.path, sp.clean.path if sp.clean else None)
        )
    if changed:
        _atomic_write_text(manifest_path, json.dumps(manifest))
        log.info("%s: verified %d file(s), cache %s", split_dir, changed, cache)
    if problems:
        raise DatasetError(problems, where=str(split_dir))
    if silent:
        _warn(
            f"{len(silent)} all-zero noisy file(s) in {split_dir} (kept; they normalise to "
            "silence and teach nothing)",
            silent,
        )
    return pairs


def prepare_dataset(
    base_dir: str | os.PathLike, *, splits: Sequence[str] = SPLITS, **kwargs
) -> dict[str, list[Pair]]:
    """:func:`prepare_split` for each of ``splits`` that exists; one :class:`DatasetError` for
    all problems of all splits. ``kwargs`` go to :func:`prepare_split`."""
    result, problems = {}, []
    for split in splits:
        if not (Path(base_dir) / split).is_dir():
            continue
        try:
            result[split] = prepare_split(base_dir, split, **kwargs)
        except DatasetError as err:
            problems += err.problems
    if problems:
        raise DatasetError(problems, where=str(base_dir))
    if not result:
        raise DatasetError(
            [f"{base_dir}: none of the split folders {', '.join(splits)} exists"], where=str(base_dir)
        )
    return result
