"""Where the time goes, for the figures BENCHMARKS.md quotes from a profile.

`python -m benchmarks.profile backbone [--preset ncsnpp] [--frames 256]`: FLOPs of one forward
(``torch.utils.flop_counter``) and the ops that take the most time (``torch.profiler``).
`python -m benchmarks.profile pipeline [--seconds 10]`: milliseconds per file that the enhancement
pipeline spends around the network (normalisation, STFT, noise, sampler update, inverse STFT),
with the backbone replaced by a near-free stand-in, and the ops that take them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.bench_backbones import build, make_inputs
from benchmarks.common import machine


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def backbone(preset: str, frames: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    net = build(preset, torch.device("cpu")).eval()
    x, y, t, d = make_inputs(1, frames, torch.device("cpu"))
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            net(x, y, t, d)
        print(f"{preset}, 1 x {frames} frames: {counter.get_total_flops() / 1e9:.1f} GFLOP per forward")
        net(x, y, t, d)
        with torch.profiler.profile() as prof:
            net(x, y, t, d)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


class _StandIn(torch.nn.Module):
    """A near-free backbone with the real contract, so only the pipeline's own work is timed."""

    frame_multiple = 64

    def forward(self, x_t, y, t, d):
        return 0.5 * x_t + 0.1 * y


def pipeline(seconds: float) -> None:
    from meanflowse.inference.enhancer import Enhancer
    from meanflowse.method.curriculum import CurriculumConfig
    from meanflowse.method.objectives import MeanFlowObjective
    from meanflowse.method.path import PathConfig
    from meanflowse.method.samplers import SamplerConfig
    from meanflowse.method.stft import SpecConfig
    from meanflowse.training.lit_module import MeanFlowSEModule

    module = MeanFlowSEModule(
        backbone=_StandIn(),
        path=PathConfig(),
        objective=MeanFlowObjective(),
        curriculum=CurriculumConfig(),
        sampler=SamplerConfig(name="euler_mf"),
    )
    enh = Enhancer(module=module.eval().inference, spec=SpecConfig(), chunk_s=seconds + 1.0)
    wav = torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(0)) * 0.1
    print(
        f"pipeline around a stand-in network, {seconds:g} s file: "
        f"{_median_ms(lambda: enh.enhance(wav), 20):.1f} ms (median of 20)"
    )
    with torch.profiler.profile() as prof:
        enh.enhance(wav)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    b = sub.add_parser("backbone")
    b.add_argument("--preset", default="ncsnpp")
    b.add_argument("--frames", type=int, default=256)
    p = sub.add_parser("pipeline")
    p.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    print(machine())
    if a.what == "backbone":
        backbone(a.preset, a.frames)
    else:
        pipeline(a.seconds)
