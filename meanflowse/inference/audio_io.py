"""Audio out of eval: atomic writes in the input's own format, and fitting rate and length."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import soundfile as sf
import torch
import torchaudio

from meanflowse.atomic import atomic_path, write_error


def write_atomic(
    path: Path,
    wav: torch.Tensor,
    sr: int,
    *,
    format: str = "WAV",
    subtype: str | None = None,
    before_rename: Callable[[Path], None] | None = None,
) -> None:
    """Write ``wav [C, L]`` to a temp file beside ``path``, then rename: never a half-written
    file. ``format``/``subtype`` as soundfile names them (the input's, so the output matches).
    ``before_rename(tmp)`` runs on the written temp file (eval records its provenance there, so
    no output is ever in place without its record)."""
    if not sf.check_format(format, subtype):
        subtype = None  # soundfile's default for the format
    data = wav.T.numpy()
    if subtype is not None and (subtype.startswith("PCM") or subtype in ("ULAW", "ALAW")):
        data = data.clip(-1.0, 1.0)  # integer formats: clip rather than wrap around
    with atomic_path(path) as tmp:
        try:
            sf.write(tmp, data, sr, format=format, subtype=subtype)
        except (sf.SoundFileError, OSError) as err:  # libsndfile says only "System error."
            raise write_error(path, err) from None
        if before_rename is not None:
            before_rename(tmp)


def to_rate(wav: torch.Tensor, sr: int, target: int) -> torch.Tensor:
    return torchaudio.functional.resample(wav, sr, target) if sr != target else wav


def fit_length(wav: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last axis to ``length`` (resampling may be off by a sample)."""
    if wav.shape[-1] == length:
        return wav
    return torch.nn.functional.pad(wav, (0, max(0, length - wav.shape[-1])))[..., :length]
