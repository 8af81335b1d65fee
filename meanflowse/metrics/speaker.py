"""Speaker similarity: cosine of Resemblyzer GE2E embeddings (weights shipped in its wheel)."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from meanflowse.metrics.base import MetricError, _check_sr, _package_dir, _pair, _resample

_SPK_SR = 16000
_SPK_N_FFT = 400  # 25 ms
_SPK_HOP = 160  # 10 ms
_SPK_N_MELS = 40
_SPK_PARTIAL_FRAMES = 160  # 1.6 s partial utterances
_SPK_RATE = 1.3  # partials per second
_SPK_MIN_COVERAGE = 0.75
_SPK_TARGET_DBFS = -30.0


def _speaker_weights_path() -> Path:
    pkg = _package_dir("resemblyzer")
    if pkg is None:
        raise MetricError(
            "speaker similarity unavailable: the 'resemblyzer' package (which "
            "ships the encoder weights) is not installed; "
            "`pip install --no-deps resemblyzer==0.1.4` is enough"
        )
    path = pkg / "pretrained.pt"
    if not path.is_file():
        raise MetricError(f"speaker similarity unavailable: weights missing ({path})")
    return path


@lru_cache(maxsize=1)
def _speaker_encoder():
    import torch
    import torchaudio
    from torch import nn

    path = _speaker_weights_path()

    class _GE2E(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(_SPK_N_MELS, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)

        def forward(self, mels):  # [B, T, n_mels] -> [B, 256], L2-normalised
            _, (hidden, _) = self.lstm(mels)
            emb = torch.relu(self.linear(hidden[-1]))
            return emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)

    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    model = _GE2E()
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
    model.eval()
    # librosa.feature.melspectrogram defaults: Hann window, centred with zero padding, power 2,
    # Slaney mel scale with Slaney area normalisation.
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=_SPK_SR,
        n_fft=_SPK_N_FFT,
        hop_length=_SPK_HOP,
        n_mels=_SPK_N_MELS,
        power=2.0,
        center=True,
        pad_mode="constant",
        norm="slaney",
        mel_scale="slaney",
    )
    return model, mel


def speaker_similarity_available() -> bool:
    """True when :func:`speaker_similarity` can run (the resemblyzer wheel is installed)."""
    try:
        _speaker_weights_path()
    except MetricError:
        return False
    return True


def _speaker_embedding(x: np.ndarray) -> np.ndarray:
    import torch

    model, mel = _speaker_encoder()
    # resemblyzer.preprocess_wav: raise (never lower) the level to -30 dBFS. Its webrtcvad-based
    # trimming of long silences is not applied (no extra dependency; ref/deg stay aligned).
    rms = float(np.sqrt(np.mean((x * 32767.0) ** 2)))
    if rms <= 0.0:
        raise MetricError("speaker similarity undefined: signal is all zeros (silence)")
    change_db = _SPK_TARGET_DBFS - 20.0 * math.log10(rms / 32767.0)
    if change_db > 0:
        x = x * 10.0 ** (change_db / 20.0)
    # resemblyzer.VoiceEncoder.compute_partial_slices / embed_utterance
    n_frames = int(np.ceil((x.size + 1) / _SPK_HOP))
    frame_step = int(np.round((_SPK_SR / _SPK_RATE) / _SPK_HOP))
    steps = max(1, n_frames - _SPK_PARTIAL_FRAMES + frame_step + 1)
    starts = list(range(0, steps, frame_step))
    last = starts[-1] * _SPK_HOP
    coverage = (x.size - last) / (_SPK_PARTIAL_FRAMES * _SPK_HOP)
    if coverage < _SPK_MIN_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    needed = (starts[-1] + _SPK_PARTIAL_FRAMES) * _SPK_HOP
    if needed >= x.size:
        x = np.pad(x, (0, needed - x.size))
    with torch.no_grad():
        spec = mel(torch.from_numpy(x.astype(np.float32))).T  # [T, n_mels]
        mels = torch.stack([spec[s : s + _SPK_PARTIAL_FRAMES] for s in starts])
        partial = model(mels).numpy().astype(np.float64)
    emb = partial.mean(axis=0)
    return emb / np.linalg.norm(emb)


def speaker_similarity(ref: Any, deg: Any, sr: int) -> float:
    """Cosine similarity of speaker embeddings of ``ref`` and ``deg`` (1 = same voice).

    Uses the GE2E voice encoder (3-layer LSTM, 256-d embeddings) whose weights ship inside the
    ``resemblyzer`` PyPI wheel (``resemblyzer/pretrained.pt``, loaded offline; the package is
    located but not imported, so its librosa/webrtcvad dependencies are not needed). The
    embedding follows ``VoiceEncoder.embed_utterance`` (1.6 s partials at 1.3 per second,
    averaged and L2-normalised) on a 40-band mel power spectrogram computed with torchaudio in
    librosa's convention, after resemblyzer's volume normalisation; resemblyzer's VAD-based
    silence trimming is skipped. Other sample rates are resampled to 16 kHz. GE2E embeddings are
    non-negative, so values lie in [0, 1]. This is *not* the WavLM/ECAPA similarity some papers
    report: compare numbers only with the same encoder.
    """
    r, d = _pair(ref, deg)
    sr = _check_sr(sr)
    r, d = _resample(r, sr, _SPK_SR), _resample(d, sr, _SPK_SR)
    return float(np.dot(_speaker_embedding(r), _speaker_embedding(d)))
