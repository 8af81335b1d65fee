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
class MeanFlowObjective(MeanFlowConfig):
    """MeanFlow with the JVP target (method.md section 4): the CFM term on ``r = t`` samples and
    the average velocity over ``(r, t)`` on the others, weighted by the curriculum's ``w_mf``.
    With ``weight_final = 0`` it is CFM (no JVP is ever computed)."""

    def __post_init__(self) -> None:
        self._auto_jvp = AutoJvp()  # jvp_impl=auto: which implementation works, found once

    @property
    def learns_average_velocity(self) -> bool:
        """Whether the network learns spans (r < t), so the one-step jump ``euler_mf`` applies."""
        return self.weight_final > 0

    def weight_at(self, progress: float, curriculum: CurriculumConfig) -> float:
        """``w_mf`` at this point of training, 0 while the MeanFlow term is skipped."""
        return _switched(mf_weight(progress, weight_final=self.weight_final, cfg=curriculum), curriculum)

    def __call__(self, net_fn: NetFn, batch: PathBatch, curriculum: CurriculumConfig) -> LossOutput:
        cur = curriculum
        w_logged = mf_weight(batch.progress, weight_final=self.weight_final, cfg=cur)
        w_mf = _switched(w_logged, cur)
        gamma = gamma_at(batch.progress, cur)
        kw = dict(x_t=batch.x_t, y=batch.y, t=batch.t, v=batch.v, cfg=self)
        if self.formulation == "two_pass":
            r = sample_r(batch.t, gamma=gamma, p_equal=cur.p_r_equals_t, r_min=cur.r_min)
            out = two_pass_loss(net_fn, r=r, w_mf=w_mf, auto=self._auto_jvp, **kw)
        else:
            p_equal = single_pass_p_equal(w_mf, cur.p_r_equals_t)
            r = sample_r(batch.t, gamma=gamma, p_equal=p_equal, r_min=cur.r_min)
            with_jvp = w_mf > 0 and bool((r < batch.t).any())
            out = single_pass_loss(net_fn, r=r, with_jvp=with_jvp, auto=self._auto_jvp, **kw)
        out.logs.update(w_mf=w_logged, gamma=gamma)
        return out


OBJECTIVES = {  # name -> class; config.py registers each as the schema `schema/objective/<name>`
    "cfm": CFMObjective,
    "meanflow": MeanFlowObjective,
}
