"""Enhance waveforms with a trained model: load a checkpoint, normalise, STFT, sample, invert.

Any length: a signal longer than ``chunk_s`` is cut into equal chunks that overlap by
``overlap_s``; each chunk is enhanced on its own and the chunks are joined by overlap-add with
raised-cosine cross-fades, divided by the summed fade weights, so memory stays flat in the file
length and an identity model reproduces its input exactly.

Normalisation (method.md section 1) uses the peak of the *whole* noisy file (per channel), not
of each chunk: every chunk of a file sees the same gain, so overlapping chunks agree where they
are cross-faded and a quiet passage stays quiet relative to the rest, as when the file is
enhanced in one piece. (A per-chunk peak would push quiet chunks up to full scale, and the
model, which is not scale-invariant, would then treat neighbouring chunks differently.)

Precision and layout: ``precision="bf16"`` runs the network under bf16 autocast while the STFT,
the sampler's state and the output stay fp32; on a CPU with AVX512-BF16 or AMX (oneDNN) that
about halves the forward time of the full NCSN++ (BENCHMARKS.md section 2). ``channels_last``
(default: on a CPU) stores the convolutions' weights and inputs as NHWC, the layout oneDNN
computes in, which saves a reorder per convolution.

Batching: the pieces the network sees (a channel of a short file, or one chunk of a long one)
are grouped by their padded frame count, so a batch never pads a piece beyond what it gets when
enhanced alone: batching changes the throughput, not the result. The sampler noise of each
piece is drawn from its own generator, seeded by ``(seed, channel, chunk)``, for the same reason.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from meanflowse.config import spec_config
from meanflowse.data.audio import PEAK_FLOOR
from meanflowse.inference.audio_io import fit_length, to_rate

# re-exported: the checkpoint names were this module's (tests, the study, benchmarks)
from meanflowse.inference.checkpoint import CheckpointError, load_model, load_module  # noqa: F401
from meanflowse.inference.model import InferenceModel
from meanflowse.method.samplers import check_nfe, resolve_sampler
from meanflowse.method.stft import SpecConfig, spec_to_wav, wav_to_spec

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ------------------------------------------------------------------------------ chunking
def chunk_starts(length: int, *, chunk: int, overlap: int) -> list[int]:
    """Starts of the ``min(chunk, length)``-sample windows that cover ``[0, length)``.

    Windows advance by ``chunk - overlap``; the last one is aligned to the end, so every window
    has the same size (one batch shape) and the last overlap may be longer than ``overlap``.
    """
    if length <= chunk:
        return [0]
    if not 0 <= overlap < chunk:
        raise ValueError(f"overlap ({overlap} samples) must be in [0, chunk={chunk})")
    return list(range(0, length - chunk, chunk - overlap)) + [length - chunk]


def _ramp(n: int) -> Tensor:
    """Raised-cosine fade-in of ``n`` samples, strictly inside (0, 1); ``ramp + flip(ramp) = 1``."""
    k = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.sin(0.5 * math.pi * k).pow(2).float()


def chunk_weight(starts: list[int], index: int, size: int) -> Tensor:
    """Cross-fade weight of window ``index``: fades over the overlap with each neighbour."""
    w = torch.ones(size)
    if index > 0:
        n = starts[index - 1] + size - starts[index]
        w[:n] *= _ramp(n)
    if index + 1 < len(starts):
        n = starts[index] + size - starts[index + 1]
        w[size - n :] *= _ramp(n).flip(0)
    return w


def padded_frames(num_samples: int, *, hop: int, multiple: int) -> int:
    """Frames the network sees for ``num_samples`` (centred STFT, padded to ``multiple``)."""
    frames = num_samples // hop + 1
    return -(-frames // multiple) * multiple


@dataclass(frozen=True)
class _Piece:
    """What the network sees once: ``wavs[item][channel, start:start+size]``."""

    item: int
    channel: int
    chunk: int
    start: int
    size: int
    frames: int  # padded frame count: the batching key


# ------------------------------------------------------------------------------ enhancer
@dataclass
class Enhancer:
    """Enhancement of ``[C, L]`` waveforms at the model's rate (channels and chunks as a batch).

    ``chunk_s`` / ``overlap_s``: the longest piece the network sees and the cross-fade between
    pieces; ``batch_size``: pieces per network call (raise it on a GPU); ``precision``: ``fp32``
    or ``bf16`` (autocast for the network only); ``channels_last``: NHWC convolutions (converts
    ``module`` in place, so :meth:`from_checkpoint` turns it on for a CPU, and an enhancer built
    around a module that is still training leaves it off).
    """

    module: InferenceModel  # (a LightningModule's ``.inference`` while it trains)
    spec: SpecConfig
    sample_rate: int = 16000
    sampler: str | None = None
    nfe: int | None = None
    t_end: float | None = None
    sampler_params: dict | None = None  # the sampler's own keyword arguments (None: the config's)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    chunk_s: float = 10.0
    overlap_s: float = 0.5
    batch_size: int = 1
    precision: str = "fp32"
    channels_last: bool = False  # converts ``module`` in place: only for a module it owns

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if (
            self.precision == "bf16"
            and self.device.type == "cpu"
            and not torch.ops.mkldnn._is_mkldnn_bf16_supported()
        ):
            log.warning(
                "precision=bf16 on a CPU without AVX512-BF16/AMX: bf16 is emulated there "
                "and slower than fp32; use precision=fp32"
            )
        if self.channels_last:
            self.module.to(memory_format=torch.channels_last)
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: needs at least 1")
        if self.nfe is not None and self.nfe < 1:
            raise ValueError(f"sampler.nfe={self.nfe}: needs at least one network evaluation")
        # chunks hold a whole number of the U-Net's frame multiples (no padded frames wasted),
        # rounded up: a file of chunk_s seconds is one piece, not two that overlap almost fully
        m, hop = self.frame_multiple, self.spec.hop_length
        need = math.ceil(self.chunk_s * self.sample_rate / hop) + 1
        frames = max(m, -(-need // m) * m)
        self.chunk = self.spec.samples_for_frames(frames)
        self.overlap = int(round(self.overlap_s * self.sample_rate))
        if self.overlap < self.spec.n_fft:
            raise ValueError(
                f"overlap_s={self.overlap_s}: must cover at least one STFT window "
                f"({self.spec.n_fft / self.sample_rate:.3f} s), or chunk edges show"
            )
        if 2 * self.overlap > self.chunk:
            raise ValueError(
                f"overlap_s={self.overlap_s} is more than half of chunk_s="
                f"{self.chunk_s} ({self.chunk / self.sample_rate:.2f} s after rounding "
                f"to {m} frames); lower overlap_s or raise chunk_s"
            )
        self.sampler_name = resolve_sampler(
            self.sampler or self.module.sampler_cfg.name,
            trained_with_meanflow=self.module.trained_with_meanflow,
        )
        self.steps = self.nfe or self.module.sampler_cfg.nfe
        check_nfe(self.sampler_name, self.steps)
        if self.sampler_params is None:
            self.sampler_params = dict(self.module.sampler_cfg.params or {})

    @classmethod
    def from_checkpoint(
        cls,
        ckpt_path: str | Path,
        *,
        use_ema: bool = True,
        device: str = "auto",
        channels_last: bool | None = None,
        **kw,
    ) -> "Enhancer":
        """``channels_last=None``: on a CPU (oneDNN's own layout), off on a GPU."""
        module, cfg = load_model(ckpt_path, use_ema=use_ema)
        dev = resolve_device(device)
        cl = dev.type == "cpu" if channels_last is None else channels_last
        return cls(
            module=module.to(dev),
            spec=spec_config(cfg),
            device=dev,
            sample_rate=int(cfg.data.sample_rate),
            channels_last=cl,
            **kw,
        )

    @property
    def frame_multiple(self) -> int:
        return int(getattr(self.module.backbone, "frame_multiple", 64))

    @property
    def config(self) -> DictConfig:
        """The training config stored in the checkpoint."""
        return OmegaConf.create(self.module.config or {})

    def enhance(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """``wav [C, L]`` (or ``[L]``) -> the enhanced waveform, same shape, rate and length.

        ``sample_rate``: the rate of ``wav``; another rate than the model's is resampled in and
        the output back out. ``None`` means the model's rate (:attr:`sample_rate`), unchecked."""
        squeeze = wav.dim() == 1
        rates = None if sample_rate is None else [sample_rate]
        out = self.enhance_many([wav[None] if squeeze else wav], sample_rates=rates)[0]
        return out[0] if squeeze else out

    @torch.no_grad()
    def enhance_many(
        self,
        wavs: list[Tensor],
        *,
        sample_rates: list[int] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[Tensor]:
        """Enhance several ``[C, L]`` signals, batching pieces of equal padded size together;
        ``on_batch(done, total)`` after each network call, in pieces (chunks x channels).

        ``sample_rates``: each signal's rate; a signal at another rate than the model's is
        resampled in and its output back out, to its own length (None: all at the model's)."""
        if sample_rates is not None:
            for rate in sample_rates:
                if int(rate) <= 0:
                    raise ValueError(f"sample_rate={rate}: must be a positive number of samples per second")
            sr = self.sample_rate
            outs = self.enhance_many(
                [to_rate(w.float(), int(r), sr) for w, r in zip(wavs, sample_rates)], on_batch=on_batch
            )
            return [
                fit_length(to_rate(o, sr, int(r)), w.shape[-1]) for o, w, r in zip(outs, wavs, sample_rates)
            ]
        wavs = [w.float().cpu() for w in wavs]
        peaks = [w.abs().amax(dim=-1).clamp_min(PEAK_FLOOR) for w in wavs]  # per file, per channel
        outs = [torch.zeros_like(w) for w in wavs]
        starts = [chunk_starts(w.shape[-1], chunk=self.chunk, overlap=self.overlap) for w in wavs]
        weight_sum = [torch.zeros(w.shape[-1]) if len(s) > 1 else None for w, s in zip(wavs, starts)]
        total, done = sum(len(st) * w.shape[0] for w, st in zip(wavs, starts)), 0
        for batch in self._batches(wavs, starts):
            y = [
                wavs[p.item][p.channel, p.start : p.start + p.size] / peaks[p.item][p.channel] for p in batch
            ]
            for p, x in zip(batch, self._run(y, batch)):
                x = x * peaks[p.item][p.channel]
                if weight_sum[p.item] is None:
                    outs[p.item][p.channel] = x
                    continue
                w = chunk_weight(starts[p.item], p.chunk, p.size)
                outs[p.item][p.channel, p.start : p.start + p.size] += w * x
                if p.channel == 0:
                    weight_sum[p.item][p.start : p.start + p.size] += w
            done += len(batch)
            if on_batch is not None:
                on_batch(done, total)
        return [o if s is None else o.div_(s) for o, s in zip(outs, weight_sum)]

    def _batches(self, wavs: list[Tensor], starts: list[list[int]]) -> Iterator[list[_Piece]]:
        pieces = []
        for i, (w, st) in enumerate(zip(wavs, starts)):
            size = min(w.shape[-1], self.chunk)
            frames = padded_frames(size, hop=self.spec.hop_length, multiple=self.frame_multiple)
            pieces += [_Piece(i, c, k, s, size, frames) for k, s in enumerate(st) for c in range(w.shape[0])]
        pieces.sort(key=lambda p: p.frames)  # stable: file order kept within a size
        batch: list[_Piece] = []
        for p in pieces:
            if batch and (len(batch) == self.batch_size or batch[0].frames != p.frames):
                yield batch
                batch = []
            batch.append(p)
        if batch:
            yield batch

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the network calls when ``precision="bf16"``; the sampler's update
        ``x - dt * u`` promotes back to the fp32 state, so errors do not accumulate in bf16."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _noise(self, shape: tuple[int, ...], piece: _Piece) -> Tensor:
        seed = int(np.random.SeedSequence([self.seed, piece.channel, piece.chunk]).generate_state(1)[0])
        gen = torch.Generator(device=self.device).manual_seed(seed)
        return torch.randn(shape, generator=gen, device=self.device) * math.sqrt(0.5)

    def _run(self, wavs: list[Tensor], pieces: list[_Piece]) -> list[Tensor]:
        """One network batch: normalised waveforms of equal padded size -> enhanced waveforms."""
        frames = pieces[0].frames
        sizes = [w.shape[-1] for w in wavs]
        # the centred STFT reflects n_fft/2 samples at each end, so a very short piece (under
        # 16 ms at 16 kHz) is zero-padded to one window and its output cropped back
        wavs = [
            torch.nn.functional.pad(w, (0, self.spec.n_fft - w.shape[-1]))
            if w.shape[-1] < self.spec.n_fft
            else w
            for w in wavs
        ]
        if len({w.shape[-1] for w in wavs}) == 1:  # chunks of one file: one batched STFT
            specs = list(wav_to_spec(torch.stack(wavs).to(self.device), self.spec))
        else:
            specs = [wav_to_spec(w.to(self.device), self.spec) for w in wavs]
        lengths = [s.shape[-1] for s in specs]
        y = torch.stack([torch.nn.functional.pad(s, (0, frames - s.shape[-1])) for s in specs])
        z = torch.stack([self._noise(tuple(y.shape[1:]), p) for p in pieces])
        if self.channels_last:
            y, z = (a.contiguous(memory_format=torch.channels_last) for a in (y, z))
        with self.autocast():
            x = self.module.enhance_spec(
                y, z=z, name=self.sampler_name, nfe=self.steps, t_end=self.t_end, params=self.sampler_params
            )
        return [
            spec_to_wav(x[j, ..., :n], self.spec, w.shape[-1])[..., :size].cpu()
            for j, (n, w, size) in enumerate(zip(lengths, wavs, sizes))
        ]
