"""Forward and training-step time of each backbone preset (issue 5).

`python -m benchmarks.bench_backbones [--presets ncsnpp_tiny,ncsnpp] [--batches 1,4] [--frames 256]
[--device cpu|cuda] [--modes fp32,bf16,compile] [--repeats 3] [--fir-reference]`

Inputs are 256 bins x ``frames`` frames, one training step is forward + backward + Adam with a
plain CFM loss (the backbone's own cost; the MeanFlow overhead is ``bench_objective``).
``--fir-reference`` swaps the strided FIR convolutions for the literal upfirdn2d (zero-stuff,
pad, convolve, decimate) to show what that implementation choice is worth.
"""
from __future__ import annotations

import argparse
import contextlib
from unittest import mock

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.common import machine, markdown_table, time_call
from meanflowse.backbones import layers

NOTE = "CFM loss; one step = forward + backward + Adam"


def build(preset: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return instantiate(OmegaConf.load(f"configs/backbone/{preset}.yaml")).to(device)


def make_inputs(batch: int, frames: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(batch, 2, 256, frames, generator=g).to(device) for _ in range(2))
    t = torch.full((batch,), 0.7, device=device)
    return x, y, t, t * 0.5


def autocast(mode: str, device: torch.device):
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def reference_fir(enabled: bool):
    """Route the FIR resampling of every block through the literal upfirdn2d definition."""
    if not enabled:
        yield
        return
    with mock.patch.object(layers, "fir_downsample", layers.fir_downsample_reference), \
            mock.patch.object(layers, "fir_upsample", layers.fir_upsample_reference), \
            mock.patch("meanflowse.backbones.ncsnpp.fir_downsample", layers.fir_downsample_reference), \
            mock.patch("meanflowse.backbones.ncsnpp.fir_upsample", layers.fir_upsample_reference):
        yield


def measure(preset: str, *, batch: int, frames: int, mode: str, device: torch.device,
            repeats: int, train: bool) -> tuple[float, float | None]:
    net = build(preset, device)
    fn = torch.compile(net) if mode == "compile" else net
    x, y, t, d = make_inputs(batch, frames, device)
    target = torch.randn_like(x)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    @torch.no_grad()
    def forward():
        with autocast(mode, device):
            fn(x, y, t, d)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(mode, device):
            out = fn(x, y, t, d)
        (0.5 * (out.float() - target).pow(2).flatten(1).sum(1).mean()).backward()
        opt.step()

    warm = 2 if mode == "compile" else 1
    fwd = time_call(forward, warmup=warm, repeats=repeats)
    stp = time_call(step, warmup=warm, repeats=repeats) if train else None
    return fwd, stp


def run(*, presets: list[str], batches: list[int], frames: int = 256, device: str = "cpu",
        modes: list[str] = ("fp32",), repeats: int = 3, train_max_batch: int = 4,
        no_train: tuple[str, ...] = (), fir_reference: bool = False) -> list[list[object]]:
    dev = torch.device(device)
    rows = []
    with reference_fir(fir_reference):
        for preset in presets:
            params = sum(p.numel() for p in build(preset, torch.device("cpu")).parameters())
            for mode in modes:
                for batch in batches:
                    train = batch <= train_max_batch and preset not in no_train
                    fwd, stp = measure(preset, batch=batch, frames=frames, mode=mode, device=dev,
                                       repeats=repeats, train=train)
                    rows.append([preset, f"{params / 1e6:.2f}M", mode, f"{batch} x {frames}",
                                 f"{fwd:.3f}", "—" if stp is None else f"{stp:.3f}"])
                    print(" | ".join(str(c) for c in rows[-1]), flush=True)
    fir = "literal upfirdn2d (reference-style) FIR" if fir_reference else "strided-conv FIR"
    print(f"\nBackbones on {device}, {fir}, {NOTE}; {machine()}\n")
    print(markdown_table(["preset", "params", "mode", "batch x frames", "forward s",
                          "train step s"], rows))
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="ncsnpp_tiny,ncsnpp_small,ncsnpp,dcunet")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", default="fp32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-max-batch", type=int, default=4)
    ap.add_argument("--no-train", default="", help="presets timed for forward only")
    ap.add_argument("--fir-reference", action="store_true")
    a = ap.parse_args()
    run(presets=a.presets.split(","), batches=[int(b) for b in a.batches.split(",")],
        frames=a.frames, device=a.device, modes=a.modes.split(","), repeats=a.repeats,
        train_max_batch=a.train_max_batch, no_train=tuple(filter(None, a.no_train.split(","))),
        fir_reference=a.fir_reference)
