"""The model as inference needs it, without Lightning: a plain object over the backbone, the
probability path, the parametrization and the sampler settings.

The LightningModule enhances through it (validation), and ``Enhancer`` holds one, built by
:func:`meanflowse.inference.checkpoint.load_model` from a checkpoint's stored config and weights
without importing ``lightning``. It is not an ``nn.Module`` of its own: the backbone stays the
LightningModule's ``backbone`` child, so checkpoints keep their ``backbone.*`` names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from meanflowse.method.parametrization import average_velocity
from meanflowse.method.path import PathConfig, complex_noise_like
from meanflowse.method.samplers import SamplerConfig, resolve_sampler, sample

PREFIX = "backbone."  # the LightningModule's name for the backbone's weights


@dataclass
class InferenceModel:
    """``net_fn`` (the average velocity) and ``enhance_spec`` (a sampler run) over ``backbone``."""

    backbone: nn.Module
    path: PathConfig
    parametrization: str  # mf.parametrization: velocity | data
    sampler_cfg: SamplerConfig
    trained_with_meanflow: bool
    config: dict[str, Any] = field(default_factory=dict)  # the composed config it was trained with

    def net_fn(self, x_t: Tensor, y: Tensor, t: Tensor, r: Tensor) -> Tensor:
        """The average velocity ``u(x_t, r, t | y)``; training calls the same function."""
        out = self.backbone(x_t, y, t, t - r)
        return average_velocity(out, x_t=x_t, y=y, t=t, kind=self.parametrization)

    @torch.no_grad()
    def enhance_spec(
        self,
        y: Tensor,
        *,
        z: Tensor | None = None,
        name: str | None = None,
        nfe: int | None = None,
        t_end: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Tensor:
        """Sample the clean spectrogram given the noisy one with the configured sampler (each of
        ``name``, ``nfe``, ``t_end`` and the sampler's ``params`` overrides the config's)."""
        s = self.sampler_cfg
        name = resolve_sampler(name or s.name, trained_with_meanflow=self.trained_with_meanflow)
        z = complex_noise_like(y) if z is None else z
        return sample(
            self.net_fn,
            y=y,
            z=z,
            name=name,
            nfe=nfe or s.nfe,
            t_end=s.t_end if t_end is None else t_end,
            path=self.path,
            params=dict(s.params or {}) if params is None else params,
        )

    # -- the nn.Module calls the Enhancer makes, on the backbone --------------------------------
    def to(self, *args: Any, **kwargs: Any) -> "InferenceModel":
        self.backbone.to(*args, **kwargs)
        return self

    def eval(self) -> "InferenceModel":
        self.backbone.eval()
        return self

    def named_parameters(self):
        """The backbone's parameters under the LightningModule's names (``backbone.*``)."""
        for name, p in self.backbone.named_parameters():
            yield PREFIX + name, p

    def load_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Weights as the LightningModule saved them (``backbone.*``; nothing else is expected)."""
        others = sorted(k for k in state_dict if not k.startswith(PREFIX))
        if others:
            raise RuntimeError(f"Error(s) in loading state_dict:\n\tunexpected key(s): {others[:5]}")
        self.backbone.load_state_dict({k[len(PREFIX) :]: v for k, v in state_dict.items()})
