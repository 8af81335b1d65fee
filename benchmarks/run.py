"""`make bench`: the CPU benchmarks reported in BENCHMARKS.md, in one go (about 15 minutes on 2 cores).

1. MeanFlow step cost against a CFM step, per JVP implementation (``bench_objective``).
2. Backbone forward / training-step times per preset, and the FIR implementation's worth
   (``bench_backbones``).
3. Enhancement memory, RTF by NFE and one-step quality (``bench_enhance``), for the demo
   checkpoint when ``make demo`` has produced it (skipped with a note otherwise).

GPU figures come from ``benchmarks/gpu.sh`` on a CUDA machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import bench_backbones, bench_objective
from meanflowse.runtime import apply_cpu_memory_setting

DEMO_CKPT = Path("outputs/demo/checkpoints/last.ckpt")


def main() -> int:
    apply_cpu_memory_setting("auto")  # as train.py and eval.py do
    print("## 1. MeanFlow training step vs CFM step\n", flush=True)
    bench_objective.run(frames=128, batch=2, repeats=3)
    bench_objective.run(frames=64, batch=8, repeats=3, mf_fraction=0.25)
    print("\n## 2. Backbones, CPU\n", flush=True)
    bench_backbones.run(presets=["ncsnpp_tiny", "dcunet"], batches=[1, 4])
    bench_backbones.run(presets=["ncsnpp_small"], batches=[1], repeats=2)
    print("\n### Full NCSN++: layout and precision (issue 5's 1.5x goal)\n", flush=True)
    bench_backbones.run(presets=["ncsnpp"], batches=[1], repeats=2, modes=["fp32", "fp32+cl", "bf16+cl"])
    bench_backbones.run(presets=["ncsnpp_tiny"], batches=[4], modes=["compile"])
    print("\n### FIR as literal upfirdn2d (reference-style), tiny preset\n", flush=True)
    bench_backbones.run(presets=["ncsnpp_tiny"], batches=[4], repeats=2, fir_reference=True)
    print("\n## 3. Enhancement\n", flush=True)
    if DEMO_CKPT.is_file():
        from benchmarks import bench_enhance

        bench_enhance.run(str(DEMO_CKPT), device="cpu")
    else:
        print(f"{DEMO_CKPT} not found: run `make demo` first for the enhancement figures.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
