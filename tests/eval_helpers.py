"""Pieces shared by the eval.py tests: a tiny checkpoint, eval configs, test signals, csv rows."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from helpers import TINY, compose_cfg

SR = 16000


def signal(seconds: float, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """Noise-like test signal whose level sweeps over 40 dB, so a per-chunk gain would show."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    env = torch.logspace(-2, 0, n)
    return torch.randn(channels, n, generator=g) * env * 0.5


def write_tiny_checkpoint(tmp: Path) -> Path:
    """A checkpoint as train.py writes it, of an untrained tiny model, with an EMA shadow
    (no training needed to test I/O); returns ``tmp/run/checkpoints/last.ckpt``."""
    from meanflowse.training.fit import build_module

    cfg = compose_cfg("train", TINY, tmp)
    torch.manual_seed(0)
    module = build_module(cfg)
    shadow = {k: v + 0.01 for k, v in module.state_dict().items() if v.is_floating_point()}
    path = tmp / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "callbacks": {"EMA": {"shadow": shadow}},
            "hyper_parameters": {"config": module.hparams["config"]},
        },
        path,
    )
    return path


def eval_cfg(ckpt: Path, tmp_path: Path, *overrides: str):
    """configs/eval.yaml for a quiet CPU-cheap run (no DNSMOS, no speaker model)."""
    return compose_cfg(
        "eval", [f"ckpt_path={ckpt}", "progress=false", "dnsmos=false", "speaker=false", *overrides], tmp_path
    )


def rows(out_dir: Path, name: str = "metrics.csv") -> dict[str, dict[str, str]]:
    """metrics.csv (or ``name``: unscored_metrics.csv after metrics=false) as ``{file: row}``."""
    with open(out_dir / name, newline="") as fh:
        return {r["file"]: r for r in csv.DictReader(fh)}
