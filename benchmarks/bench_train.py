"""Multi-step training through the real ``train(cfg)`` on the synthetic corpus: step times with and
without the MeanFlow branch, and the loss at the start and the end.

`python -m benchmarks.bench_train --out DIR [--steps 300] [override ...]`
e.g. `python -m benchmarks.bench_train --out outputs/bench_train backbone=ncsnpp trainer=gpu
trainer.precision=bf16-mixed`. Validation metrics and best-checkpoint callbacks are switched off so
only training is timed; the MeanFlow warm-up is shortened to the first 20% so most steps run it.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from benchmarks.common import TRAINING_ONLY, machine

ROOT = Path(__file__).resolve().parents[1]
BASE = [
    *TRAINING_ONLY,
    "trainer.log_every_n_steps=5",
    "curriculum.mf_warmup_frac=0.2",
    "data.synthetic.num_train=160",
    "data.synthetic.num_valid=4",
    "data.synthetic.num_test=4",
    "+callbacks.step_timer._target_=meanflowse.sweep.step_timer.StepTimer",
]


def losses(out: Path) -> list[float]:
    files = sorted(out.rglob("metrics.csv"))
    if not files:
        return []
    with open(files[-1]) as fh:
        return [float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")]


def run(out: Path, steps: int, overrides: list[str]) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import compose_cfg  # the tests' Hydra composition with outputs under `out`
    from meanflowse.sweep.step_timer import StepTimer
    from meanflowse.training.fit import train

    cfg = compose_cfg(
        "train", [*BASE, f"trainer.max_steps={steps}", *overrides], out, shared_data=out / "data"
    )
    _, objs = train(cfg)
    timer = next(c for c in objs["trainer"].callbacks if isinstance(c, StepTimer))
    result = dict(timer.summary(), steps=objs["trainer"].global_step)
    curve = losses(out)
    if curve:
        k = max(1, len(curve) // 10)
        result.update(loss_first=sum(curve[:k]) / k, loss_last=sum(curve[-k:]) / k)
    print(f"\nTraining {' '.join(overrides)}; {machine()}")
    for key, value in result.items():
        shown = f"{value * 1000:.1f} ms" if key.startswith("step_time") and not math.isnan(value) else value
        print(f"  {key}: {shown}")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    run(a.out, a.steps, a.overrides)
