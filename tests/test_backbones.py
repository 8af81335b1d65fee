"""Backbone contract: shapes, parameter counts, FIR semantics, forward-mode AD, d = 0, configs."""

import io
from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from meanflowse.backbones import DCUNet, NCSNpp
from meanflowse.backbones.layers import (
    fir_downsample,
    fir_downsample_reference,
    fir_kernel_2d,
    fir_upsample,
    fir_upsample_reference,
)

# Small enough for float64 finite differences; attention, FIR up/down and GroupNorm all present.
TINY_NCSNPP = dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), image_size=32)
TINY_DCUNET = dict(
    channels=(4, 8, 8), strides=((1, 1), (2, 1), (2, 2)), dilations=((1, 1), (2, 1), (4, 1)), embed_dim=16
)
F_BINS, FRAMES = 16, 8
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "backbone"


def make(kind, dtype=torch.float32, **over):
    torch.manual_seed(0)
    net = NCSNpp(**{**TINY_NCSNPP, **over}) if kind == "ncsnpp" else DCUNet(**TINY_DCUNET)
    return net.to(dtype)


def inputs(batch=2, dtype=torch.float32, f=F_BINS, n=FRAMES, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, f, n, generator=g, dtype=dtype)
    y = torch.randn(batch, 2, f, n, generator=g, dtype=dtype)
    t = torch.rand(batch, generator=g, dtype=dtype) * 0.9 + 0.05
    d = torch.rand(batch, generator=g, dtype=dtype) * t
    return x, y, t, d


BACKBONES = ["ncsnpp", "dcunet"]


def n_params(net):
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------- FIR resampling


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 1), (1, 2, 3, 4), (1, 4, 6, 4, 1)])
def test_fir_matches_upfirdn2d_reference(taps):
    k = fir_kernel_2d(taps).double()
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    torch.testing.assert_close(fir_downsample(x, k), fir_downsample_reference(x, k))
    torch.testing.assert_close(fir_upsample(x, k), fir_upsample_reference(x, k))


def test_fir_reference_is_upfirdn2d_by_hand():
    # [1,3,3,1] down: out[i] = (x[2i-1] + 3x[2i] + 3x[2i+1] + x[2i+2]) / 8 per axis (zero pad).
    x = torch.arange(8.0, dtype=torch.float64)
    # Eight identical rows, so output row 1 (input rows 1..4) sees no vertical zero padding.
    x2 = x[None, None, None, :] * torch.ones(1, 1, 8, 1, dtype=torch.float64)
    out = fir_downsample(x2, fir_kernel_2d((1, 3, 3, 1)).double())[0, 0, 1]
    xp = torch.nn.functional.pad(x, (1, 1))
    expect = (xp[0:-3:2] + 3 * xp[1:-2:2] + 3 * xp[2:-1:2] + xp[3::2]) / 8
    torch.testing.assert_close(out, expect)
    # Up keeps a constant's interior value (DC gain 1).
    up = fir_upsample(torch.ones(1, 1, 6, 6), fir_kernel_2d((1, 3, 3, 1)))
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1))


# ---------------------------------------------------------------- parameter counts


def test_full_ncsnpp_parameter_count():
    net = NCSNpp()
    total = n_params(net)
    assert abs(total - 65_985_190) <= 0.001 * 65_985_190, total
    d_branch = n_params(net.time_embed.d_fourier) + n_params(net.time_embed.d_mlp)
    assert d_branch == 128 + 256 * 512 + 512 + 512 * 512 + 512  # 394,368
    assert total - d_branch == 65_590_822  # SGMSE+'s NCSN++
    assert net.frame_multiple == 64
    assert not net.time_embed.t_fourier.W.requires_grad


def test_dcunet_parameter_count():
    total = n_params(DCUNet())
    print(f"DCUNet parameters: {total:,}")
    assert 3_000_000 <= total <= 4_200_000


# ---------------------------------------------------------------- the forward contract


@pytest.mark.parametrize("kind", BACKBONES)
@pytest.mark.parametrize("batch", [1, 3])
def test_shape_and_dtype(kind, batch):
    net = make(kind)
    out = net(*inputs(batch))
    assert out.shape == (batch, 2, F_BINS, FRAMES) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", BACKBONES)
def test_bad_frame_count_is_a_clear_error(kind):
    net = make(kind)
    x, y, t, d = inputs(n=FRAMES + 1)
    with pytest.raises(ValueError, match=rf"divisible by {net.frame_multiple}.*pad"):
        net(x, y, t, d)


@pytest.mark.parametrize("kind", BACKBONES)
def test_d_zero_is_an_ordinary_input(kind):
    net = make(kind, torch.float64)
    x, y, t, _ = inputs(dtype=torch.float64)
    out0 = net(x, y, t, torch.zeros_like(t))
    out1 = net(x, y, t, torch.full_like(t, 1e-6))
    change = (out1 - out0).abs().max().item()
    assert 0 < change < 1e-3  # continuous through d = 0, and d = 0 is not a special case
    net.zero_grad()
    net(x, y, t, torch.zeros_like(t)).square().sum().backward()
    assert net.time_embed.d_mlp[0].weight.grad.abs().sum() > 0
    assert net.time_embed.d_mlp[2].weight.grad.abs().sum() > 0


def _nonzero_output_layers(net):
    """Zero-initialised output convs make the net nearly constant; randomise for AD checks."""
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad and p.abs().max() < 1e-6:
                p.normal_(0, 0.05)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kind", BACKBONES)
def test_jvp_matches_finite_difference(kind, channels_last):
    net = make(kind, torch.float64)
    _nonzero_output_layers(net)
    x, y, t, d = inputs(dtype=torch.float64)
    if channels_last:  # NHWC weights and inputs: the layout the CPU enhancer uses
        net = net.to(memory_format=torch.channels_last)
        x, y = (a.contiguous(memory_format=torch.channels_last) for a in (x, y))
    g = torch.Generator().manual_seed(2)
    tx, ty = (
        torch.randn(x.shape, generator=g, dtype=x.dtype),
        torch.randn(y.shape, generator=g, dtype=y.dtype),
    )
    tt, td = torch.ones_like(t), torch.full_like(d, 0.5)
    _, jvp = torch.func.jvp(net, (x, y, t, d), (tx, ty, tt, td))
    # Small step: DCUNet's leaky ReLUs have kinks, and a larger central difference straddles
    # some of them (1e-5 gives a 2% error there while AD agrees with reverse mode to 1e-15).
    eps = 1e-7
    fd = (
        net(x + eps * tx, y + eps * ty, t + eps * tt, d + eps * td)
        - net(x - eps * tx, y - eps * ty, t - eps * tt, d - eps * td)
    ) / (2 * eps)
    rel = ((jvp - fd).norm() / fd.norm()).item()
    assert rel < 1e-4, rel


@pytest.mark.parametrize("kind", BACKBONES)
def test_state_dict_roundtrip_is_bit_identical(kind):
    net = make(kind)
    args = inputs()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(123)  # different init, then overwritten
    other = NCSNpp(**TINY_NCSNPP) if kind == "ncsnpp" else DCUNet(**TINY_DCUNET)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(net(*args), other(*args))


@pytest.mark.parametrize("kind", BACKBONES)
def test_bf16_autocast_and_channels_last(kind):
    net = make(kind)
    x, y, t, d = inputs()
    ref = net(x, y, t, d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, y, t, d)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    net_cl = net.to(memory_format=torch.channels_last)
    cl = lambda a: a.contiguous(memory_format=torch.channels_last)
    out_cl = net_cl(cl(x), cl(y), t, d)
    torch.testing.assert_close(out_cl, ref, atol=1e-4, rtol=1e-4)
    out_cl.sum().backward()


def test_ncsnpp_variants_build_and_run():
    # progressive 'none' and combine 'cat' are constructor options of the original too.
    for over in (
        dict(progressive="none", progressive_input="none"),
        dict(progressive_combine="cat", bottleneck_attn=False),
    ):
        net = make("ncsnpp", **over)
        assert net(*inputs()).shape == (2, 2, F_BINS, FRAMES)
    with pytest.raises(ValueError):
        NCSNpp(**TINY_NCSNPP, progressive="residual")


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_backbone_yaml_instantiates(path):
    cfg = OmegaConf.load(path)
    net = hydra.utils.instantiate(cfg)
    assert isinstance(net, torch.nn.Module) and isinstance(net.frame_multiple, int)
    if path.stem != "ncsnpp":  # the full model is only built, not run, here
        x, y, t, d = inputs(batch=1, f=256, n=net.frame_multiple)
        with torch.no_grad():
            assert net(x, y, t, d).shape == x.shape
    cfg.not_a_key = 1
    with pytest.raises(Exception, match="not_a_key"):
        hydra.utils.instantiate(cfg)


def test_backbone_configs_exist():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert {"ncsnpp", "ncsnpp_small", "ncsnpp_tiny", "dcunet"} <= names


@pytest.mark.slow
def test_torch_compile_tiny_matches_eager():
    net = hydra.utils.instantiate(OmegaConf.load(CONFIGS / "ncsnpp_tiny.yaml"))
    args = inputs(f=256, n=16)
    compiled = torch.compile(net)
    torch.testing.assert_close(compiled(*args), net(*args), atol=1e-4, rtol=1e-4)
