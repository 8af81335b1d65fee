"""mf.parametrization: the backbone's output as the average velocity (velocity) or as a correction
of the noisy input (data: x0_hat = y + F, u = (x_t - x0_hat) / t), and its loss weighting."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from helpers import TINY, compose_cfg
from meanflowse.method.curriculum import CurriculumConfig
from meanflowse.method.jvp import jvp_autograd, jvp_fd, jvp_func
from meanflowse.method.objective import (
    MeanFlowConfig,
    _reduce,
    cfm_loss,
    mean_flow_target,
    octave_band_loss,
    per_sample_loss,
    single_pass_loss,
)
from meanflowse.method.objectives import MeanFlowObjective
from meanflowse.method.parametrization import average_velocity
from meanflowse.method.path import PathConfig, complex_noise_like, conditional_velocity, sample_xt
from meanflowse.method.samplers import SamplerConfig, sample
from meanflowse.training.lit_module import MeanFlowSEModule

F64 = torch.float64


class FixedOutput(nn.Module):
    """A stub backbone whose output is a fixed F whatever its inputs."""

    frame_multiple = 1

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("out", out)

    def forward(self, x_t, y, t, d):
        return self.out.expand_as(x_t)


def module_of(backbone, **mf):
    return MeanFlowSEModule(
        backbone=backbone,
        path=PathConfig(),
        objective=MeanFlowObjective(**mf),
        curriculum=CurriculumConfig(),
        sampler=SamplerConfig(),
    )


def batch(b=4, f=8, n=6, seed=0):
    """Clean x, noisy y, noise z, times t in [0.05, 0.95], and the path's x_t and v (float64)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, f, n, generator=g, dtype=F64)
    y = x + 0.5 * torch.randn(b, 2, f, n, generator=g, dtype=F64)
    z = complex_noise_like(x, generator=g)
    t = torch.rand(b, generator=g, dtype=F64) * 0.9 + 0.05
    path = PathConfig()
    return dict(
        x=x,
        y=y,
        z=z,
        t=t,
        x_t=sample_xt(x=x, y=y, z=z, t=t, cfg=path),
        v=conditional_velocity(x=x, y=y, z=z, cfg=path),
    )


def test_data_net_fn_is_the_closed_form_and_velocity_is_the_output():
    b = batch()
    out = torch.randn(b["x_t"].shape, dtype=F64)
    r = b["t"] * 0.5
    data = module_of(FixedOutput(out), parametrization="data").net_fn(b["x_t"], b["y"], b["t"], r)
    expected = (b["x_t"] - b["y"] - out) / b["t"][:, None, None, None]
    torch.testing.assert_close(data, expected, rtol=1e-12, atol=1e-14)
    vel = module_of(FixedOutput(out)).net_fn(b["x_t"], b["y"], b["t"], r)  # the default
    assert torch.equal(vel, out)


def test_jvp_through_the_data_net_fn_matches_a_central_difference(tiny_net):
    """All three JVPs differentiate the whole data net_fn, the division by t included."""
    b = batch()
    fn = module_of(tiny_net.double(), parametrization="data").net_fn
    x_t, y, t, v = b["x_t"], b["y"], b["t"], b["v"]
    r = t * 0.3
    h = 1e-6
    ht = torch.full_like(t, h)
    ref = (fn(x_t + h * v, y, t + ht, r) - fn(x_t - h * v, y, t - ht, r)) / (2 * h)
    kw = dict(x_t=x_t, y=y, t=t, r=r, v=v)
    rel = lambda a: ((a - ref).norm() / ref.norm()).item()
    assert rel(jvp_func(fn, **kw)[1]) <= 1e-6
    assert rel(jvp_autograd(fn, **kw)) <= 1e-6
    assert rel(jvp_fd(fn, **kw, eps_rel=1e-3)) <= 1e-2
    # and it is the chain rule of u = (x_t - y - F) / t: du/dt = (v - dF/dt - u) / t
    dF = jvp_func(module_of(tiny_net).net_fn, **kw)[1]  # velocity: net_fn is the backbone, F
    u = fn(x_t, y, t, r)
    tt = t[:, None, None, None]
    torch.testing.assert_close(jvp_func(fn, **kw)[1], (v - dF - u) / tt, rtol=1e-10, atol=1e-12)


def test_one_step_from_1_to_0_lands_on_y_plus_F():
    b = batch()
    out = torch.randn(b["y"].shape, dtype=F64)
    y, z = b["y"], b["z"]

    def fn(x_t, y_, t, r):
        return average_velocity(out, x_t=x_t, y=y_, t=t, kind="data")

    x0 = sample(fn, y=y, z=z, name="euler_mf", nfe=1, t_end=0.0, path=PathConfig())
    torch.testing.assert_close(x0, y + out, rtol=0, atol=1e-14)  # x_1 - 1 * (x_1 - y - F)
    # the same through the module's sampler
    module = module_of(FixedOutput(out), parametrization="data")
    x0 = module.enhance_spec(y, z=z, name="euler_mf", nfe=1, t_end=0.0)
    torch.testing.assert_close(x0, y + out, rtol=0, atol=1e-14)


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_octave_bands_split_the_per_sample_loss_top_half_first(loss):
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(2, 3, 2, 32, 5, generator=g, dtype=F64)
    bands = octave_band_loss(pred, target, loss, 4)  # bins 0-3, 4-7, 8-15, 16-31
    assert bands.shape == (3, 4)
    torch.testing.assert_close(bands.sum(1), per_sample_loss(pred, target, loss), rtol=1e-12, atol=0)
    only_top = pred.clone()
    only_top[:, :, 16:] = pred[:, :, 16:] + 1.0  # an error in the upper half of the bins only
    top = octave_band_loss(pred, only_top, loss, 4)
    assert torch.all(top[:, :3] < 1e-3) and torch.all(top[:, 3] > 1.0)  # mae: a 1e-6 floor per bin
    with pytest.raises(ValueError, match="octave bands"):
        octave_band_loss(pred, target, loss, 7)  # 32 bins hold 6 octave bands at most


def test_adaptive_bands_weigh_each_octave_band_by_its_own_loss():
    """With adaptive_bands = B the loss is the mean over bands of w_b / (w_b + eps / B), w_b the
    band's time-weighted loss: a band with a thousand times less error counts as much."""
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(2, 4, 2, 16, 6, generator=g, dtype=F64)
    target[:, :, :8] = pred[:, :, :8] + 1e-3 * (target[:, :, :8] - pred[:, :, :8])  # quiet low bands
    t = torch.tensor([0.1, 0.4, 0.7, 1.0], dtype=F64)
    cfg = MeanFlowConfig(parametrization="data", adaptive_p=1.0, adaptive_bands=3)
    w = t[:, None] ** 2 * octave_band_loss(pred, target, "mse", 3)
    torch.testing.assert_close(
        _reduce(pred, target, t, cfg), (w / (w + 1e-3 / 3)).mean(1), rtol=1e-14, atol=0
    )
    per_sample = MeanFlowConfig(parametrization="data", adaptive_p=1.0)
    pred.requires_grad_(True)
    grads = []
    for c in (per_sample, cfg):
        (grad,) = torch.autograd.grad(_reduce(pred, target, t, c).sum(), pred)
        grads.append(grad[:, :, :8].norm() / grad[:, :, 8:].norm())  # low bands' share of the pull
    assert grads[1] > 100 * grads[0]
    for bad in (
        {"adaptive_bands": 0},
        {"adaptive_bands": 3, "adaptive_p": 0.0},
        {"adaptive_bands": 2.5, "adaptive_p": 1.0},
    ):
        with pytest.raises(ValueError, match="adaptive_bands"):
            MeanFlowConfig(**bad).check()


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_data_weights_each_sample_loss_to_the_x0_scale(loss):
    """data: the per-sample loss times t^2 (mse) or t (mae), before adaptive weighting;
    velocity: the plain per-sample loss."""
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 4, 2, 8, 6, generator=g, dtype=F64)
    t = torch.tensor([0.03, 0.2, 0.5, 1.0], dtype=F64)
    plain = per_sample_loss(pred, target, loss)
    assert torch.equal(_reduce(pred, target, t, MeanFlowConfig(loss=loss)), plain)
    weight = t**2 if loss == "mse" else t
    data = MeanFlowConfig(loss=loss, parametrization="data")
    torch.testing.assert_close(_reduce(pred, target, t, data), weight * plain, rtol=1e-14, atol=0)
    # the adaptive weighting sees the already weighted loss
    adaptive = MeanFlowConfig(loss=loss, parametrization="data", adaptive_p=1.0)
    w = weight * plain
    torch.testing.assert_close(_reduce(pred, target, t, adaptive), w / (w + 1e-3), rtol=1e-14, atol=0)


def test_data_cfm_loss_is_the_clean_estimate_error_and_single_pass_is_weighted_alike(tiny_net):
    """With sigma_min = 0, x_t - t v = x, so t (u - v) = x - x0_hat: the weighted data CFM loss is
    0.5 |y + F - x|^2 per sample. The single pass (with its MeanFlow samples) is t^2 times the
    unweighted per-sample loss, batch mean."""
    b = batch()
    out = torch.randn(b["x"].shape, dtype=F64)
    cfg = MeanFlowConfig(parametrization="data")
    kw = dict(x_t=b["x_t"], y=b["y"], t=b["t"], v=b["v"])
    fn = module_of(FixedOutput(out), parametrization="data").net_fn
    expected = 0.5 * (b["y"] + out - b["x"]).pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(cfm_loss(fn, cfg=cfg, **kw), expected, rtol=1e-12, atol=0)

    fn = module_of(tiny_net.double(), parametrization="data").net_fn
    r = b["t"] * torch.tensor([1.0, 0.3, 1.0, 0.6], dtype=F64)
    got = single_pass_loss(fn, r=r, cfg=cfg, **kw).loss
    _, target, _ = mean_flow_target(fn, r=r, cfg=cfg, **kw)
    unweighted = per_sample_loss(fn(b["x_t"], b["y"], b["t"], r), target, "mse")
    torch.testing.assert_close(got, (b["t"] ** 2 * unweighted).mean(), rtol=1e-12, atol=0)


# -- config ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, allowed", [("parametrization", ["velocity", "data"]), ("jvp_clip_mode", ["norm", "rms"])]
)
def test_an_unknown_choice_fails_at_module_construction_naming_key_and_values(tmp_path, key, allowed):
    from meanflowse.training.fit import build_module

    cfg = compose_cfg("train", [*TINY, f"mf.{key}=bogus"], tmp_path)
    with pytest.raises(ValueError) as err:
        build_module(cfg)
    text = str(err.value)
    assert f"mf.{key}='bogus'" in text and all(repr(a) in text for a in allowed), text


def test_the_options_reach_the_module(tmp_path):
    from meanflowse.training.fit import build_module

    cfg = compose_cfg("train", [*TINY, "mf.parametrization=data", "mf.jvp_clip_mode=rms"], tmp_path)
    module = build_module(cfg)
    assert module.objective.parametrization == "data" and module.objective.jvp_clip_mode == "rms"


def test_a_checkpoint_from_before_the_options_loads_with_the_defaults(tmp_path):
    """Its stored config lacks the keys; rebuilding it through the schema fills in the defaults.
    And a stored data parametrization is what the loaded module uses."""
    from meanflowse.inference.enhancer import load_module
    from meanflowse.training.fit import build_module

    cfg = compose_cfg("train", TINY, tmp_path)
    module = build_module(cfg)
    old = OmegaConf.to_container(cfg, resolve=True)
    del old["mf"]["parametrization"], old["mf"]["jvp_clip_mode"]
    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"config": old}, "state_dict": module.state_dict()}, path)
    loaded, _ = load_module(path)
    assert loaded.objective.parametrization == "velocity" and loaded.objective.jvp_clip_mode == "norm"

    new = OmegaConf.to_container(cfg, resolve=True)
    new["mf"]["parametrization"] = "data"
    torch.save({"hyper_parameters": {"config": new}, "state_dict": module.state_dict()}, path)
    assert load_module(path)[0].objective.parametrization == "data"
