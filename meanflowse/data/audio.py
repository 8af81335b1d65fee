"""Robust audio loading: every bad file is an :class:`AudioError` that names the file and the fix.

Behaviour for each kind of input (each one is tested in ``tests/test_data_folder.py``, and
through the DataModule and the command lines in ``tests/test_data_bad_input.py``):

- missing, empty (0 bytes), not audio (e.g. a text file named ``.wav``), a header with no
  samples, or a read that fails (an ``OSError`` or libsndfile error): :class:`AudioError`. So
  callers can treat exactly this type as "a bad input file" (eval.py does).
- truncated file (the header promises more data than the file holds, e.g. an interrupted copy):
  the samples that are there are loaded and a :class:`TruncatedAudioWarning` is issued. A
  compressed file (FLAC, ...) cut short cannot be decoded: :class:`AudioError` ("reading failed").
- NaN or infinite samples (float files only): :class:`AudioError`.
- float files with values beyond +-1: kept as they are; the noisy-peak normalisation of the
  data pipeline (method.md section 1) brings them back to +-1.
- 8-bit (unsigned), 16-bit, 24-bit, 32-bit PCM and float WAV, FLAC and the other formats of
  libsndfile (OGG/Vorbis/Opus, MP3, AIFF, ...): float32, integer formats scaled into [-1, 1).
- more than one channel: averaged to mono (``mono=True``) or returned as ``[C, L]``.
- another sample rate than ``target_sr``: resampled with ``torchaudio.functional.resample``.
- all zeros: loaded as they are (the data pipeline floors the normalising peak, see
  :func:`peak_scale`); silent noisy files are reported as a warning when a dataset is prepared.
- too short to train on (fewer samples than one STFT window): checked per dataset in
  ``meanflowse.data.folder``, because the minimum depends on ``n_fft``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

# Normalising by a peak below this would only amplify quantisation noise of an all-zero crop;
# an all-zero noisy crop stays all zeros instead of becoming NaN.
PEAK_FLOOR = 1e-8


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file, the problem and the fix."""


class TruncatedAudioWarning(UserWarning):
    """The file holds fewer samples than its header says; the samples present were used."""


def audio_info(path: str | os.PathLike):
    """``soundfile.info`` of ``path``; raises :class:`AudioError` for unusable files."""
    p = Path(path)
    if p.is_symlink() and not p.exists():  # exists() is False for a dangling or looping link
        raise AudioError(
            f"{p}: a symbolic link that leads to no file (dangling or looping); fix or delete it"
        )
    if not p.is_file():
        raise AudioError(f"{p}: no such file")
    try:
        size = p.stat().st_size
    except OSError as err:
        raise AudioError(f"{p}: cannot be read ({err}); check its permissions") from err
    if size == 0:
        raise AudioError(f"{p}: empty file (0 bytes); re-export or re-download it, or delete it")
    try:
        info = sf.info(str(p))
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioError(
            f"{p}: not a readable audio file ({err}); convert it to WAV or FLAC, e.g. "
            f"`ffmpeg -i {p.name} out.wav`, or delete it"
        ) from err
    if info.frames <= 0:
        raise AudioError(f"{p}: the file has a header but no samples; re-export it or delete it")
    return info


def is_truncated(info) -> bool:
    """True when libsndfile found a data chunk shorter than the header declares."""
    return any(
        line.lstrip().startswith("data") and "should be" in line for line in info.extra_info.splitlines()
    )


def load_audio(
    path: str | os.PathLike, *, target_sr: int | None = None, mono: bool = True
) -> tuple[Tensor, int]:
    """Read ``path`` as float32: ``([L], sr)`` with ``mono=True``, else ``([C, L], sr)``.

    ``sr`` is ``target_sr`` when given (the file is resampled to it), else the file's rate.
    """
    info = audio_info(path)
    if is_truncated(info):
        warnings.warn(
            f"{path}: truncated file (the header declares more samples than it holds); "
            f"using the {info.frames} samples present. Re-copy the file if that is "
            "not intended.",
            TruncatedAudioWarning,
            stacklevel=2,
        )
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: reading failed ({err}); re-export it or delete it") from err
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file has a header but no samples; re-export it or delete it")
    check_finite(data, path)
    # numpy for the channel mean: cheaper than a torch op on a busy thread pool
    wav = torch.from_numpy(data.mean(axis=1) if mono else np.ascontiguousarray(data.T))
    if target_sr is not None and int(target_sr) != sr:
        wav = AF.resample(wav, sr, int(target_sr))
        sr = int(target_sr)
    return wav, sr


def check_finite(data: np.ndarray, path: str | os.PathLike) -> None:
    """Raise :class:`AudioError` when ``data`` holds NaN or infinite samples."""
    bad = ~np.isfinite(data)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise AudioError(
            f"{path}: {int(bad.sum())} NaN or infinite samples (first at sample "
            f"{first}); fix or delete the file"
        )


def peak_scale(noisy: Tensor, floor: float = PEAK_FLOOR) -> Tensor:
    """``max|noisy|`` over the last axis (kept as a size-1 axis), floored at ``floor``.

    Dividing clean and noisy by it is the normalisation of method.md section 1; the enhanced
    output is multiplied back by it.
    """
    return noisy.abs().amax(dim=-1, keepdim=True).clamp_min(floor)
