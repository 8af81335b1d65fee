"""The CFM and MeanFlow objectives (method.md section 4), as pure functions of tensors.

``net_fn(x_t, y, t, r)`` returns the average velocity ``u(x_t, r, t | y)``; states are real
``[B, 2, F, T]``. The MeanFlow target is ``stopgrad(v - c (t - r) du/dt)``; at ``r = t`` it is
``v``, so the loss reduces exactly to conditional flow matching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch
from torch import Tensor

from meanflowse.method.jvp import (
    JVP_CLIP_MODES,
    JVP_IMPLS,
    AutoJvp,
    NetFn,
    clip_per_sample,
    jvp_autograd,
    jvp_fd,
    jvp_func,
)
from meanflowse.method.parametrization import PARAMETRIZATIONS, loss_weight
from meanflowse.method.path import expand_time

LOSSES = ("mse", "mae")
FORMULATIONS = ("single_pass", "two_pass")
NAN_POLICIES = ("raise", "skip")


@dataclass
class ObjectiveConfig:
    """The settings every objective has: how a per-sample error becomes the loss, what a NaN
    does, and what the network outputs."""

    loss: str = "mse"  # mse: 0.5 sum |err|^2 per sample; mae: sum |err|
    adaptive_p: float = 0.0  # adaptive weighting loss / sg(loss + eps)**p (0 = off)
    adaptive_eps: float = 1e-3
    adaptive_bands: int = 1  # > 1: the weighting per octave band of the frequency axis, not per
    #                          sample (the top half of the bins, the quarter below, ...), so a
    #                          band's error counts by its size relative to that band, as ESTOI's
    #                          per-band correlations do, not by its share of the spectrum's energy
    nan_policy: str = "raise"  # raise | skip: what a NaN/Inf in the loss or JVP does
    parametrization: str = "velocity"  # velocity: the backbone outputs u (ref); data: it outputs
    #                                    F, x0_hat = y + F, u = (x_t - x0_hat) / t, and the loss
    #                                    is weighted to the x0 scale (mse x t^2, mae x t)

    # key -> allowed values, checked by check() (subclasses add theirs)
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "loss": LOSSES,
        "nan_policy": NAN_POLICIES,
        "parametrization": PARAMETRIZATIONS,
    }

    def check(self) -> None:
        """Refuse an unknown choice before any training, naming the key and the allowed values."""
        for key, allowed in self.CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"mf.{key}={getattr(self, key)!r}; use one of {allowed}")
        bands = self.adaptive_bands
        if not isinstance(bands, int) or bands < 1 or (bands > 1 and self.adaptive_p == 0):
            raise ValueError(
                f"mf.adaptive_bands={self.adaptive_bands}: use 1, or more than 1 with mf.adaptive_p > 0"
            )


@dataclass
class MeanFlowConfig(ObjectiveConfig):
    first_order_coef: float = 0.5  # c: 0.5 trapezoid-like (reference), 1.0 the pure identity
    weight_final: float = 0.25  # final MeanFlow weight w_mf; 0 gives plain CFM
    jvp_impl: str = "func"  # func | autograd | fd | auto
    jvp_eps: float = 1e-3  # fd: relative step
    jvp_chunk: Optional[int] = None  # fd: samples per network call (None = whole batch)
    jvp_clip: Optional[float] = 5.0  # per-sample clip of the JVP (None disables)
    jvp_clip_mode: str = "norm"  # norm: jvp_clip bounds the L2 norm (ref); rms: the RMS
    #                                   per element (the same bound at any crop size)
    jvp_reuse_primal: bool = False  # func/auto: take the prediction from the JVP's primal output
    #                                   (no extra forward, several times the activation memory)
    formulation: str = "single_pass"  # single_pass (r=t samples are the CFM term) | two_pass (ref)

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        **ObjectiveConfig.CHOICES,
        "jvp_impl": JVP_IMPLS,
        "jvp_clip_mode": JVP_CLIP_MODES,
        "formulation": FORMULATIONS,
    }


class NonFiniteError(FloatingPointError):
    """A NaN or Inf in a loss term or the JVP; the message names the term."""


@dataclass
class LossOutput:
    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


def per_sample_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """``0.5 * sum |err|^2`` (mse) or ``sum |err|`` (mae, complex modulus) per sample."""
    err = pred - target
    if kind == "mse":
        return 0.5 * err.pow(2).flatten(1).sum(1)
    if kind == "mae":  # |Re + j Im| of each bin; the small floor keeps the gradient finite at 0
        return (err.pow(2).sum(1) + 1e-12).sqrt().flatten(1).sum(1)
    raise ValueError(f"mf.loss={kind!r}; use one of {LOSSES}")


def octave_band_loss(pred: Tensor, target: Tensor, kind: str, bands: int) -> Tensor:
    """:func:`per_sample_loss` split into ``bands`` octave bands of the frequency axis (dim 2 of
    ``(batch, re/im, freq, time)``): the top half of the bins, the quarter below, ..., and the
    lowest band down to DC. Shape ``(batch, bands)``, low to high; the bands sum to the per-sample loss."""
    n = pred.shape[2]
    if n >> (bands - 1) < 1:
        most = n.bit_length()
        raise ValueError(
            f"mf.adaptive_bands={bands}: {n} frequency bins hold {most} octave bands; set it <= {most}"
        )
    edges = [0, *(n >> k for k in range(bands - 1, 0, -1)), n]
    return torch.stack(
        [per_sample_loss(pred[:, :, a:b], target[:, :, a:b], kind) for a, b in zip(edges, edges[1:])], 1
    )


def adaptive_weighting(per_sample: Tensor, *, p: float, eps: float) -> Tensor:
    """``loss / stopgrad(loss + eps)**p`` (MeanFlow paper); identity for ``p = 0``."""
    if p == 0:
        return per_sample
    return per_sample / (per_sample.detach() + eps).pow(p)


def _check_finite(name: str, x: Tensor) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"non-finite values in {name}")


def mean_flow_target(
    net_fn: NetFn,
    *,
    x_t: Tensor,
    y: Tensor,
    t: Tensor,
    r: Tensor,
    v: Tensor,
    cfg: MeanFlowConfig,
    auto: AutoJvp | None = None,
    tangent_mix: float = 1.0,
) -> tuple[Tensor | None, Tensor, dict[str, float]]:
    """The MeanFlow target ``v - c (t - r) clip(du/dt)`` (no gradient).

    ``du/dt`` is the derivative along the tangent ``(w, 1)`` in ``(x_t, t)``, with
    ``w = beta v + (1 - beta) u(x_t, t, t)`` for ``beta = tangent_mix``: 1 is MeanFlow's
    conditional velocity, 0 the network's own predicted velocity (no gradient; Improved
    MeanFlow, Geng et al. 2025), which removes the prior's noise from the tangent.

    Returns ``(u, target, logs)``; ``u`` is the prediction with its graph when the JVP produced
    it on the way (``func``), else ``None`` and the caller runs an ordinary forward.
    """
    logs: dict[str, float] = {}
    u = None
    # The JVP, and the predicted tangent it follows, are computed in fp32 whatever the
    # surrounding autocast says.
    with torch.autocast(x_t.device.type, enabled=False):
        tangent = v
        if tangent_mix != 1.0:
            tangent = predicted_tangent(net_fn, x_t=x_t, y=y, t=t, v=v, mix=tangent_mix)
            with torch.no_grad():
                cos = torch.nn.functional.cosine_similarity(tangent.flatten(1), v.flatten(1), dim=1)
                logs["tangent_cos"] = cos.mean().item()
        kw = dict(x_t=x_t, y=y, t=t, r=r, v=tangent)
        if cfg.jvp_impl == "func":
            u, dudt = jvp_func(net_fn, **kw, reuse_primal=cfg.jvp_reuse_primal)
        elif cfg.jvp_impl == "autograd":
            dudt = jvp_autograd(net_fn, **kw)
        elif cfg.jvp_impl == "fd":
            dudt = jvp_fd(net_fn, **kw, eps_rel=cfg.jvp_eps, chunk=cfg.jvp_chunk)
        elif cfg.jvp_impl == "auto":
            u, dudt = (auto or AutoJvp())(
                net_fn, **kw, eps_rel=cfg.jvp_eps, chunk=cfg.jvp_chunk, reuse_primal=cfg.jvp_reuse_primal
            )
        else:
            raise ValueError(f"mf.jvp_impl={cfg.jvp_impl!r}; use one of {JVP_IMPLS}")
    dudt = dudt.detach()
    _check_finite("the JVP du/dt", dudt)
    # Logged before the clip, so that a bound can be chosen from them (norm and rms modes).
    norms = dudt.flatten(1).norm(dim=1)
    logs["jvp_norm"] = norms.mean().item()
    logs["jvp_rms"] = (norms / dudt.flatten(1).shape[1] ** 0.5).mean().item()
    dudt, clipped = clip_per_sample(dudt, cfg.jvp_clip, mode=cfg.jvp_clip_mode)
    target = v - cfg.first_order_coef * expand_time(t - r, v) * dudt
    logs["jvp_clip_rate"] = clipped.float().mean().item()
    return u, target.detach(), logs


@torch.no_grad()
def predicted_tangent(net_fn: NetFn, *, x_t: Tensor, y: Tensor, t: Tensor, v: Tensor, mix: float) -> Tensor:
    """``mix v + (1 - mix) u(x_t, t, t | y)``: the conditional velocity blended with the network's
    own instantaneous velocity (one forward, no gradient; the blend is skipped at ``mix = 1``)."""
    if mix == 1.0:
        return v
    predicted = net_fn(x_t, y, t, t).to(v.dtype)
    return predicted if mix == 0.0 else mix * v + (1.0 - mix) * predicted


@torch.no_grad()
def split_target(net_fn: NetFn, *, x_t: Tensor, y: Tensor, t: Tensor, r: Tensor, s: Tensor) -> Tensor:
    """SplitMeanFlow's target for ``u(x_t, r, t)``, with ``r < s < t`` (Guo et al. 2025): the
    interval split at ``s``, ``(t - r) u(x_t, r, t) = (s - r) u(z_s, r, s) + (t - s) u(x_t, s, t)``
    with ``z_s = x_t - (t - s) u(x_t, s, t)``, the right-hand side taken without gradient. Two
    network passes and no JVP."""
    u_late = net_fn(x_t, y, t, s)
    z_s = x_t - expand_time(t - s, x_t) * u_late
    u_early = net_fn(z_s, y, s, r)
    late_share = expand_time((t - s) / (t - r), x_t)
    return (1.0 - late_share) * u_early + late_share * u_late


def _reduce(pred: Tensor, target: Tensor, t: Tensor, cfg: ObjectiveConfig) -> Tensor:
    """Per-sample loss, times the parametrization's time weight (data: t^2 mse, t mae), then
    adaptive weighting (per octave band and averaged over the bands with ``adaptive_bands > 1``)."""
    weight = loss_weight(t, kind=cfg.parametrization, loss=cfg.loss)
    if cfg.adaptive_bands > 1:
        per = octave_band_loss(pred, target, cfg.loss, cfg.adaptive_bands)
        if weight is not None:
            per = per * weight.to(per.dtype)[:, None]
        eps = cfg.adaptive_eps / cfg.adaptive_bands  # a loss split evenly weighs as the per-sample one
        return adaptive_weighting(per, p=cfg.adaptive_p, eps=eps).mean(1)
    per = per_sample_loss(pred, target, cfg.loss)
    if weight is not None:
        per = per * weight.to(per.dtype)
    return adaptive_weighting(per, p=cfg.adaptive_p, eps=cfg.adaptive_eps)


def cfm_loss(net_fn: NetFn, *, x_t: Tensor, y: Tensor, t: Tensor, v: Tensor, cfg: ObjectiveConfig) -> Tensor:
    """Conditional flow matching: ``loss(u(x_t, t, t | y), v)``, batch mean."""
    loss = _reduce(net_fn(x_t, y, t, t), v, t, cfg).mean()
    _check_finite("the CFM loss", loss)
    return loss


def single_pass_loss(
    net_fn: NetFn,
    *,
    x_t: Tensor,
    y: Tensor,
    t: Tensor,
    r: Tensor,
    v: Tensor,
    cfg: MeanFlowConfig,
    with_jvp: bool = True,
    auto: AutoJvp | None = None,
    tangent_mix: float = 1.0,
) -> LossOutput:
    """One network pass per sample: ``r = t`` samples regress ``v`` (the CFM term), the others
    the MeanFlow target. ``with_jvp=False`` is plain CFM without the JVP.

    The JVP runs on the ``r < t`` samples only: at ``r = t`` the target is ``v`` whatever the
    JVP, and late in the reference curriculum only ``w (1 - p) = 22.5%`` of samples need it.
    """
    logs: dict[str, float] = {}
    u, target = None, v
    needs_jvp = r < t
    if with_jvp and bool(needs_jvp.any()):
        idx = needs_jvp.nonzero(as_tuple=True)[0]
        u_mf, target_mf, logs = mean_flow_target(
            net_fn,
            x_t=x_t[idx],
            y=y[idx],
            t=t[idx],
            r=r[idx],
            v=v[idx],
            cfg=cfg,
            auto=auto,
            tangent_mix=tangent_mix,
        )
        target = v.index_put((idx,), target_mf)
        if u_mf is not None:  # the JVP's primal output (jvp_reuse_primal): forward the rest only
            rest = (~needs_jvp).nonzero(as_tuple=True)[0]
            u = torch.zeros_like(v).index_put((idx,), u_mf)
            if len(rest):
                u = u.index_put((rest,), net_fn(x_t[rest], y[rest], t[rest], r[rest]))
    if u is None:
        u = net_fn(x_t, y, t, r)
    return _span_loss(_reduce(u, target, t, cfg), r=r, t=t, name="the MeanFlow loss", logs=logs)


def _span_loss(per: Tensor, *, r: Tensor, t: Tensor, name: str, logs: dict[str, float]) -> LossOutput:
    """The batch mean of per-sample losses, with the ``r = t`` (CFM) and span samples' means
    logged apart."""
    loss = per.mean()
    _check_finite(name, loss)
    equal = r == t
    logs["frac_r_eq_t"] = equal.float().mean().item()
    with torch.no_grad():
        if equal.any():
            logs["loss_cfm"] = per[equal].mean().item()
        if (~equal).any():
            logs["loss_mf"] = per[~equal].mean().item()
    return LossOutput(loss, logs)


def split_loss(
    net_fn: NetFn,
    *,
    x_t: Tensor,
    y: Tensor,
    t: Tensor,
    r: Tensor,
    v: Tensor,
    cfg: ObjectiveConfig,
    s_min: float = 0.0,
    generator: torch.Generator | None = None,
) -> LossOutput:
    """SplitMeanFlow with one graded pass per sample: ``r = t`` samples regress ``v`` (the
    flow-matching boundary), the others :func:`split_target` at ``s = t - lam (t - low)``,
    ``lam ~ U(0, 1)``, ``low = max(r, s_min)``: the split time stays within the times training
    draws (``s_min = t_eps``; with ``curriculum.r_min = 0``, ``r`` itself may lie below it). No
    JVP: two passes without gradient on the span samples instead; they run under the surrounding
    autocast (bf16-mixed gives a bf16 target, where MeanFlow's JVP target is fp32)."""
    target = v
    span = (r < t).nonzero(as_tuple=True)[0]
    if len(span):
        t_s, r_s = t[span], r[span]
        lam = torch.rand(len(span), device=t.device, dtype=t.dtype, generator=generator)
        low = r_s.clamp_min(s_min).minimum(t_s)
        s = t_s - lam * (t_s - low)
        split = split_target(net_fn, x_t=x_t[span], y=y[span], t=t_s, r=r_s, s=s)
        _check_finite("the SplitMeanFlow target", split)
        target = v.index_put((span,), split.to(v.dtype))
    u = net_fn(x_t, y, t, r)
    return _span_loss(_reduce(u, target, t, cfg), r=r, t=t, name="the SplitMeanFlow loss", logs={})


def two_pass_loss(
    net_fn: NetFn,
    *,
    x_t: Tensor,
    y: Tensor,
    t: Tensor,
    r: Tensor,
    v: Tensor,
    w_mf: float,
    cfg: MeanFlowConfig,
    auto: AutoJvp | None = None,
    tangent_mix: float = 1.0,
) -> LossOutput:
    """The reference form: ``(1 - w) L_cfm + w L_mf``, a CFM pass plus a MeanFlow pass."""
    l_cfm = cfm_loss(net_fn, x_t=x_t, y=y, t=t, v=v, cfg=cfg)
    if w_mf <= 0:
        return LossOutput(l_cfm, {"loss_cfm": l_cfm.item()})
    mf = single_pass_loss(net_fn, x_t=x_t, y=y, t=t, r=r, v=v, cfg=cfg, auto=auto, tangent_mix=tangent_mix)
    logs = dict(mf.logs, loss_cfm=l_cfm.item(), loss_mf=mf.loss.item())
    return LossOutput((1 - w_mf) * l_cfm + w_mf * mf.loss, logs)
