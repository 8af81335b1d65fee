"""NCSN++ (Song et al. 2021) as configured in SGMSE+, with MeanFlowSE's second time input.

The layer structure, initialisation and parameter count follow SGMSE+'s ``ncsnpp.py``
(method.md section 6). Differences that do not change the function or parameter count:

* modules are held in per-level lists instead of one flat ``all_modules`` list walked by index;
* attention placement is decided at construction from ``image_size`` (as the original builds
  its modules), never from the runtime tensor shape, so the graph is static for
  ``torch.compile``;
* FIR resampling is pure PyTorch (depthwise convolutions, see :mod:`.layers`), q/k/v of each
  attention block are one fused 1x1 convolution, and ``silu(temb)`` is computed once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import (
    AttnBlock,
    ResnetBlockBigGAN,
    TimeEmbedding,
    conv2d,
    fir_downsample,
    fir_kernel_2d,
    fir_upsample,
    group_norm,
)

IN_CHANNELS = 4  # [Re x_t, Im x_t, Re y, Im y]
OUT_CHANNELS = 2  # [Re u, Im u]


def check_frames(x: Tensor, multiple: int, name: str) -> None:
    """Raise a ValueError that tells the caller to pad if F or T is not a multiple."""
    f, t = x.shape[-2], x.shape[-1]
    if f % multiple or t % multiple:
        raise ValueError(
            f"{name} needs F and T divisible by {multiple} (frame_multiple), got input shape "
            f"{tuple(x.shape)}; pad the frame axis first, e.g. meanflowse.method.stft.pad_frames(x, "
            f"{multiple}), and use an STFT whose bin count is a multiple of {multiple}."
        )


class Combine(nn.Module):
    """Merge the input pyramid into the feature map: 1x1 conv, then sum or concatenate."""

    def __init__(self, dim1: int, dim2: int, method: str) -> None:
        super().__init__()
        self.Conv_0 = conv2d(dim1, dim2, 1)
        self.method = method

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        x = self.Conv_0(x)
        return x + h if self.method == "sum" else torch.cat([x, h], dim=1)


class NCSNpp(nn.Module):
    """NCSN++ U-Net conditioned on ``t`` and ``d = t - r``.

    Input: ``x_t, y`` real ``[B, 2, F, T]`` (Re, Im of complex spectrograms), ``t, d`` ``[B]``.
    Output: real ``[B, 2, F, T]`` (Re, Im of the average velocity). ``F`` and ``T`` must be
    multiples of ``frame_multiple = 2 ** (len(ch_mult) - 1)``.

    Attention sits at levels whose nominal resolution ``image_size // 2**level`` is in
    ``attn_resolutions`` (``image_size`` is the frequency size the network is designed for,
    256 bins in the reference) and, if ``bottleneck_attn``, between the two middle blocks.
    """

    def __init__(
        self,
        *,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        bottleneck_attn: bool = True,
        dropout: float = 0.0,
        fourier_scale: float = 16.0,
        image_size: int = 256,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        init_scale: float = 0.0,
        progressive: str = "output_skip",
        progressive_input: str = "input_skip",
        progressive_combine: str = "sum",
    ) -> None:
        super().__init__()
        if progressive not in ("output_skip", "none"):
            raise ValueError(f"progressive must be 'output_skip' or 'none', got {progressive!r}")
        if progressive_input not in ("input_skip", "none"):
            raise ValueError(f"progressive_input must be 'input_skip' or 'none', got {progressive_input!r}")
        if progressive_combine not in ("sum", "cat"):
            raise ValueError(f"progressive_combine must be 'sum' or 'cat', got {progressive_combine!r}")
        ch_mult = tuple(int(m) for m in ch_mult)
        attn_resolutions = tuple(int(r) for r in attn_resolutions)
        self.num_levels = num_levels = len(ch_mult)
        self.frame_multiple = 2 ** (num_levels - 1)
        self.output_skip = progressive == "output_skip"
        self.input_skip = progressive_input == "input_skip"
        resolutions = [image_size // 2**i for i in range(num_levels)]
        use_attn = [r in attn_resolutions for r in resolutions]
        self.register_buffer("fir", fir_kernel_2d(fir_kernel), persistent=False)

        temb_dim = 4 * nf
        self.time_embed = TimeEmbedding(nf, temb_dim, fourier_scale)

        def resblock(in_ch: int, out_ch: int | None = None, **kw) -> ResnetBlockBigGAN:
            return ResnetBlockBigGAN(
                in_ch,
                out_ch,
                temb_dim,
                dropout=dropout,
                fir_kernel=self.fir,
                skip_rescale=skip_rescale,
                init_scale=init_scale,
                **kw,
            )

        def attn(ch: int) -> AttnBlock:
            return AttnBlock(ch, skip_rescale=skip_rescale, init_scale=init_scale)

        # Encoder. hs_ch mirrors the skip stack the forward pass builds.
        self.conv_in = conv2d(IN_CHANNELS, nf, 3)
        hs_ch = [nf]
        in_ch = nf
        self.down_blocks, self.down_attn = nn.ModuleList(), nn.ModuleList()
        self.downsample, self.combine = nn.ModuleList(), nn.ModuleList()
        for level in range(num_levels):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                out_ch = nf * ch_mult[level]
                blocks.append(resblock(in_ch, out_ch))
                attns.append(attn(out_ch) if use_attn[level] else nn.Identity())
                in_ch = out_ch
                hs_ch.append(in_ch)
            self.down_blocks.append(blocks)
            self.down_attn.append(attns)
            if level != num_levels - 1:
                self.downsample.append(resblock(in_ch, down=True))
                if self.input_skip:
                    self.combine.append(Combine(IN_CHANNELS, in_ch, progressive_combine))
                    in_ch *= 2 if progressive_combine == "cat" else 1
                hs_ch.append(in_ch)

        self.mid_block1 = resblock(in_ch)
        self.mid_attn = attn(in_ch) if bottleneck_attn else nn.Identity()
        self.mid_block2 = resblock(in_ch)

        # Decoder, in the order the forward pass visits the levels (coarsest first).
        self.up_blocks, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.pyramid_norm, self.pyramid_conv = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(num_levels)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):  # +1: the skip left by the downsampling block
                out_ch = nf * ch_mult[level]
                blocks.append(resblock(in_ch + hs_ch.pop(), out_ch))
                in_ch = out_ch
            self.up_blocks.append(blocks)
            self.up_attn.append(attn(in_ch) if use_attn[level] else nn.Identity())
            if self.output_skip:
                self.pyramid_norm.append(group_norm(in_ch))
                self.pyramid_conv.append(conv2d(in_ch, IN_CHANNELS, 3, init_scale=init_scale))
            if level != 0:
                self.upsample.append(resblock(in_ch, up=True))
        assert not hs_ch

        if not self.output_skip:
            self.final_norm = group_norm(in_ch)
            self.final_conv = conv2d(in_ch, IN_CHANNELS, 3, init_scale=init_scale)
        # SGMSE+'s last 1x1 layer maps the 4 pyramid channels to one complex output.
        self.output_layer = nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 1)

    def forward(self, x_t: Tensor, y: Tensor, t: Tensor, d: Tensor) -> Tensor:
        check_frames(x_t, self.frame_multiple, type(self).__name__)
        x = torch.cat([x_t, y], dim=1)
        temb_act = F.silu(self.time_embed(t, d))

        pyramid_in = x
        hs = [self.conv_in(x)]
        for level in range(self.num_levels):
            for block, attn in zip(self.down_blocks[level], self.down_attn[level]):
                hs.append(attn(block(hs[-1], temb_act)))
            if level != self.num_levels - 1:
                h = self.downsample[level](hs[-1], temb_act)
                if self.input_skip:
                    pyramid_in = fir_downsample(pyramid_in, self.fir)
                    h = self.combine[level](pyramid_in, h)
                hs.append(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(hs[-1], temb_act)), temb_act)

        pyramid = None
        for i, blocks in enumerate(self.up_blocks):
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), temb_act)
            h = self.up_attn[i](h)
            if self.output_skip:
                p = self.pyramid_conv[i](F.silu(self.pyramid_norm[i](h)))
                pyramid = p if pyramid is None else fir_upsample(pyramid, self.fir) + p
            if i < len(self.upsample):
                h = self.upsample[i](h, temb_act)

        if self.output_skip:
            h = pyramid
        else:
            h = self.final_conv(F.silu(self.final_norm(h)))
        return self.output_layer(h)
