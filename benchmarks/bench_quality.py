"""Quality at a fixed wall-clock budget (issue 15, item 4): train on the built-in corpus with the
paper's settings for about ``--budget-s`` seconds, then score the test split at 1-NFE ``euler_mf``
and 5-NFE ``euler``, next to the noisy input.

`python -m benchmarks.bench_quality --out DIR [--budget-s 480] [--probe-steps 30] [override ...]`
e.g. `python -m benchmarks.bench_quality --out /tmp/q backbone=ncsnpp_small trainer=gpu
data.batch_size=8` (``benchmarks/gpu.sh``, section ``quality``).

The curriculum follows step / max_steps, so a time limit alone would stop it half-way: a short
timed probe (every step a MeanFlow step with the JVP, the costlier kind) sizes ``max_steps`` to the
budget, and ``trainer.max_time`` caps the run at 1.25 times the budget in case the probe was
optimistic (the log then says the curriculum did not finish). The probe and the run share one
generated corpus. Training runs through ``train.py`` and scoring through ``eval.py``, the entry
points users run.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.common import TRAINING_ONLY, machine, markdown_table

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = {  # each one's name is its output folder's too
    "euler_mf_nfe1": ["sampler.name=euler_mf", "sampler.nfe=1"],
    "euler_nfe5": ["sampler.name=euler", "sampler.nfe=5"],
}
METRICS = ["pesq", "estoi", "si_sdr", "dnsmos_ovrl"]


def steps_for_budget(budget_s: float, step_s: float, min_steps: int = 10) -> int:
    """Training steps that fit ``budget_s`` at ``step_s`` seconds a step (at least ``min_steps``)."""
    if not (step_s > 0 and math.isfinite(step_s)):
        raise ValueError(
            f"step time {step_s!r} s: the probe timed no MeanFlow step; raise --probe-steps "
            "(a CFM-only objective has none to time)"
        )
    return max(min_steps, int(budget_s / step_s))


def max_time(seconds: float) -> str:
    """Lightning's ``max_time`` string DD:HH:MM:SS for ``seconds`` (rounded up to a second)."""
    s = math.ceil(seconds)
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def probe_step_time(out: Path, steps: int, overrides: list[str]) -> float:
    """Mean seconds per MeanFlow training step (after the timer's warm-up steps), in-process."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import compose_cfg  # the tests' Hydra composition with outputs under `out`
    from meanflowse.sweep.step_timer import StepTimer
    from meanflowse.training.fit import train

    probe = [
        *TRAINING_ONLY,
        "callbacks.last_checkpoint=null",
        "curriculum.mf_warmup_frac=0.0",
        "+callbacks.step_timer._target_=meanflowse.sweep.step_timer.StepTimer",
        *overrides,
        f"trainer.max_steps={steps}",
    ]
    cfg = compose_cfg("train", probe, out / "probe", shared_data=out / "data")
    _, objs = train(cfg)
    timer = next(c for c in objs["trainer"].callbacks if isinstance(c, StepTimer))
    step_s = timer.summary()["step_time_mf_s"]
    del objs
    gc.collect()  # Lightning's trainer, module and loaders hold each other in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the training run below is another process on the same GPU
    return step_s


def quality_table(summaries: dict[str, dict]) -> str:
    """Markdown rows: the noisy input, then each sampler's scores (mean over the test split)."""
    first = next(iter(summaries.values()))
    rows = [["noisy input", *(f"{first['noisy'].get(m, math.nan):.3f}" for m in METRICS)]]
    rows += [[name, *(f"{s.get(m, math.nan):.3f}" for m in METRICS)] for name, s in summaries.items()]
    return markdown_table(["test split", *METRICS], rows)


def run(out: Path, budget_s: float, probe_steps: int, overrides: list[str]) -> dict:
    out = out.resolve()
    step_s = probe_step_time(out, probe_steps, overrides)
    steps = steps_for_budget(budget_s, step_s)
    print(
        f"probe: {step_s:.3f} s a MeanFlow step -> trainer.max_steps={steps} for {budget_s:.0f} s", flush=True
    )
    run_dir = out / "run"
    train = [
        sys.executable, "train.py", *TRAINING_ONLY, *overrides,
        f"trainer.max_steps={steps}", f"+trainer.max_time={max_time(1.25 * budget_s)}",
        f"paths.data_dir={out / 'data'}", f"hydra.run.dir={run_dir}", "task_name=quality",
    ]  # fmt: skip
    subprocess.run(train, cwd=ROOT, check=True)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    trained = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    if trained < steps:
        print(
            f"trainer.max_time stopped training at step {trained} of {steps}: the curriculum did not finish"
        )
    summaries = {}
    for name, sampler in SAMPLERS.items():
        enhanced = out / f"enhanced_{name}"
        subprocess.run(
            [sys.executable, "eval.py", f"ckpt_path={ckpt}", "split=test", f"output={enhanced}",
             "overwrite=true", "progress=false", "speaker=false", *sampler],
            cwd=ROOT, check=True,
        )  # fmt: skip
        summaries[name] = json.loads((enhanced / "summary.json").read_text())
    result = {"machine": machine(), "overrides": overrides, "budget_s": budget_s, "probe_step_s": step_s,
              "max_steps": steps, "trained_steps": trained, "summaries": summaries}  # fmt: skip
    (out / "quality.json").write_text(json.dumps(result, indent=1))
    print(f"\nQuality after {trained} steps ({' '.join(overrides)}); {machine()}")
    print(quality_table(summaries))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, default=480.0, help="training time to fill (seconds)")
    ap.add_argument("--probe-steps", type=int, default=30, help="MeanFlow steps timed to size the run")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    run(a.out, a.budget_s, a.probe_steps, a.overrides)
