"""Write an untrained checkpoint as train.py would, for timing eval.py without training first.

`python -m benchmarks.make_checkpoint --out PATH [override ...]`, e.g.
`python -m benchmarks.make_checkpoint --out /tmp/full/checkpoints/last.ckpt backbone=ncsnpp`.
The weights are the initialisation (seed 0): the speed figures of ``bench_enhance`` hold, its
quality figures mean nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoint(out: Path, overrides: list[str]) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import compose_cfg  # the tests' Hydra composition with outputs under a folder
    from meanflowse.atomic import atomic_path
    from meanflowse.checkpoint_contents import inference_checkpoint
    from meanflowse.training.fit import build_module

    cfg = compose_cfg("train", overrides, out.parent)
    torch.manual_seed(0)
    module = build_module(cfg)
    with atomic_path(out) as tmp:
        torch.save(inference_checkpoint(module.hparams["config"], module.state_dict()), tmp)
    print(
        f"{out}: untrained {cfg.backbone._target_.rsplit('.', 1)[-1]}, "
        f"{sum(p.numel() for p in module.parameters()):,} parameters"
    )
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    make_checkpoint(a.out, a.overrides)
