"""Probability path between clean (t=0) and noisy (t=1) spectrograms (method.md section 2).

Pure functions of tensors. States are real ``[B, 2, F, T]`` (Re, Im channels), times ``[B]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PathConfig:
    """``mu_t = (1-t) x + t y``, ``sigma_t = (1-t) sigma_min + t sigma_max``; reference defaults."""

    sigma_min: float = 0.0
    sigma_max: float = 0.487
    t_eps: float = 0.03
    T_rev: float = 1.0


def expand_time(t: Tensor, like: Tensor) -> Tensor:
    """``[B]`` -> ``[B, 1, 1, ...]`` so a per-sample time broadcasts against a state."""
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def complex_noise_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard complex Gaussian in Re/Im channels: each part has variance 1/2.

    This matches ``torch.randn_like`` on a complex tensor, which the reference uses.
    """
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return z * math.sqrt(0.5)


def path_mean(*, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
    tt = expand_time(t, x)
    return (1 - tt) * x + tt * y


def path_std(*, t: Tensor, cfg: PathConfig) -> Tensor:
    return (1 - t) * cfg.sigma_min + t * cfg.sigma_max


def sample_xt(*, x: Tensor, y: Tensor, z: Tensor, t: Tensor, cfg: PathConfig) -> Tensor:
    """``x_t = mu_t + sigma_t z``."""
    return path_mean(x=x, y=y, t=t) + expand_time(path_std(t=t, cfg=cfg), x) * z


def conditional_velocity(*, x: Tensor, y: Tensor, z: Tensor, cfg: PathConfig) -> Tensor:
    """``d x_t / dt = (y - x) + (sigma_max - sigma_min) z``; constant in t for fixed x, y, z."""
    return (y - x) + (cfg.sigma_max - cfg.sigma_min) * z


def prior_sample(*, y: Tensor, z: Tensor, cfg: PathConfig) -> Tensor:
    """The state at ``t = 1``: ``x_1 = y + sigma_max z``."""
    return y + cfg.sigma_max * z
