"""Samplers from the prior at ``T_rev`` down to ``t_end`` (method.md section 5), by registry.

``net_fn(x, y, t, r)`` is the average-velocity network. A sampler is a step function in
:data:`SAMPLERS` plus a YAML file in ``configs/sampler/``: its ``params`` there reach the step
function as keyword arguments (and eval.py's provenance record), with no other file changing.
``nfe`` counts network evaluations: a sampler that evaluates the network ``evals_per_step``
times a step takes ``nfe / evals_per_step`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from meanflowse.method.jvp import NetFn
from meanflowse.method.path import PathConfig, prior_sample

# step(net_fn, x, y, t_k, t_next, *, path, **params) -> the state at t_next (t_k > t_next floats)
StepFn = Callable[..., Tensor]


def _at(x: Tensor, t: float) -> Tensor:
    """The time ``t`` for every item of the batch, in the state's dtype."""
    return torch.ones(x.shape[0], device=x.device, dtype=x.dtype) * t


def euler_mf_step(net_fn: NetFn, x: Tensor, y: Tensor, t_k: float, t_next: float, **_: Any) -> Tensor:
    """The average-velocity jump ``x <- x - (t_k - t_next) u(x, r=t_next, t=t_k)``."""
    return x - (t_k - t_next) * net_fn(x, y, _at(x, t_k), _at(x, t_next))


def euler_step(net_fn: NetFn, x: Tensor, y: Tensor, t_k: float, t_next: float, **_: Any) -> Tensor:
    """Euler on the instantaneous velocity (``r = t``): the flow-matching sampler."""
    t = _at(x, t_k)
    return x - (t_k - t_next) * net_fn(x, y, t, t)


def heun_step(
    net_fn: NetFn, x: Tensor, y: Tensor, t_k: float, t_next: float, *, path: PathConfig, **_: Any
) -> Tensor:
    """Heun (trapezoidal predictor-corrector) on the instantaneous velocity: two evaluations.

    The corrector evaluates the velocity at ``t_next``, or at ``path.t_eps`` when ``t_next`` is
    below it (the last step to ``t_end = 0``): training never showed the network a time under
    ``t_eps``. EDM's Heun takes a plain Euler last step instead; evaluating at ``t_eps`` keeps
    every step at two evaluations, so ``nfe`` is exactly twice the steps."""
    t = _at(x, t_k)
    v = net_fn(x, y, t, t)
    x_pred = x - (t_k - t_next) * v
    s = _at(x, max(t_next, path.t_eps))
    v_next = net_fn(x_pred, y, s, s)
    return x - (t_k - t_next) * 0.5 * (v + v_next)


@dataclass(frozen=True)
class Sampler:
    step: StepFn
    evals_per_step: int = 1


SAMPLERS: dict[str, Sampler] = {
    "euler_mf": Sampler(euler_mf_step),
    "euler": Sampler(euler_step),
    "heun": Sampler(heun_step, evals_per_step=2),
}


@dataclass
class SamplerConfig:
    name: str = "auto"  # a name of SAMPLERS, or auto (euler_mf for MeanFlow-trained models, else euler)
    nfe: int = 1  # network evaluations (steps x evaluations per step)
    t_end: float = 0.0  # 0: the strict jump to t = 0; path.t_eps stops where training times end
    params: dict[str, Any] = field(default_factory=dict)  # the sampler's own keyword arguments


def resolve_sampler(name: str, *, trained_with_meanflow: bool) -> str:
    if name == "auto":
        return "euler_mf" if trained_with_meanflow else "euler"
    if name not in SAMPLERS:
        raise ValueError(f"sampler.name={name!r}; use one of {(*SAMPLERS, 'auto')}")
    return name


def check_nfe(name: str, nfe: int) -> int:
    """The step count of ``nfe`` network evaluations of sampler ``name`` (refused if not whole)."""
    per_step = SAMPLERS[name].evals_per_step
    if nfe < 1 or nfe % per_step:
        raise ValueError(
            f"sampler.nfe={nfe}: {name} evaluates the network {per_step} time(s) a step; "
            f"use a positive multiple of {per_step}"
        )
    return nfe // per_step


def time_grid(*, nfe: int, t_start: float, t_end: float) -> list[float]:
    """``nfe + 1`` equally spaced times from ``t_start`` to ``t_end`` (``nfe`` steps)."""
    if nfe < 1:
        raise ValueError(f"sampler.nfe={nfe}: needs at least one network evaluation")
    return torch.linspace(t_start, t_end, nfe + 1, dtype=torch.float64).tolist()


@torch.no_grad()
def sample(
    net_fn: NetFn,
    *,
    y: Tensor,
    z: Tensor,
    name: str,
    nfe: int,
    t_end: float,
    path: PathConfig,
    params: dict[str, Any] | None = None,
) -> Tensor:
    """Enhance ``y`` from the prior ``y + sigma_max z`` with sampler ``name`` in ``nfe`` network
    evaluations; ``params``: the sampler's own keyword arguments. Returns the state at ``t_end``."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler {name!r} is not runnable; resolve 'auto' first")
    sampler = SAMPLERS[name]
    x = prior_sample(y=y, z=z, cfg=path)
    grid = time_grid(nfe=check_nfe(name, nfe), t_start=path.T_rev, t_end=t_end)
    for t_k, t_next in zip(grid[:-1], grid[1:]):
        x = sampler.step(net_fn, x, y, t_k, t_next, path=path, **(params or {}))
    return x
