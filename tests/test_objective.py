"""The MeanFlow objective as pure functions (issue 3, points 1, 2 and 6)."""
import dataclasses

import pytest
import torch

from meanflowse.jvp import AutoJvp, clip_per_sample, jvp_autograd, jvp_fd, jvp_func
from meanflowse.objective import (MeanFlowConfig, NonFiniteError, cfm_loss, mean_flow_target,
                                  per_sample_loss, single_pass_loss, two_pass_loss)
from meanflowse.path import PathConfig, complex_noise_like, conditional_velocity, sample_xt

from conftest import TinyNet


def make_batch(dtype=torch.float32, b=4, f=8, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, f, n, generator=g, dtype=dtype)
    y = x + 0.5 * torch.randn(b, 2, f, n, generator=g, dtype=dtype)
    z = torch.randn(b, 2, f, n, generator=g, dtype=dtype) * 0.5 ** 0.5
    t = torch.rand(b, generator=g, dtype=dtype) * 0.9 + 0.05
    path = PathConfig()
    return dict(x_t=sample_xt(x=x, y=y, z=z, t=t, cfg=path), y=y, t=t,
                v=conditional_velocity(x=x, y=y, z=z, cfg=path))


def net_fn_of(net):
    return lambda x_t, y, t, r: net(x_t, y, t, t - r)


@pytest.mark.parametrize("impl", ["func", "autograd", "fd", "auto"])
@pytest.mark.parametrize("c", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("formulation", ["single_pass", "two_pass"])
def test_r_equal_t_reduces_to_cfm(tiny_net, impl, c, formulation):
    b = make_batch()
    cfg = MeanFlowConfig(first_order_coef=c, jvp_impl=impl, jvp_clip=None, formulation=formulation)
    fn = net_fn_of(tiny_net)
    cfm = cfm_loss(fn, cfg=cfg, **b)
    if formulation == "single_pass":
        mf = single_pass_loss(fn, r=b["t"].clone(), cfg=cfg, with_jvp=True, **b).loss
    else:  # with w_mf = 1 the two-pass loss is the MeanFlow term alone
        mf = two_pass_loss(fn, r=b["t"].clone(), w_mf=1.0, cfg=cfg, **b).loss
    assert torch.allclose(mf, cfm, rtol=1e-6, atol=1e-7), (mf.item(), cfm.item())


def test_jvp_implementations_agree_in_float64(tiny_net):
    net = tiny_net.double()
    b = make_batch(torch.float64)
    r = b["t"] * 0.3
    fn = net_fn_of(net)
    kw = dict(x_t=b["x_t"], y=b["y"], t=b["t"], r=r, v=b["v"])
    _, j_func = jvp_func(fn, **kw)
    j_auto = jvp_autograd(fn, **kw)
    j_fd = jvp_fd(fn, **kw, eps_rel=1e-3)
    rel = lambda a, b_: ((a - b_).norm() / b_.norm()).item()
    assert rel(j_auto, j_func) <= 1e-4
    assert rel(j_fd, j_func) <= 1e-2
    j_fd_chunked = jvp_fd(fn, **kw, eps_rel=1e-3, chunk=1)
    assert torch.allclose(j_fd_chunked, j_fd, atol=1e-12)


def test_jvp_moves_d_with_t():
    """With r fixed, d = t - r changes with t: a net that only sees d has du/dt = du/dd."""
    def fn(x_t, y, t, r):
        d = (t - r)[:, None, None, None]
        return x_t * 0 + d ** 2
    b = make_batch(torch.float64)
    r = b["t"] * 0.5
    _, j = jvp_func(fn, x_t=b["x_t"], y=b["y"], t=b["t"], r=r, v=b["v"])
    expected = (2 * (b["t"] - r))[:, None, None, None].expand_as(j)
    assert torch.allclose(j, expected)


@pytest.mark.parametrize("impl", ["func", "autograd", "fd"])
def test_target_carries_no_gradient(tiny_net, impl):
    b = make_batch()
    cfg = MeanFlowConfig(jvp_impl=impl)
    u, target, logs = mean_flow_target(net_fn_of(tiny_net), r=b["t"] * 0.5, cfg=cfg, **b)
    assert not target.requires_grad
    assert set(logs) == {"jvp_norm", "jvp_clip_rate"}
    if impl == "func":  # the JVP's primal output is reused as the prediction
        assert u is not None and u.requires_grad


def test_single_pass_gradient_matches_explicit_target(tiny_net):
    """Reusing the JVP's primal output gives the same gradient as a separate forward."""
    b = make_batch()
    r = b["t"] * 0.4
    fn = net_fn_of(tiny_net)
    grads = []
    for impl in ("func", "autograd"):
        tiny_net.zero_grad()
        cfg = MeanFlowConfig(jvp_impl=impl)
        single_pass_loss(fn, r=r, cfg=cfg, **b).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in tiny_net.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_per_sample_loss_matches_the_reference_definition():
    pred, tgt = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    err = torch.complex(pred[:, 0] - tgt[:, 0], pred[:, 1] - tgt[:, 1])
    assert torch.allclose(per_sample_loss(pred, tgt, "mse"), 0.5 * err.abs().pow(2).sum((1, 2)))
    assert torch.allclose(per_sample_loss(pred, tgt, "mae"), err.abs().sum((1, 2)), rtol=1e-5)


def test_clip_per_sample():
    j = torch.stack([torch.full((2, 3, 3), 10.0), torch.full((2, 3, 3), 0.01)])
    clipped, flags = clip_per_sample(j, 5.0)
    assert flags.tolist() == [True, False]
    assert abs(clipped[0].norm().item() - 5.0) < 1e-4
    assert torch.equal(clipped[1], j[1])


def test_non_finite_jvp_is_reported_by_name():
    def fn(x_t, y, t, r):
        return x_t * (t - r).reshape(-1, 1, 1, 1).clamp(min=0).sqrt() * float("inf")
    b = make_batch()
    with pytest.raises(NonFiniteError, match="JVP"):
        mean_flow_target(fn, r=b["t"] * 0.5, cfg=MeanFlowConfig(), **b)


def test_auto_falls_back_to_fd_with_a_warning(tiny_net, caplog):
    class NoForwardAD(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    def fn(x_t, y, t, r):
        return NoForwardAD.apply(tiny_net(x_t, y, t, t - r))
    b = make_batch()
    auto = AutoJvp()
    u, j = auto(fn, x_t=b["x_t"], y=b["y"], t=b["t"], r=b["t"] * 0.5, v=b["v"])
    assert u is None and torch.isfinite(j).all()
    assert auto.fallback_reason.split(":")[0] in ("RuntimeError", "NotImplementedError")
    assert any("using the finite difference" in rec.message for rec in caplog.records)
