"""Cost of one MeanFlow training step relative to one plain CFM step (issue 3).

Same backbone (ncsnpp_tiny preset), same batch (2 x 128 frames, 256 bins), fp32; by default every
sample takes the MeanFlow branch (r < t), the most expensive case (`--mf-fraction` for a mix).
`python -m benchmarks.bench_objective [--frames 128] [--batch 2] [--repeats 3] [--device cpu]
[--backbone ncsnpp_tiny] [--mf-fraction 1.0] [--family]`; ``--family`` times the objectives of
``mf_objective`` (meanflow, imf, split) instead of the JVP implementations.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.common import machine, markdown_table, time_call
from meanflowse.method.objective import MeanFlowConfig, cfm_loss, single_pass_loss, split_loss, two_pass_loss
from meanflowse.method.path import PathConfig, complex_noise_like, conditional_velocity, sample_xt

VARIANTS = [  # (label, formulation, jvp_impl, jvp_chunk, jvp_reuse_primal)
    ("func, single pass", "single_pass", "func", None, False),
    ("func reusing the primal, single pass", "single_pass", "func", None, True),
    ("func, two pass (reference form)", "two_pass", "func", None, False),
    ("autograd, single pass", "single_pass", "autograd", None, False),
    ("autograd, two pass (reference form)", "two_pass", "autograd", None, False),
    ("fd chunk 1, single pass", "single_pass", "fd", 1, False),
    ("fd chunk 1, two pass (reference form)", "two_pass", "fd", 1, False),
    ("fd whole batch, single pass", "single_pass", "fd", None, False),
]


def run(
    *,
    frames: int = 128,
    batch: int = 2,
    repeats: int = 3,
    backbone: str = "ncsnpp_tiny",
    device: str = "cpu",
    mf_fraction: float = 1.0,
    family: bool = False,
):
    """``mf_fraction``: share of the batch with ``r < t`` (the rest ``r = t``); 1.0 is the worst
    case, 0.25 about the end of the reference curriculum (``w (1 - p) = 0.225``)."""
    torch.manual_seed(0)
    dev = torch.device(device)
    net = instantiate(OmegaConf.load(f"configs/backbone/{backbone}.yaml")).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    fn = lambda x_t, y, t, r: net(x_t, y, t, t - r)
    path = PathConfig()
    x, y = (torch.randn(batch, 2, 256, frames, device=dev) * 0.3 for _ in range(2))
    z = complex_noise_like(x)
    t = torch.full((batch,), 0.8, device=dev)
    n_mf = round(mf_fraction * batch)
    r = torch.where(torch.arange(batch, device=dev) < n_mf, 0.3, t)
    b = dict(
        x_t=sample_xt(x=x, y=y, z=z, t=t, cfg=path), y=y, t=t, v=conditional_velocity(x=x, y=y, z=z, cfg=path)
    )
    base = MeanFlowConfig()

    def step(loss_fn):
        def go():
            opt.zero_grad(set_to_none=True)
            loss_fn().backward()
            opt.step()

        return go

    cfm = time_call(step(lambda: cfm_loss(fn, cfg=base, **b)), repeats=repeats)
    rows = [["CFM (reference point)", f"{cfm:.3f}", "1.00x"]]
    print(" | ".join(rows[-1]), flush=True)
    losses = {  # the mean-flow family (mf_objective=meanflow, imf, split), func JVP, single pass
        "meanflow (func, single pass)": lambda: single_pass_loss(fn, r=r, cfg=base, **b).loss,
        "imf (predicted tangent, func, single pass)": lambda: (
            single_pass_loss(fn, r=r, cfg=base, tangent_mix=0.0, **b).loss
        ),
        "split (no JVP, two passes without gradient)": lambda: split_loss(fn, r=r, cfg=base, **b).loss,
    }
    if not family:
        losses = {}
        for label, form, impl, chunk, reuse in VARIANTS:
            cfg = replace(base, formulation=form, jvp_impl=impl, jvp_chunk=chunk, jvp_reuse_primal=reuse)
            if form == "single_pass":
                losses[label] = lambda cfg=cfg: single_pass_loss(fn, r=r, cfg=cfg, **b).loss
            else:
                losses[label] = lambda cfg=cfg: two_pass_loss(fn, r=r, w_mf=0.25, cfg=cfg, **b).loss
    for label, loss in losses.items():
        sec = time_call(step(loss), repeats=repeats)
        rows.append([label, f"{sec:.3f}", f"{sec / cfm:.2f}x"])
        print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["training step", "seconds", "vs CFM"], rows)
    print(
        f"\nMeanFlow step cost, {backbone}, batch {batch} x {frames} frames, {n_mf} of them with "
        f"r < t, {device}, {machine()}\n"
    )
    print(table)
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backbone", default="ncsnpp_tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mf-fraction", type=float, default=1.0, help="share of samples with r < t")
    ap.add_argument(
        "--family", action="store_true", help="meanflow, imf and split instead of the JVP variants"
    )
    a = ap.parse_args()
    run(
        frames=a.frames,
        batch=a.batch,
        repeats=a.repeats,
        backbone=a.backbone,
        device=a.device,
        mf_fraction=a.mf_fraction,
        family=a.family,
    )
