import pytest
import torch

from meanflowse.method.stft import (
    SpecConfig,
    compress,
    decompress,
    pad_frames,
    spec_to_wav,
    stft,
    wav_to_spec,
)

CONFIGS = [SpecConfig(), SpecConfig(n_fft=1534, hop_length=384, spec_factor=0.065, spec_abs_exponent=0.667)]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("length", [16000, 32640, 12345])
def test_stft_then_inverse_returns_the_waveform(cfg, length):
    wav = torch.randn(2, length).clamp(-3, 3) / 3
    back = spec_to_wav(wav_to_spec(wav, cfg), cfg, length)
    assert back.shape == wav.shape
    assert (back - wav).abs().max() <= 1e-5


def test_shapes_match_the_reference_front_end():
    cfg = SpecConfig()
    spec = wav_to_spec(torch.randn(3, cfg.samples_for_frames(256)), cfg)
    assert spec.shape == (3, 2, 256, 256)  # 256 bins, 256 frames from 32,640 samples


def test_compression_is_inverted_exactly():
    cfg = SpecConfig()
    z = torch.randn(4, 256, 50, dtype=torch.complex64)
    c = compress(z, cfg)
    assert torch.allclose(c.abs(), 0.15 * z.abs() ** 0.5, atol=1e-6)
    assert torch.allclose(decompress(c, cfg), z, atol=1e-5)
    assert stft(torch.zeros(1, 1000), cfg).abs().max() == 0


@pytest.mark.parametrize("cfg", CONFIGS)
def test_compression_equals_the_polar_form(cfg):
    """``z |z|**(e-1)`` is the reference's ``|z|**e exp(j angle z)``, zeros included."""
    z = torch.randn(3, 256, 40, dtype=torch.complex128)
    z[0, :5] = 0  # silent bins: the polar form gives 0 there, so must the fast form
    e = cfg.spec_abs_exponent
    polar = cfg.spec_factor * z.abs() ** e * torch.exp(1j * z.angle())
    fast = compress(z, cfg)
    assert torch.allclose(fast, polar, rtol=1e-12, atol=1e-14)
    assert torch.all(fast[0, :5] == 0) and torch.isfinite(torch.view_as_real(fast)).all()
    back_polar = (polar / cfg.spec_factor).abs() ** (1 / e) * torch.exp(1j * polar.angle())
    assert torch.allclose(decompress(polar, cfg), back_polar, rtol=1e-12, atol=1e-14)


def test_pad_frames_rounds_up_to_the_multiple():
    x = torch.ones(1, 2, 256, 70)
    assert pad_frames(x, 64).shape[-1] == 128
    assert pad_frames(x[..., :64], 64).shape[-1] == 64
