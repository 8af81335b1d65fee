"""Forward and training-step time of each backbone preset (issue 5).

`python -m benchmarks.bench_backbones [--presets ncsnpp_tiny,ncsnpp] [--batches 1,4] [--frames 256]
[--device cpu|cuda] [--modes fp32,bf16+cl,compile] [--repeats 3] [--fir-reference]
[--retain-cpu-memory auto|true|false]`

Inputs are 256 bins x ``frames`` frames, one training step is forward + backward + Adam with a
plain CFM loss (the backbone's own cost; the MeanFlow overhead is ``bench_objective``).
A mode is ``+``-joined tokens: ``fp32`` (plain), ``bf16`` (autocast), ``cl`` (channels_last
weights and inputs), ``compile`` (``torch.compile``), ``upfirdn`` (the FIR resampling as the
literal upfirdn2d: zero-stuff, pad, convolve, decimate, as the reference code computes it), e.g.
``upfirdn,fp32,fp32+cl,bf16+cl``. Every row also gives its speed-up over the first mode of the
same preset and batch, measured in the same process minutes apart, so a drifting machine (this
VM's speed varies by up to 1.4x between hours) does not skew the ratio. ``--fir-reference``
applies ``upfirdn`` to every mode. ``--retain-cpu-memory`` is the train.py/eval.py setting of
that name (:mod:`meanflowse.runtime`), process-wide, so compare it across two runs.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from unittest import mock

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.common import machine, markdown_table, time_call
from meanflowse.backbones import layers
from meanflowse.runtime import apply_cpu_memory_setting

NOTE = "CFM loss; one step = forward + backward + Adam"


def build(preset: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return instantiate(OmegaConf.load(f"configs/backbone/{preset}.yaml")).to(device)


def make_inputs(batch: int, frames: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(batch, 2, 256, frames, generator=g).to(device) for _ in range(2))
    t = torch.full((batch,), 0.7, device=device)
    return x, y, t, t * 0.5


MODE_TOKENS = ("fp32", "bf16", "cl", "compile", "upfirdn")


@dataclass(frozen=True)
class Mode:
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    upfirdn: bool = False

    @classmethod
    def parse(cls, text: str) -> "Mode":
        tokens = set(text.split("+"))
        if not tokens <= set(MODE_TOKENS):
            raise SystemExit(
                f"--modes: unknown {sorted(tokens - set(MODE_TOKENS))} in {text!r}; "
                f"tokens are {', '.join(MODE_TOKENS)} joined by '+'"
            )
        return cls(
            bf16="bf16" in tokens,
            channels_last="cl" in tokens,
            compile="compile" in tokens,
            upfirdn="upfirdn" in tokens,
        )


def autocast(mode: Mode, device: torch.device):
    if mode.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def reference_fir(enabled: bool):
    """Route the FIR resampling of every block through the literal upfirdn2d definition."""
    if not enabled:
        yield
        return
    with (
        mock.patch.object(layers, "fir_downsample", layers.fir_downsample_reference),
        mock.patch.object(layers, "fir_upsample", layers.fir_upsample_reference),
        mock.patch("meanflowse.backbones.ncsnpp.fir_downsample", layers.fir_downsample_reference),
        mock.patch("meanflowse.backbones.ncsnpp.fir_upsample", layers.fir_upsample_reference),
    ):
        yield


def measure(
    preset: str, *, batch: int, frames: int, mode: Mode, device: torch.device, repeats: int, train: bool
) -> tuple[float, float | None]:
    net = build(preset, device)
    x, y, t, d = make_inputs(batch, frames, device)
    target = torch.randn_like(x)
    if mode.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x, y, target = (a.contiguous(memory_format=torch.channels_last) for a in (x, y, target))
    fn = torch.compile(net) if mode.compile else net
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

    warm = 2 if mode.compile else 1
    with reference_fir(mode.upfirdn):
        fwd = time_call(forward, warmup=warm, repeats=repeats)
        stp = time_call(step, warmup=warm, repeats=repeats) if train else None
    return fwd, stp


def run(
    *,
    presets: list[str],
    batches: list[int],
    frames: int = 256,
    device: str = "cpu",
    modes: list[str] = ("fp32",),
    repeats: int = 3,
    train_max_batch: int = 4,
    no_train: tuple[str, ...] = (),
    fir_reference: bool = False,
) -> list[list[object]]:
    dev = torch.device(device)
    parsed = {m: Mode.parse(f"{m}+upfirdn" if fir_reference else m) for m in modes}
    rows = []
    for preset in presets:
        params = sum(p.numel() for p in build(preset, torch.device("cpu")).parameters())
        for batch in batches:
            train = batch <= train_max_batch and preset not in no_train
            first: tuple[float, float | None] | None = None
            for name, mode in parsed.items():
                fwd, stp = measure(
                    preset, batch=batch, frames=frames, mode=mode, device=dev, repeats=repeats, train=train
                )
                first = first or (fwd, stp)
                rows.append(
                    [
                        preset,
                        f"{params / 1e6:.2f}M",
                        name,
                        f"{batch} x {frames}",
                        f"{fwd:.3f}",
                        "—" if stp is None else f"{stp:.3f}",
                        f"{first[0] / fwd:.2f}x",
                        "—" if stp is None or first[1] is None else f"{first[1] / stp:.2f}x",
                    ]
                )
                print(" | ".join(str(c) for c in rows[-1]), flush=True)
    fir = "literal upfirdn2d (reference-style) FIR" if fir_reference else "strided-conv FIR"
    print(f"\nBackbones on {device}, {fir}, {NOTE}; {machine()}\n")
    print(
        markdown_table(
            [
                "preset",
                "params",
                "mode",
                "batch x frames",
                "forward s",
                "train step s",
                f"forward vs {modes[0]}",
                f"step vs {modes[0]}",
            ],
            rows,
        )
    )
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
    ap.add_argument("--retain-cpu-memory", default="auto", choices=["auto", "true", "false"])
    a = ap.parse_args()
    retained = apply_cpu_memory_setting({"true": True, "false": False}.get(a.retain_cpu_memory, "auto"))
    print(f"retain_cpu_memory={a.retain_cpu_memory}: glibc keeps freed memory: {retained}")
    run(
        presets=a.presets.split(","),
        batches=[int(b) for b in a.batches.split(",")],
        frames=a.frames,
        device=a.device,
        modes=a.modes.split(","),
        repeats=a.repeats,
        train_max_batch=a.train_max_batch,
        no_train=tuple(filter(None, a.no_train.split(","))),
        fir_reference=a.fir_reference,
    )
