"""Enhance waveforms with a trained model: load a checkpoint, normalise, STFT, sample, invert."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from meanflowse.config import spec_config
from meanflowse.data.audio import PEAK_FLOOR
from meanflowse.lit_module import MeanFlowSEModule
from meanflowse.path import complex_noise_like
from meanflowse.stft import SpecConfig, pad_frames, spec_to_wav, wav_to_spec




class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _read_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass ckpt_path=<run>/checkpoints/last.ckpt")
    try:  # Lightning checkpoints hold tensors and plain containers, so the safe loader suffices
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise CheckpointError(f"{path}: not a readable MeanFlowSE checkpoint ({err})") from err


def load_module(ckpt_path: str | Path, *, use_ema: bool = True) -> tuple[MeanFlowSEModule, DictConfig]:
    """Rebuild the model from the config stored in the checkpoint, with EMA weights by default."""
    from meanflowse.training import build_module  # training imports Lightning's Trainer stack

    path = Path(ckpt_path)
    ckpt = _read_checkpoint(path)
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    if config is None:
        raise CheckpointError(f"{path}: has no stored config; was it written by train.py?")
    cfg = OmegaConf.create(config)
    module = build_module(cfg)
    module.load_state_dict(ckpt["state_dict"])
    ema = (ckpt.get("callbacks") or {}).get("EMA")
    if use_ema and ema:
        params = dict(module.named_parameters())
        with torch.no_grad():
            for name, value in ema["shadow"].items():
                params[name].copy_(value)
    module.eval()
    return module, cfg


@dataclass
class Enhancer:
    """One-call enhancement of ``[C, L]`` waveforms at the model's rate (channels as a batch)."""

    module: MeanFlowSEModule
    spec: SpecConfig
    sampler: str | None = None
    nfe: int | None = None
    t_end: float | None = None
    device: torch.device = torch.device("cpu")
    seed: int = 0

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | Path, *, use_ema: bool = True, device: str = "auto",
                        **kw) -> "Enhancer":
        module, cfg = load_module(ckpt_path, use_ema=use_ema)
        dev = resolve_device(device)
        return cls(module=module.to(dev), spec=spec_config(cfg), device=dev, **kw)

    @property
    def sample_rate(self) -> int:
        return int(self.module.hparams["config"]["data"]["sample_rate"])

    @torch.no_grad()
    def enhance(self, wav: Tensor) -> Tensor:
        """``wav [C, L]`` (or ``[L]``) at ``sample_rate`` -> enhanced waveform of the same shape."""
        squeeze = wav.dim() == 1
        y_wav = (wav[None] if squeeze else wav).to(self.device, torch.float32)
        length = y_wav.shape[-1]
        peak = y_wav.abs().amax(dim=-1, keepdim=True).clamp_min(PEAK_FLOOR)
        y = wav_to_spec(y_wav / peak, self.spec)
        frames = y.shape[-1]
        y = pad_frames(y, getattr(self.module.backbone, "frame_multiple", 64))
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        x = self.module.enhance_spec(y, z=complex_noise_like(y, generator=gen), name=self.sampler,
                                     nfe=self.nfe, t_end=self.t_end)
        out = spec_to_wav(x[..., :frames], self.spec, length) * peak
        return (out[0] if squeeze else out).cpu()
