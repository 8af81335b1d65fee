"""Complex-STFT front-end (method.md section 1).

Complex spectrograms are carried as real tensors ``[..., 2, F, T]`` (channel 0 = real part,
channel 1 = imaginary part) everywhere past this module: forward-mode AD, autocast,
``torch.compile`` and channels_last all behave better on real tensors than on complex ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SpecConfig:
    """STFT and amplitude-compression settings; defaults are the 16 kHz reference ones."""

    n_fft: int = 510
    hop_length: int = 128
    spec_factor: float = 0.15
    spec_abs_exponent: float = 0.5

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1

    def samples_for_frames(self, num_frames: int) -> int:
        """Waveform length that gives exactly ``num_frames`` frames with ``center=True``."""
        return (num_frames - 1) * self.hop_length


def _window(cfg: SpecConfig, like: Tensor) -> Tensor:
    return torch.hann_window(cfg.n_fft, periodic=True, device=like.device, dtype=like.dtype)


def stft(wav: Tensor, cfg: SpecConfig) -> Tensor:
    """``wav [..., L]`` -> complex ``[..., F, T]``."""
    lead = wav.shape[:-1]
    spec = torch.stft(
        wav.reshape(-1, wav.shape[-1]),
        cfg.n_fft,
        cfg.hop_length,
        window=_window(cfg, wav),
        center=True,
        return_complex=True,
    )
    return spec.reshape(*lead, *spec.shape[-2:])


def istft(spec: Tensor, cfg: SpecConfig, length: int) -> Tensor:
    """Complex ``[..., F, T]`` -> ``wav [..., length]``; the exact inverse of :func:`stft`."""
    lead = spec.shape[:-2]
    real_dtype = spec.real.dtype
    wav = torch.istft(
        spec.reshape(-1, *spec.shape[-2:]),
        cfg.n_fft,
        cfg.hop_length,
        window=_window(cfg, spec.real),
        center=True,
        length=length,
    )
    return wav.reshape(*lead, length).to(real_dtype)


def _power_abs(spec: Tensor, exponent: float) -> Tensor:
    """``|z|**e * exp(j angle z)`` computed as ``z * |z|**(e - 1)``, which is 0 at ``z = 0``.

    The same numbers as the polar form without ``angle`` and a complex ``exp``: those took
    about half of the enhancement pipeline's own time (issue 6). The magnitude is floored at the
    smallest normal float so the negative power stays finite where ``z = 0``; the product is
    then exactly 0 there.
    """
    if exponent == 1.0:
        return spec
    mag = spec.abs()
    return spec * mag.clamp_min(torch.finfo(mag.dtype).tiny).pow(exponent - 1.0)


def compress(spec: Tensor, cfg: SpecConfig) -> Tensor:
    """``factor * |z|**e * exp(j angle z)``: flattens the dynamic range the network sees."""
    return _power_abs(spec, cfg.spec_abs_exponent) * cfg.spec_factor


def decompress(spec: Tensor, cfg: SpecConfig) -> Tensor:
    """Exact inverse of :func:`compress`."""
    return _power_abs(spec / cfg.spec_factor, 1.0 / cfg.spec_abs_exponent)


def to_channels(spec: Tensor) -> Tensor:
    """Complex ``[..., F, T]`` -> real ``[..., 2, F, T]``."""
    return torch.stack((spec.real, spec.imag), dim=-3)


def from_channels(x: Tensor) -> Tensor:
    """Real ``[..., 2, F, T]`` -> complex ``[..., F, T]``."""
    return torch.complex(x.select(-3, 0).float(), x.select(-3, 1).float())


def wav_to_spec(wav: Tensor, cfg: SpecConfig) -> Tensor:
    """Waveform ``[..., L]`` -> compressed real spectrogram ``[..., 2, F, T]``."""
    return to_channels(compress(stft(wav, cfg), cfg))


def spec_to_wav(x: Tensor, cfg: SpecConfig, length: int) -> Tensor:
    """Compressed real spectrogram ``[..., 2, F, T]`` -> waveform ``[..., length]``."""
    return istft(decompress(from_channels(x), cfg), cfg, length)


def pad_frames(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad the last (frame) axis up to a multiple of ``multiple`` (the U-Net's stride)."""
    extra = (-x.shape[-1]) % multiple
    return torch.nn.functional.pad(x, (0, extra)) if extra else x
