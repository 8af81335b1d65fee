"""A complex U-Net in the style of SGMSE+'s DilDCUNet-v2, conditioned on ``t`` and ``d``.

Complex feature maps are carried as real tensors ``[B, 2C, F, T]`` whose first ``C`` channels
are the real parts and last ``C`` the imaginary parts. A complex convolution is then a single
real convolution with the block weight ``[[Wr, -Wi], [Wi, Wr]]`` (one conv call instead of
four), and per-channel Re/Im-separate layers (norms, activations) act on the stacked tensor.

Differences from SGMSE+'s DCUNet, and why:

* GroupNorm on Re and Im separately instead of BatchNorm: BatchNorm's running-statistics update
  is an in-place write that ``torch.func.jvp`` refuses, and batch statistics would couple the
  samples of a MeanFlow batch. Same parameter count.
* "Same" padding (asymmetric where the dilated kernel is even) and mirrored cropping in the
  decoder, so stride-2 layers halve F and T exactly and ``frame_multiple`` is a clean 8.
* Time conditioning uses the shared two-branch :class:`.layers.TimeEmbedding` (real-valued,
  ``t`` and ``d`` added); each block maps it to a complex per-channel bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import GroupNorm, TimeEmbedding
from .ncsnpp import check_frames


def _same_pad(kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding so that the output length is exactly ``length / stride``."""
    total = dilation * (kernel - 1) + 1 - stride
    return total // 2, total - total // 2


def ccat(a: Tensor, b: Tensor) -> Tensor:
    """Concatenate two stacked-complex tensors along the complex channel axis."""
    ar, ai = a.chunk(2, dim=1)
    br, bi = b.chunk(2, dim=1)
    return torch.cat([ar, br, ai, bi], dim=1)


class ComplexConv(nn.Module):
    """Complex (transposed) 2-D convolution with "same"/"exact double" output size.

    The transposed variant is the adjoint of the forward one: transposed convolution without
    padding, then the crop that mirrors the forward padding.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        dilation: Sequence[int],
        *,
        transposed: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.transposed = transposed
        self.stride, self.dilation = tuple(stride), tuple(dilation)
        shape = (in_ch, out_ch, *kernel) if transposed else (out_ch, in_ch, *kernel)
        self.weight_re = nn.Parameter(torch.empty(shape))
        self.weight_im = nn.Parameter(torch.empty(shape))
        for w in (self.weight_re, self.weight_im):  # PyTorch's default conv initialisation
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(2 * out_ch)) if bias else None
        pf = _same_pad(kernel[0], self.stride[0], self.dilation[0])
        pt = _same_pad(kernel[1], self.stride[1], self.dilation[1])
        self.pad = (pt[0], pt[1], pf[0], pf[1])  # F.pad order: last axis first

    def forward(self, x: Tensor) -> Tensor:
        wr, wi = self.weight_re, self.weight_im
        if not self.transposed:
            w = torch.cat([torch.cat([wr, -wi], 1), torch.cat([wi, wr], 1)], 0)
            return F.conv2d(F.pad(x, self.pad), w, self.bias, self.stride, 0, self.dilation)
        w = torch.cat([torch.cat([wr, wi], 1), torch.cat([-wi, wr], 1)], 0)
        y = F.conv_transpose2d(x, w, self.bias, self.stride, dilation=self.dilation)
        f, t = x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[1]
        return y[..., self.pad[2] : self.pad[2] + f, self.pad[0] : self.pad[0] + t]


class DCUNetBlock(nn.Module):
    """Complex conv (or transposed conv) -> + time bias -> Re/Im GroupNorm -> Re/Im activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        dilation: Sequence[int],
        temb_dim: int,
        *,
        transposed: bool,
        negative_slope: float,
    ) -> None:
        super().__init__()
        self.conv = ComplexConv(in_ch, out_ch, kernel, stride, dilation, transposed=transposed)
        self.temb = nn.Linear(temb_dim, 2 * out_ch)  # complex FeatureMapDense: Re and Im rows
        # Groups never straddle the Re/Im halves, so this is one GroupNorm per part.
        self.norm = GroupNorm(2 * max(1, min(out_ch // 4, 32)), 2 * out_ch)
        self.negative_slope = negative_slope

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv(x) + F.silu(self.temb(temb))[:, :, None, None]
        return F.leaky_relu(self.norm(h), self.negative_slope)


class DCUNet(nn.Module):
    """Dilated complex U-Net (DilDCUNet-v2 layout) conditioned on ``t`` and ``d = t - r``.

    Input: ``x_t, y`` real ``[B, 2, F, T]`` (Re, Im), seen as two complex input channels;
    ``t, d`` ``[B]``. Output: real ``[B, 2, F, T]``, one complex channel (Re, Im). ``F`` and
    ``T`` must be multiples of ``frame_multiple`` (the product of the strides, 8 by default).

    Encoder layer ``i`` maps ``channels[i-1] -> channels[i]`` (the first from 2 complex inputs)
    with ``kernel_size``, ``strides[i]`` and ``dilations[i]`` (each ``[freq, time]``); the
    decoder mirrors it with skip connections, and a final transposed conv gives 1 channel.
    """

    def __init__(
        self,
        *,
        channels: Sequence[int] = (32, 32, 32, 64, 128, 256),
        strides: Sequence[Sequence[int]] = ((1, 1), (1, 1), (1, 1), (2, 1), (2, 2), (2, 2)),
        dilations: Sequence[Sequence[int]] = ((1, 1), (1, 1), (1, 1), (2, 1), (4, 1), (8, 1)),
        kernel_size: Sequence[int] = (4, 4),
        embed_dim: int = 128,
        fourier_scale: float = 16.0,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        strides = [tuple(int(s) for s in st) for st in strides]
        dilations = [tuple(int(s) for s in dl) for dl in dilations]
        kernel_size = tuple(int(k) for k in kernel_size)
        if not len(channels) == len(strides) == len(dilations):
            raise ValueError("channels, strides and dilations must have the same length")
        self.stride_product = (math.prod(s[0] for s in strides), math.prod(s[1] for s in strides))
        self.frame_multiple = math.lcm(*self.stride_product)
        # Fourier features of size embed_dim // 2 give an embed_dim-wide (sin, cos) vector, as
        # SGMSE+'s real-valued GaussianFourierProjection(embed_dim).
        self.time_embed = TimeEmbedding(embed_dim // 2, embed_dim, fourier_scale)

        block = dict(kernel=kernel_size, temb_dim=embed_dim, negative_slope=negative_slope)
        ins = [2] + channels[:-1]
        self.encoders = nn.ModuleList(
            DCUNetBlock(i, o, stride=s, dilation=dl, transposed=False, **block)
            for i, o, s, dl in zip(ins, channels, strides, dilations)
        )
        self.decoders = nn.ModuleList()
        for k in reversed(range(1, len(channels))):
            skip = channels[k] if k < len(channels) - 1 else 0
            self.decoders.append(
                DCUNetBlock(
                    channels[k] + skip,
                    ins[k],
                    stride=strides[k],
                    dilation=dilations[k],
                    transposed=True,
                    **block,
                )
            )
        self.output_layer = ComplexConv(
            2 * channels[0], 1, kernel_size, strides[0], dilations[0], transposed=True, bias=True
        )

    def forward(self, x_t: Tensor, y: Tensor, t: Tensor, d: Tensor) -> Tensor:
        f, n = x_t.shape[-2], x_t.shape[-1]
        if f % self.stride_product[0] or n % self.stride_product[1]:
            check_frames(x_t, self.frame_multiple, type(self).__name__)
        temb = self.time_embed(t, d)
        # Complex channels (x_t, y) in the stacked layout: [Re x_t, Re y, Im x_t, Im y].
        h = torch.cat([x_t[:, :1], y[:, :1], x_t[:, 1:], y[:, 1:]], dim=1)
        skips = []
        for enc in self.encoders:
            h = enc(h, temb)
            skips.append(h)
        skips.pop()  # the bottleneck output is h itself
        for dec in self.decoders:
            h = ccat(dec(h, temb), skips.pop())
        return self.output_layer(h)  # [Re u, Im u]
