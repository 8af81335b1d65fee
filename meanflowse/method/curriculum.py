"""Time sampling and training schedules (method.md section 4), as pure functions.

Schedules take ``progress`` in [0, 1] (global step / total steps), so they work the same with
``trainer.max_steps`` and ``trainer.max_epochs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from meanflowse.method.path import PathConfig

TIME_SAMPLERS = ("uniform", "logit_normal")
LR_DECAYS = ("constant", "cosine")


@dataclass
class CurriculumConfig:
    mf_warmup_frac: float = 0.5  # w_mf rises linearly 0 -> mf.weight_final over this fraction
    mf_skip_below: float = 0.05  # MeanFlow branch (and its JVP) skipped while w_mf is below
    gamma_start: float = 8.0  # r = t - U**gamma (t - r_min): large gamma keeps r near t
    gamma_end: float = 1.0
    gamma_anneal_frac: float = 0.7
    p_r_equals_t: float = 0.1  # fraction of MeanFlow samples forced to r = t
    time_sampler: str = "uniform"  # uniform (reference) | logit_normal (Geng et al. 2025)
    logit_normal_mean: float = -0.4
    logit_normal_std: float = 1.0
    r_min: float = 0.03  # lower bound of r: t_eps (reference) or 0 (strict 1 -> 0 jump)
    lr_warmup_steps: int = 0  # learning rate rises linearly from 0 over these steps
    lr_decay: str = "constant"  # constant (reference) | cosine: down to lr_final_frac x lr
    lr_final_frac: float = 0.01  #   at the last step of the budget


def _ramp(progress: float, frac: float) -> float:
    return 1.0 if frac <= 0 else min(max(progress / frac, 0.0), 1.0)


def mf_weight(progress: float, *, weight_final: float, cfg: CurriculumConfig) -> float:
    """MeanFlow loss weight ``w_mf`` at this point of training."""
    return weight_final * _ramp(progress, cfg.mf_warmup_frac)


def gamma_at(progress: float, cfg: CurriculumConfig) -> float:
    a = _ramp(progress, cfg.gamma_anneal_frac)
    return cfg.gamma_start + a * (cfg.gamma_end - cfg.gamma_start)


def sample_t(
    n: int, *, cfg: CurriculumConfig, path: PathConfig, device=None, generator: torch.Generator | None = None
) -> Tensor:
    """Training times in ``(t_eps, T_rev]``."""
    if cfg.time_sampler == "uniform":
        s = 1.0 - torch.rand(n, device=device, generator=generator)  # (0, 1]
    elif cfg.time_sampler == "logit_normal":
        g = torch.randn(n, device=device, generator=generator)
        s = torch.sigmoid(cfg.logit_normal_mean + cfg.logit_normal_std * g)
    else:
        raise ValueError(f"curriculum.time_sampler={cfg.time_sampler!r}; use one of {TIME_SAMPLERS}")
    return path.t_eps + (path.T_rev - path.t_eps) * s


def sample_r(
    t: Tensor, *, gamma: float, p_equal: float, r_min: float, generator: torch.Generator | None = None
) -> Tensor:
    """``r = t - U**gamma (t - r_min)``; with probability ``p_equal`` exactly ``r = t``."""
    u = torch.rand(t.shape, device=t.device, generator=generator)
    r = t - u.pow(gamma) * (t - r_min).clamp_min(0.0)
    equal = torch.rand(t.shape, device=t.device, generator=generator) < p_equal
    return torch.where(equal, t, r)


def single_pass_p_equal(w_mf: float, p_r_equals_t: float) -> float:
    """Probability of ``r = t`` in the single-pass objective.

    The reference loss is ``(1 - w) L_cfm + w L_mf`` with a fraction ``p`` of ``r = t`` inside
    ``L_mf``. Drawing ``r = t`` with probability ``(1 - w) + w p`` gives the same expected loss
    with one network pass per sample: the ``r = t`` samples *are* the CFM term.
    """
    return (1.0 - w_mf) + w_mf * p_r_equals_t


def lr_factor(step: int, *, total: float, cfg: CurriculumConfig) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` of ``total``."""
    if cfg.lr_decay not in LR_DECAYS:
        raise ValueError(f"curriculum.lr_decay={cfg.lr_decay!r}; use one of {LR_DECAYS}")
    warm = min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps > 0 else 1.0
    if cfg.lr_decay == "constant":
        return warm
    span = max(total - cfg.lr_warmup_steps, 1)
    done = min(max(step - cfg.lr_warmup_steps, 0) / span, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * done))
    return warm * (cfg.lr_final_frac + (1.0 - cfg.lr_final_frac) * cosine)
