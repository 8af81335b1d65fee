"""r sampling and schedules follow their config (issue 3, point 5)."""

import pytest
import torch

from meanflowse.method.curriculum import (
    CurriculumConfig,
    gamma_at,
    mf_weight,
    sample_r,
    sample_t,
    single_pass_p_equal,
)
from meanflowse.method.path import PathConfig

N = 200_000


def test_times_lie_in_the_training_range():
    path = PathConfig()
    for sampler in ("uniform", "logit_normal"):
        t = sample_t(N, cfg=CurriculumConfig(time_sampler=sampler), path=path)
        assert t.min() > path.t_eps and t.max() <= path.T_rev
    t = sample_t(N, cfg=CurriculumConfig(), path=path)
    assert abs(t.mean().item() - (path.t_eps + path.T_rev) / 2) < 0.005
    ln = sample_t(N, cfg=CurriculumConfig(time_sampler="logit_normal", logit_normal_mean=-0.4), path=path)
    assert ln.median() < 0.5  # a negative mean puts most times below the middle


@pytest.mark.parametrize("p_equal", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("r_min", [0.0, 0.03])
def test_r_fraction_and_lower_bound(p_equal, r_min):
    t = torch.rand(N) * 0.97 + 0.03
    r = sample_r(t, gamma=1.0, p_equal=p_equal, r_min=r_min)
    assert abs((r == t).float().mean().item() - p_equal) < 0.005
    assert (r >= r_min - 1e-7).all() and (r <= t).all()


def test_r_can_reach_zero_only_when_allowed():
    t = torch.ones(N)
    assert sample_r(t, gamma=1.0, p_equal=0.0, r_min=0.0).min() < 1e-3
    assert sample_r(t, gamma=1.0, p_equal=0.0, r_min=0.03).min() >= 0.03 - 1e-7


def test_larger_gamma_keeps_r_near_t():
    t = torch.ones(N)
    gap = {g: (t - sample_r(t, gamma=g, p_equal=0.0, r_min=0.0)).mean().item() for g in (1.0, 8.0)}
    assert abs(gap[1.0] - 0.5) < 0.01  # E[U] = 1/2
    assert abs(gap[8.0] - 1 / 9) < 0.01  # E[U**8] = 1/9


def test_schedules_by_progress():
    cfg = CurriculumConfig()
    assert mf_weight(0.0, weight_final=0.25, cfg=cfg) == 0.0
    assert mf_weight(0.25, weight_final=0.25, cfg=cfg) == pytest.approx(0.125)
    assert mf_weight(0.9, weight_final=0.25, cfg=cfg) == 0.25
    assert gamma_at(0.0, cfg) == 8.0 and gamma_at(0.35, cfg) == pytest.approx(4.5)
    assert gamma_at(1.0, cfg) == 1.0
    assert single_pass_p_equal(0.0, 0.1) == 1.0
    assert single_pass_p_equal(0.25, 0.1) == pytest.approx(0.775)


def test_lr_factor_warmup_and_cosine_closed_form():
    from meanflowse.method.curriculum import lr_factor

    cfg = CurriculumConfig(lr_warmup_steps=10, lr_decay="cosine", lr_final_frac=0.1)
    assert lr_factor(0, total=110, cfg=cfg) == pytest.approx(0.1)  # (0 + 1) / 10 of warm-up
    assert lr_factor(9, total=110, cfg=cfg) == pytest.approx(1.0)  # warm-up done, cosine at 0
    assert lr_factor(60, total=110, cfg=cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down
    assert lr_factor(110, total=110, cfg=cfg) == pytest.approx(0.1)  # the floor at the end
    assert lr_factor(500, total=110, cfg=cfg) == pytest.approx(0.1)
    const = CurriculumConfig()
    assert all(lr_factor(s, total=100, cfg=const) == 1.0 for s in (0, 50, 99))
    with pytest.raises(ValueError, match="curriculum.lr_decay"):
        lr_factor(0, total=10, cfg=CurriculumConfig(lr_decay="linear"))


def test_cosine_schedule_drives_the_optimizer_and_needs_a_finite_budget(tmp_path):
    from helpers import TINY, compose_cfg
    from meanflowse.training.fit import train

    cfg = compose_cfg(
        "train",
        [
            *TINY,
            "curriculum.lr_decay=cosine",
            "curriculum.lr_warmup_steps=2",
            "trainer.max_steps=6",
            "optim.lr=0.01",
        ],
        tmp_path,
    )
    _, objects = train(cfg)
    lr = objects["trainer"].optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.01 * 0.01)  # the floor after the last of the 6 steps
    cfg = compose_cfg(
        "train",
        [*TINY, "curriculum.lr_decay=cosine", "trainer.max_steps=-1", "trainer.max_epochs=-1"],
        tmp_path / "b",
    )
    with pytest.raises(ValueError, match="finite step budget"):
        train(cfg)


def test_curriculum_follows_max_epochs_when_there_is_no_max_steps(tmp_path, monkeypatch):
    """trainer.max_epochs=3, max_steps=-1: the step budget is epochs x batches per epoch
    (4 synthetic training files, batch 2: 2 steps an epoch, 6 steps), progress runs 0, 1/6, ...,
    5/6 over the steps and reaches 1 at the end, and w_mf and gamma reach their end values
    (w_mf ramps over half the budget, gamma over 70%)."""
    import meanflowse.method.objectives as lit
    from helpers import TINY, compose_cfg
    from meanflowse.training.fit import train

    seen = []
    real_weight, real_gamma = lit.mf_weight, lit.gamma_at
    monkeypatch.setattr(
        lit, "mf_weight", lambda p, **kw: seen.append(["w", p, real_weight(p, **kw)]) or seen[-1][2]
    )
    monkeypatch.setattr(
        lit, "gamma_at", lambda p, cfg: seen.append(["g", p, real_gamma(p, cfg)]) or seen[-1][2]
    )
    cfg = compose_cfg(
        "train",
        [
            *TINY,
            "trainer.max_steps=-1",
            "trainer.max_epochs=3",
            "trainer.limit_val_batches=0",
            "trainer.num_sanity_val_steps=0",
            "callbacks.progress=null",
            "callbacks.val_metrics=null",
            "mf.weight_final=0.25",
            "curriculum.mf_warmup_frac=0.5",
            "curriculum.gamma_start=8.0",
            "curriculum.gamma_end=1.0",
            "curriculum.gamma_anneal_frac=0.7",
        ],
        tmp_path,
    )
    metrics, objects = train(cfg)
    module, trainer = objects["module"], objects["trainer"]
    assert trainer.global_step == 6 and module.step_budget() == 6
    progress = [p for kind, p, _ in seen if kind == "w"]
    assert progress == pytest.approx([k / 6 for k in range(6)])
    assert module.progress() == 1.0  # after the last step
    weights = [w for kind, _, w in seen if kind == "w"]
    gammas = [g for kind, _, g in seen if kind == "g"]
    assert weights[0] == 0.0 and weights[-1] == 0.25 and weights[3] == 0.25  # ramp done at 1/2
    assert weights[1] == pytest.approx(0.25 * (1 / 6) / 0.5)
    assert gammas[0] == 8.0 and gammas[-1] == 1.0  # 5/6 > 0.7
    assert metrics["train/w_mf"] == 0.25 and metrics["train/gamma"] == 1.0
    assert metrics["train/progress"] == pytest.approx(5 / 6)
    assert "train/jvp_norm" in metrics  # the MeanFlow branch (and its JVP) ran
