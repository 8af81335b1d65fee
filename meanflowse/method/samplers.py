"""Samplers from the prior at ``T_rev`` down to ``t_end`` (method.md section 5).

``net_fn(x, y, t, r)`` is the average-velocity network; each step calls it exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from meanflowse.method.jvp import NetFn
from meanflowse.method.path import PathConfig, prior_sample

SAMPLERS = ("euler_mf", "euler", "auto")


@dataclass
class SamplerConfig:
    name: str = "auto"  # euler_mf | euler | auto (euler_mf for MeanFlow-trained models)
    nfe: int = 1  # network evaluations = Euler steps
    t_end: float = 0.0  # 0: the strict jump to t = 0; path.t_eps stops where training times end


def resolve_sampler(name: str, *, trained_with_meanflow: bool) -> str:
    if name == "auto":
        return "euler_mf" if trained_with_meanflow else "euler"
    if name not in SAMPLERS:
        raise ValueError(f"sampler.name={name!r}; use one of {SAMPLERS}")
    return name


def time_grid(*, nfe: int, t_start: float, t_end: float) -> list[float]:
    if nfe < 1:
        raise ValueError(f"sampler.nfe={nfe}: needs at least one network evaluation")
    return torch.linspace(t_start, t_end, nfe + 1, dtype=torch.float64).tolist()


@torch.no_grad()
def sample(
    net_fn: NetFn, *, y: Tensor, z: Tensor, name: str, nfe: int, t_end: float, path: PathConfig
) -> Tensor:
    """Enhance ``y`` from the prior ``y + sigma_max z``.

    ``euler_mf`` jumps ``x <- x - (t_k - t_{k+1}) u(x, r=t_{k+1}, t=t_k)``; ``euler`` uses the
    instantiated velocity (``r = t``). Returns the state at ``t_end``.
    """
    if name not in ("euler_mf", "euler"):
        raise ValueError(f"sampler {name!r} is not runnable; resolve 'auto' first")
    x = prior_sample(y=y, z=z, cfg=path)
    grid = time_grid(nfe=nfe, t_start=path.T_rev, t_end=t_end)
    ones = torch.ones(y.shape[0], device=y.device, dtype=y.dtype)
    for t_k, t_next in zip(grid[:-1], grid[1:]):
        t = ones * t_k
        r = ones * t_next if name == "euler_mf" else t
        x = x - (t_k - t_next) * net_fn(x, y, t, r)
    return x
