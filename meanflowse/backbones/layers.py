"""Building blocks shared by the backbones: FIR resampling, time embedding, NCSN++ blocks.

Everything here is plain PyTorch (no compiled extensions) and uses only ops with forward-mode
AD formulas, so ``torch.func.jvp`` goes through every backbone. In particular attention is an
explicit ``softmax(q^T k)`` product: ``F.scaled_dot_product_attention`` has no forward-AD rule
on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------------------------
# FIR up/down-sampling (upfirdn2d semantics of StyleGAN2 / score_sde, factor 2)
# ----------------------------------------------------------------------------------------------


def fir_kernel_2d(kernel: Sequence[float]) -> Tensor:
    """Separable 1-D taps -> normalised 2-D kernel (sums to 1)."""
    k = torch.as_tensor(kernel, dtype=torch.float64)
    k2 = torch.outer(k, k)
    return (k2 / k2.sum()).float()


def fir_downsample(x: Tensor, kernel: Tensor) -> Tensor:
    """``upfirdn2d(x, k, down=2)`` as one depthwise strided convolution.

    score_sde pads ``((K-2+1)//2, (K-2)//2)`` and then keeps every second output of a true
    convolution; that is a correlation with the flipped kernel at stride 2.
    """
    c, kk = x.shape[1], kernel.shape[-1]
    p = kk - 2
    w = kernel.flip(0, 1).to(x.dtype).expand(c, 1, kk, kk)
    if p % 2:  # asymmetric padding (odd excess): pad explicitly
        x = F.pad(x, ((p + 1) // 2, p // 2, (p + 1) // 2, p // 2))
        return F.conv2d(x, w, stride=2, groups=c)
    return F.conv2d(x, w, stride=2, padding=p // 2, groups=c)


def fir_upsample(x: Tensor, kernel: Tensor) -> Tensor:
    """``upfirdn2d(x, 4 k, up=2)`` as one depthwise transposed convolution (gain 4 keeps DC).

    Zero-stuffing followed by a convolution is exactly a stride-2 transposed convolution with
    the unflipped kernel; the upfirdn pad ``((K-2+1)//2 + 1, (K-2)//2)`` becomes a crop.
    """
    c, kk = x.shape[1], kernel.shape[-1]
    crop = kk - 1 - ((kk - 2 + 1) // 2 + 1)  # first kept index of the full transposed output
    w = (kernel * 4).to(x.dtype).expand(c, 1, kk, kk)
    extra = (2 * (x.shape[-2] - 1) + kk) - 2 * x.shape[-2] - crop  # trailing samples to drop
    if crop == extra:
        return F.conv_transpose2d(x, w, stride=2, padding=crop, groups=c)
    y = F.conv_transpose2d(x, w, stride=2, groups=c)
    return y[..., crop : crop + 2 * x.shape[-2], crop : crop + 2 * x.shape[-1]]


def upfirdn2d_reference(
    x: Tensor, kernel: Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> Tensor:
    """Literal upfirdn2d (zero-stuff, pad, true 2-D convolution, decimate), one channel at a time.

    Slow on purpose: it is the executable definition the fast paths are tested against and the
    stand-in for the reference code's native op in ``benchmarks/bench_backbones.py``.
    """
    b, c, h, w = x.shape
    x = x.reshape(b * c, 1, h, w)
    if up > 1:
        z = x.new_zeros(b * c, 1, h * up, w * up)
        z[..., ::up, ::up] = x
        x = z
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    x = F.conv2d(x, kernel.flip(0, 1)[None, None].to(x.dtype))[..., ::down, ::down]
    return x.reshape(b, c, x.shape[-2], x.shape[-1])


def fir_downsample_reference(x: Tensor, kernel: Tensor) -> Tensor:
    """score_sde ``downsample_2d(x, k, factor=2)`` via :func:`upfirdn2d_reference`."""
    p = kernel.shape[-1] - 2
    return upfirdn2d_reference(x, kernel, down=2, pad=((p + 1) // 2, p // 2))


def fir_upsample_reference(x: Tensor, kernel: Tensor) -> Tensor:
    """score_sde ``upsample_2d(x, k, factor=2)`` via :func:`upfirdn2d_reference`."""
    p = kernel.shape[-1] - 2
    return upfirdn2d_reference(x, kernel * 4, up=2, pad=((p + 1) // 2 + 1, p // 2))


# ----------------------------------------------------------------------------------------------
# Initialisation and small layers (as in score_sde / SGMSE+ NCSN++)
# ----------------------------------------------------------------------------------------------


def variance_scaling_(w: Tensor, scale: float = 1.0) -> Tensor:
    """JAX ``variance_scaling(scale, 'fan_avg', 'uniform')``; scale 0 means 1e-10 (near-zero)."""
    scale = 1e-10 if scale == 0 else scale
    receptive = w[0, 0].numel() if w.dim() > 2 else 1
    fan_avg = (w.shape[0] + w.shape[1]) * receptive / 2
    bound = math.sqrt(3 * scale / fan_avg)
    with torch.no_grad():
        return w.uniform_(-bound, bound)


def conv2d(in_ch: int, out_ch: int, kernel: int, init_scale: float = 1.0) -> nn.Conv2d:
    """'Same'-padded convolution with the NCSN++ initialisation (zero bias)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)
    variance_scaling_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def linear(in_dim: int, out_dim: int, init_scale: float = 1.0) -> nn.Linear:
    lin = nn.Linear(in_dim, out_dim)
    variance_scaling_(lin.weight, init_scale)
    nn.init.zeros_(lin.bias)
    return lin


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that also takes channels_last input inside ``torch.func.jvp``.

    PyTorch 2.11's forward-AD rule for ``group_norm`` views its input as NCHW and fails on NHWC
    strides ("view size is not compatible"), so under a functorch transform a channels_last
    input is made NCHW first. Outside one (plain forward, backward, inference) nothing changes.
    Same parameters and state-dict keys as ``nn.GroupNorm``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_contiguous() and torch._C._functorch.is_functorch_wrapped_tensor(x):
            x = x.contiguous()
        return super().forward(x)


def group_norm(ch: int) -> nn.GroupNorm:
    return GroupNorm(num_groups=max(1, min(ch // 4, 32)), num_channels=ch, eps=1e-6)


class GaussianFourierProjection(nn.Module):
    """Fixed random Fourier features ``[sin(2 pi W x), cos(2 pi W x)]``.

    ``W`` is a frozen ``nn.Parameter`` (not a buffer) so checkpoints and parameter counts
    match SGMSE+/MeanFlowSE.
    """

    def __init__(self, num_features: int, scale: float) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(num_features) * scale, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        proj = x[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class TimeEmbedding(nn.Module):
    """Embedding of the two time conditions ``t`` and ``d = t - r`` (method.md section 3).

    Each gets its own Fourier projection (``t`` of ``log(max(t, 1e-4))``, ``d`` of
    ``log1p(d)``) and its own ``Linear -> SiLU -> Linear`` MLP; the results are added. ``d = 0``
    goes through the same path as any other ``d`` (``log1p(0) = 0`` is an ordinary input).
    """

    def __init__(self, fourier_features: int, dim: int, fourier_scale: float) -> None:
        super().__init__()
        self.t_fourier = GaussianFourierProjection(fourier_features, fourier_scale)
        self.t_mlp = nn.Sequential(linear(2 * fourier_features, dim), nn.SiLU(), linear(dim, dim))
        self.d_fourier = GaussianFourierProjection(fourier_features, fourier_scale)
        self.d_mlp = nn.Sequential(linear(2 * fourier_features, dim), nn.SiLU(), linear(dim, dim))

    def forward(self, t: Tensor, d: Tensor) -> Tensor:
        emb_t = self.t_mlp(self.t_fourier(torch.log(t.clamp_min(1e-4))))
        emb_d = self.d_mlp(self.d_fourier(torch.log1p(d)))
        return emb_t + emb_d


# ----------------------------------------------------------------------------------------------
# NCSN++ blocks
# ----------------------------------------------------------------------------------------------


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block of NCSN++ with optional FIR up- or down-sampling.

    ``forward`` takes ``temb_act = silu(temb)``: every block of the original applies the same
    SiLU to the same embedding, so the network computes it once.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None,
        temb_dim: int,
        *,
        up: bool = False,
        down: bool = False,
        dropout: float = 0.0,
        fir_kernel: Tensor | None = None,
        skip_rescale: bool = True,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        self.up, self.down, self.skip_rescale = up, down, skip_rescale
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv2d(in_ch, out_ch, 3)
        self.Dense_0 = linear(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.Conv_1 = conv2d(out_ch, out_ch, 3, init_scale=init_scale)
        self.Conv_2 = conv2d(in_ch, out_ch, 1) if (in_ch != out_ch or up or down) else None
        if up or down:
            self.register_buffer("fir", fir_kernel.clone(), persistent=False)

    def forward(self, x: Tensor, temb_act: Tensor) -> Tensor:
        h = F.silu(self.GroupNorm_0(x))
        if self.up:
            h, x = fir_upsample(h, self.fir), fir_upsample(x, self.fir)
        elif self.down:
            h, x = fir_downsample(h, self.fir), fir_downsample(x, self.fir)
        h = self.Conv_0(h) + self.Dense_0(temb_act)[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.Conv_2 is not None:
            x = self.Conv_2(x)
        out = x + h
        return out * (1 / math.sqrt(2.0)) if self.skip_rescale else out


class AttnBlock(nn.Module):
    """Single-head self-attention over all F*T positions (DDPM ``AttnBlockpp``).

    q, k, v are one fused 1x1 convolution (same parameter count as the three ``NIN`` layers of
    the original, one matmul instead of three).
    """

    def __init__(self, channels: int, skip_rescale: bool = True, init_scale: float = 0.0) -> None:
        super().__init__()
        self.skip_rescale = skip_rescale
        self.GroupNorm_0 = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        for i in range(3):  # each NIN of the original is initialised on its own fan
            variance_scaling_(self.qkv.weight.data[i * channels : (i + 1) * channels], 0.1)
        nn.init.zeros_(self.qkv.bias)
        self.proj = conv2d(channels, channels, 1, init_scale=init_scale)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        q, k, v = self.qkv(self.GroupNorm_0(x)).reshape(b, 3, c, hgt * wid).unbind(1)
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * c**-0.5, dim=-1)  # [B, N, N]
        h = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hgt, wid)
        out = x + self.proj(h)
        return out * (1 / math.sqrt(2.0)) if self.skip_rescale else out
