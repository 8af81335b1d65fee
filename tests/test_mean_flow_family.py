"""Improved MeanFlow's tangent and SplitMeanFlow's target, against closed forms and MeanFlow."""

import pytest
import torch

from meanflowse.method.objective import (
    MeanFlowConfig,
    cfm_loss,
    mean_flow_target,
    predicted_tangent,
    split_loss,
    split_target,
)
from meanflowse.method.objectives import (
    ImprovedMeanFlowObjective,
    MeanFlowObjective,
    PathBatch,
    SplitMeanFlowObjective,
)
from test_objective import make_batch

NO_CLIP = MeanFlowConfig(first_order_coef=1.0, jvp_clip=None)


class SmoothField(torch.nn.Module):
    """A smooth nonlinear average-velocity network ``u(x_t, r, t | y)`` (the backbone contract
    ``(x_t, y, t, d = t - r)``), in float64."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.a = torch.nn.Parameter(torch.randn(2, 2, generator=g, dtype=torch.float64) * 0.5)

    def forward(self, x_t, y, t, d):
        mix = torch.einsum("ij,bj...->bi...", self.a, x_t)
        time = (t + 0.3 * d)[:, None, None, None]
        return torch.tanh(mix) * (1 + time) + 0.5 * y * torch.sin(3 * time)


def fn_of(net):
    return lambda x_t, y, t, r: net(x_t, y, t, t - r)


def _batch():
    b = make_batch(torch.float64, b=6)
    r = b["t"] * torch.tensor([0.1, 0.5, 0.9, 0.0, 0.3, 0.7], dtype=torch.float64)
    return b, r


@pytest.mark.parametrize("impl", ["func", "autograd"])
def test_imf_target_is_meanflows_when_v_is_the_networks_own_velocity(impl):
    """With the network's velocity equal to v (an exact marginal field seen at a point whose
    conditional velocity is the marginal one) the two tangents coincide, and so do the targets."""
    fn = fn_of(SmoothField())
    b, r = _batch()
    b["v"] = fn(b["x_t"], b["y"], b["t"], b["t"]).detach()
    cfg = MeanFlowConfig(first_order_coef=1.0, jvp_clip=None, jvp_impl=impl)
    _, mf, _ = mean_flow_target(fn, r=r, cfg=cfg, tangent_mix=1.0, **b)
    _, imf, _ = mean_flow_target(fn, r=r, cfg=cfg, tangent_mix=0.0, **b)
    torch.testing.assert_close(imf, mf, rtol=0, atol=1e-12)


def test_beta_mixes_the_two_targets_linearly_and_one_is_meanflow():
    """The JVP is linear in its tangent, so the target at beta is the beta-blend of MeanFlow's
    (beta 1) and iMF's (beta 0); beta 1 skips the extra forward and is MeanFlow exactly."""
    fn = fn_of(SmoothField())
    b, r = _batch()
    targets = {beta: mean_flow_target(fn, r=r, cfg=NO_CLIP, tangent_mix=beta, **b)[1] for beta in (0, 0.3, 1)}
    torch.testing.assert_close(targets[0.3], 0.3 * targets[1] + 0.7 * targets[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(targets[1], mean_flow_target(fn, r=r, cfg=NO_CLIP, **b)[1], rtol=0, atol=0)
    assert not torch.allclose(targets[0], targets[1])  # the tangents differ here


def test_the_predicted_tangent_target_matches_finite_differences():
    """``du/dt`` along ``(u(x_t, t, t), 1)``, read back from the iMF target, against a central
    difference of the network along that direction."""
    fn = fn_of(SmoothField())
    b, r = _batch()
    _, target, _ = mean_flow_target(fn, r=r, cfg=NO_CLIP, tangent_mix=0.0, **b)
    w = predicted_tangent(fn, x_t=b["x_t"], y=b["y"], t=b["t"], v=b["v"], mix=0.0)
    h = 1e-5
    fd = (fn(b["x_t"] + h * w, b["y"], b["t"] + h, r) - fn(b["x_t"] - h * w, b["y"], b["t"] - h, r)) / (2 * h)
    span = (b["t"] - r)[:, None, None, None]
    torch.testing.assert_close(target, b["v"] - span * fd, rtol=1e-7, atol=1e-8)


def linear_flow_average_velocity(a: float):
    """The exact average velocity of ``dx/dt = a x`` (the flow from ``t`` back to ``r``):
    ``u(x_t, r, t) = x_t (1 - exp(a (r - t))) / (t - r)``, and ``a x_t`` at ``r = t``."""

    def fn(x_t, y, t, r):
        d = (t - r)[:, None, None, None]
        safe = torch.where(d > 0, d, torch.ones_like(d))
        span = x_t * (1 - torch.exp(-a * safe)) / safe
        return torch.where(d > 0, span, a * x_t)

    return fn


def test_split_target_is_exact_on_a_linear_flow():
    """The exact average velocity satisfies interval additivity, so its split target is itself
    at any s in (r, t); a field that is not an average velocity is caught."""
    b, r = _batch()
    t = b["t"]
    for s_frac in (0.2, 0.5, 0.9):
        s = r + s_frac * (t - r)
        exact = linear_flow_average_velocity(1.3)
        target = split_target(exact, x_t=b["x_t"], y=b["y"], t=t, r=r, s=s)
        torch.testing.assert_close(target, exact(b["x_t"], b["y"], t, r), rtol=1e-12, atol=1e-12)
    wrong = fn_of(SmoothField())
    s = r + 0.5 * (t - r)
    target = split_target(wrong, x_t=b["x_t"], y=b["y"], t=t, r=r, s=s)
    assert (target - wrong(b["x_t"], b["y"], t, r)).abs().max() > 1e-3


def test_split_loss_at_r_equal_t_is_flow_matching_and_trains_only_the_graded_pass():
    net = SmoothField()
    fn = fn_of(net)
    b, r = _batch()
    at_t = split_loss(fn, r=b["t"].clone(), cfg=NO_CLIP, **b)
    torch.testing.assert_close(at_t.loss, cfm_loss(fn, cfg=NO_CLIP, **b), rtol=0, atol=0)
    spans = split_loss(fn, r=r, cfg=NO_CLIP, generator=torch.Generator().manual_seed(0), **b)
    spans.loss.backward()  # the target passes run without gradient: one graph, the graded pass
    assert net.a.grad is not None and torch.isfinite(net.a.grad).all()
    assert spans.logs["frac_r_eq_t"] == pytest.approx(0.0) and "loss_mf" in spans.logs


@pytest.mark.parametrize("cls", [MeanFlowObjective, ImprovedMeanFlowObjective, SplitMeanFlowObjective])
def test_each_objective_follows_the_curriculum_and_learns_spans(cls):
    """Early in the curriculum (w below mf_skip_below) every sample is r = t; at its end a span
    share appears, and the objective says its model takes the one-step jump."""
    from meanflowse.method.curriculum import CurriculumConfig

    objective = cls(jvp_clip=None) if cls is not SplitMeanFlowObjective else cls()
    assert objective.learns_average_velocity
    fn = fn_of(SmoothField())
    b = make_batch(torch.float64, b=64)
    cur = CurriculumConfig(r_min=0.0)
    torch.manual_seed(0)
    early = objective(fn, PathBatch(**b, progress=0.0), cur)
    late = objective(fn, PathBatch(**b, progress=1.0), cur)
    assert early.logs["frac_r_eq_t"] == 1.0 and early.logs["w_mf"] == 0.0
    assert late.logs["frac_r_eq_t"] < 0.95 and "loss_mf" in late.logs  # spans: (1 - w) + w p of r = t
    assert late.logs["w_mf"] == objective.weight_final
    assert torch.isfinite(late.loss)


def test_imf_refuses_a_beta_outside_zero_one():
    with pytest.raises(ValueError, match="mf.beta"):
        ImprovedMeanFlowObjective(beta=1.5).check()


@pytest.mark.parametrize("objective", ["imf", "split"])
def test_each_objective_trains_through_train_py_and_resumes(tmp_path, objective):
    """Two steps with spans from the first step, then a resume to three from last.ckpt; the
    stored config names the objective, and the shipped sampler is the one-step jump."""
    from helpers import SHORT_TRAIN, compose_cfg
    from meanflowse.inference.checkpoint import load_model
    from meanflowse.training.fit import train

    overrides = [*SHORT_TRAIN, f"mf_objective={objective}", "curriculum.mf_warmup_frac=0.0"]
    metrics, _ = train(compose_cfg("train", overrides, tmp_path / "run"))
    assert metrics["train/w_mf"] > 0 and torch.isfinite(torch.tensor(metrics["train/loss"]))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    more = [*overrides, "trainer.max_steps=3", f"ckpt_path={last}"]
    _, objects = train(compose_cfg("train", more, tmp_path / "more"))
    assert objects["trainer"].global_step == 3
    model, cfg = load_model(last)
    expected = {"imf": "ImprovedMeanFlowObjective", "split": "SplitMeanFlowObjective"}[objective]
    assert cfg.mf._target_.endswith(expected) and model.trained_with_meanflow
