"""The training objectives as parts a config chooses (``configs/mf_objective/<name>.yaml``).

An objective is a dataclass of its settings (the YAML's keys, type-checked by its schema) with
one method: a batch on the probability path in, the loss and its logs out. The math lives in
:mod:`meanflowse.method.objective` as pure functions; a class here only chooses and combines
them. Adding an objective is one class here, listed in :data:`OBJECTIVES`, and one YAML that
names it (``_target_`` and ``/schema/objective/<name>``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from meanflowse.method.curriculum import CurriculumConfig, gamma_at, mf_weight, sample_r, single_pass_p_equal
from meanflowse.method.jvp import AutoJvp, NetFn
from meanflowse.method.objective import (
    LossOutput,
    MeanFlowConfig,
    ObjectiveConfig,
    cfm_loss,
    single_pass_loss,
    split_loss,
    two_pass_loss,
)


@dataclass
class PathBatch:
    """One training batch on the path, drawn by the LightningModule for every objective alike."""

    x_t: Tensor  # the state at time t, [B, 2, F, T]
    y: Tensor  # the noisy condition
    t: Tensor  # [B] times in (t_eps, T_rev]
    v: Tensor  # the conditional velocity dx_t/dt
    progress: float  # training progress in [0, 1] (step / total steps): the schedules' clock
    t_min: float = 0.0  # the lowest time training draws (path.t_eps)


@dataclass
class CFMObjective(ObjectiveConfig):
    """Conditional flow matching: ``u(x_t, t, t | y)`` regresses ``v`` on every sample. The model
    learns the instantaneous velocity only, so it samples with ``euler`` (several steps)."""

    @property
    def learns_average_velocity(self) -> bool:
        return False

    def __call__(self, net_fn: NetFn, batch: PathBatch, curriculum: CurriculumConfig) -> LossOutput:
        loss = cfm_loss(net_fn, x_t=batch.x_t, y=batch.y, t=batch.t, v=batch.v, cfg=self)
        return LossOutput(loss, {"loss_cfm": loss.item()})


def _switched(w_mf: float, curriculum: CurriculumConfig) -> float:
    """``w_mf``, or 0 while it is below ``mf_skip_below`` (the MeanFlow term and its JVP skipped)."""
    return w_mf if w_mf > 0 and w_mf >= curriculum.mf_skip_below else 0.0


@dataclass
class _Schedule:
    """Where the curriculum stands at one step: the span weight and the ``r`` draw's exponent."""

    w_logged: float  # w_mf as the ramp gives it
    w_mf: float  # 0 while below mf_skip_below
    gamma: float

    @classmethod
    def at(cls, weight_final: float, progress: float, cur: CurriculumConfig) -> "_Schedule":
        w = mf_weight(progress, weight_final=weight_final, cfg=cur)
        return cls(w_logged=w, w_mf=_switched(w, cur), gamma=gamma_at(progress, cur))

    def single_pass_r(self, t: Tensor, cur: CurriculumConfig) -> Tensor:
        """``r = t`` with probability ``(1 - w) + w p`` (those samples are the CFM term), else a
        span ``r = t - U^gamma (t - r_min)``."""
        p_equal = single_pass_p_equal(self.w_mf, cur.p_r_equals_t)
        return sample_r(t, gamma=self.gamma, p_equal=p_equal, r_min=cur.r_min)

    def logs(self) -> dict[str, float]:
        return {"w_mf": self.w_logged, "gamma": self.gamma}


class _SpanWeighted:
    """What objectives with a span term weighted by the curriculum (``weight_final``) share."""

    weight_final: float

    @property
    def learns_average_velocity(self) -> bool:
        """Whether the network learns spans (r < t), so the one-step jump ``euler_mf`` applies."""
        return self.weight_final > 0

    def weight_at(self, progress: float, curriculum: CurriculumConfig) -> float:
        """The span weight ``w_mf`` at this point of training, 0 while spans are skipped."""
        return _Schedule.at(self.weight_final, progress, curriculum).w_mf


@dataclass
class MeanFlowObjective(_SpanWeighted, MeanFlowConfig):
    """MeanFlow with the JVP target (method.md section 4): the CFM term on ``r = t`` samples and
    the average velocity over ``(r, t)`` on the others, weighted by the curriculum's ``w_mf``.
    With ``weight_final = 0`` it is CFM (no JVP is ever computed)."""

    def __post_init__(self) -> None:
        self._auto_jvp = AutoJvp()  # jvp_impl=auto: which implementation works, found once

    @property
    def tangent_mix(self) -> float:
        """The conditional velocity's share of the JVP tangent: 1 here (MeanFlow's tangent)."""
        return 1.0

    def __call__(self, net_fn: NetFn, batch: PathBatch, curriculum: CurriculumConfig) -> LossOutput:
        cur, now = curriculum, _Schedule.at(self.weight_final, batch.progress, curriculum)
        kw = dict(x_t=batch.x_t, y=batch.y, t=batch.t, v=batch.v, cfg=self, auto=self._auto_jvp)
        if self.formulation == "two_pass":
            r = sample_r(batch.t, gamma=now.gamma, p_equal=cur.p_r_equals_t, r_min=cur.r_min)
            out = two_pass_loss(net_fn, r=r, w_mf=now.w_mf, tangent_mix=self.tangent_mix, **kw)
        else:
            r = now.single_pass_r(batch.t, cur)
            with_jvp = now.w_mf > 0 and bool((r < batch.t).any())
            out = single_pass_loss(net_fn, r=r, with_jvp=with_jvp, tangent_mix=self.tangent_mix, **kw)
        out.logs.update(now.logs())
        return out


@dataclass
class ImprovedMeanFlowObjective(MeanFlowObjective):
    """Improved MeanFlow (iMF; Geng et al. 2025, arXiv 2512.02012): the JVP's tangent is the
    network's own instantaneous velocity ``u(x_t, t, t | y)`` (one forward without gradient)
    instead of the conditional velocity, whose prior noise made the target high-variance.

    ``beta`` mixes the two tangents, ``beta v + (1 - beta) u(x_t, t, t)``: 0 is iMF, 1 the
    original MeanFlow ("On Variance Reduction in Learning Mean Flows", arXiv 2605.09235, reads
    the conditional velocity as a control variate and derives the best mix). The loss is
    MeanFlow's with that target, which is iMF's "v-loss" ``|u + c (t - r) sg(du/dt) - v|^2``
    rearranged; iMF uses the pure identity, ``c = 1``.
    """

    first_order_coef: float = 1.0
    beta: float = 0.0

    @property
    def tangent_mix(self) -> float:
        return self.beta

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"mf.beta={self.beta!r}: must be in [0, 1] (0 iMF, 1 MeanFlow)")


@dataclass
class SplitMeanFlowObjective(_SpanWeighted, ObjectiveConfig):
    """SplitMeanFlow (Guo et al. 2025, arXiv 2507.16884): no JVP. A span sample ``r < t`` is
    split at ``s = t - lam (t - max(r, t_eps))``, ``lam ~ U(0, 1)``, and ``u(x_t, r, t)`` regresses the
    interval-additivity target ``((s - r) u(z_s, r, s) + (t - s) u(x_t, s, t)) / (t - r)`` with
    ``z_s = x_t - (t - s) u(x_t, s, t)`` (two passes without gradient); ``r = t`` samples regress
    ``v``, the flow-matching boundary. The ``r`` draw and its schedule are the MeanFlow single
    pass's, so the boundary share is ``(1 - w) + w p`` (55% at the default end weight 0.5 and
    ``p_r_equals_t`` 0.1; the paper trains 25-50% of samples on the boundary)."""

    weight_final: float = 0.5  # final span weight w; 0 trains the boundary alone (CFM)

    def __call__(self, net_fn: NetFn, batch: PathBatch, curriculum: CurriculumConfig) -> LossOutput:
        now = _Schedule.at(self.weight_final, batch.progress, curriculum)
        r = now.single_pass_r(batch.t, curriculum)
        kw = dict(x_t=batch.x_t, y=batch.y, t=batch.t, r=r, v=batch.v, cfg=self, s_min=batch.t_min)
        out = split_loss(net_fn, **kw)
        out.logs.update(now.logs())
        return out


OBJECTIVES = {  # name -> class; config.py registers each as the schema `schema/objective/<name>`
    "cfm": CFMObjective,
    "meanflow": MeanFlowObjective,
    "imf": ImprovedMeanFlowObjective,
    "split": SplitMeanFlowObjective,
}
