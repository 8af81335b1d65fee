"""The MeanFlow objective as pure functions (issue 3, points 1, 2 and 6)."""

import pytest
import torch

from meanflowse.method.jvp import AutoJvp, clip_per_sample, jvp_autograd, jvp_fd, jvp_func
from meanflowse.method.objective import (
    MeanFlowConfig,
    NonFiniteError,
    cfm_loss,
    mean_flow_target,
    per_sample_loss,
    single_pass_loss,
    two_pass_loss,
)
from meanflowse.method.objectives import PathBatch
from meanflowse.method.path import PathConfig, conditional_velocity, sample_xt


def make_batch(dtype=torch.float32, b=4, f=8, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, f, n, generator=g, dtype=dtype)
    y = x + 0.5 * torch.randn(b, 2, f, n, generator=g, dtype=dtype)
    z = torch.randn(b, 2, f, n, generator=g, dtype=dtype) * 0.5**0.5
    t = torch.rand(b, generator=g, dtype=dtype) * 0.9 + 0.05
    path = PathConfig()
    return dict(
        x_t=sample_xt(x=x, y=y, z=z, t=t, cfg=path), y=y, t=t, v=conditional_velocity(x=x, y=y, z=z, cfg=path)
    )


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
    # and the target itself is v at r = t, whatever c and the JVP (the single pass skips it there)
    _, target, _ = mean_flow_target(fn, r=b["t"].clone(), cfg=cfg, **b)
    assert torch.equal(target, b["v"])


@pytest.mark.parametrize("reuse", [False, True])
def test_jvp_on_the_r_below_t_subset_equals_the_whole_batch_form(tiny_net, reuse):
    """Mixed batch: the loss and its gradient match the plain definition computed sample by sample."""
    b = make_batch(torch.float64, b=5)
    net = tiny_net.double()
    fn = net_fn_of(net)
    r = b["t"] * torch.tensor([1.0, 0.3, 1.0, 0.7, 0.1], dtype=torch.float64)  # two r = t samples
    cfg = MeanFlowConfig(jvp_reuse_primal=reuse, jvp_clip=None)
    net.zero_grad()
    loss = single_pass_loss(fn, r=r, cfg=cfg, **b).loss
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in net.parameters()])
    net.zero_grad()
    expected = 0
    for i in range(5):
        one = {k: v[i : i + 1] for k, v in b.items()}
        _, target, _ = mean_flow_target(fn, r=r[i : i + 1], cfg=cfg, **one)
        pred = fn(one["x_t"], one["y"], one["t"], r[i : i + 1])
        expected = expected + per_sample_loss(pred, target, "mse")[0] / 5
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, torch.cat([p.grad.flatten() for p in net.parameters()]))


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
        return x_t * 0 + d**2

    b = make_batch(torch.float64)
    r = b["t"] * 0.5
    _, j = jvp_func(fn, x_t=b["x_t"], y=b["y"], t=b["t"], r=r, v=b["v"])
    expected = (2 * (b["t"] - r))[:, None, None, None].expand_as(j)
    assert torch.allclose(j, expected)


@pytest.mark.parametrize("impl, reuse", [("func", False), ("func", True), ("autograd", False), ("fd", False)])
def test_target_carries_no_gradient(tiny_net, impl, reuse):
    b = make_batch()
    cfg = MeanFlowConfig(jvp_impl=impl, jvp_reuse_primal=reuse)
    u, target, logs = mean_flow_target(net_fn_of(tiny_net), r=b["t"] * 0.5, cfg=cfg, **b)
    assert not target.requires_grad
    assert set(logs) == {"jvp_norm", "jvp_rms", "jvp_clip_rate"}
    if reuse:  # the JVP's primal output is the prediction, with its graph
        assert u is not None and u.requires_grad
    else:  # nothing recorded: the caller runs an ordinary forward
        assert u is None


def test_func_jvp_without_recording_equals_recorded(tiny_net):
    b = make_batch(torch.float64)
    net = tiny_net.double()
    kw = dict(x_t=b["x_t"], y=b["y"], t=b["t"], r=b["t"] * 0.3, v=b["v"])
    u, j_rec = jvp_func(net_fn_of(net), **kw, reuse_primal=True)
    none, j_free = jvp_func(net_fn_of(net), **kw)
    assert none is None and not j_free.requires_grad and j_rec.requires_grad
    torch.testing.assert_close(j_free, j_rec.detach(), rtol=1e-12, atol=1e-12)


def test_single_pass_gradient_matches_explicit_target(tiny_net):
    """Reusing the JVP's primal output gives the same gradient as a separate forward."""
    b = make_batch()
    r = b["t"] * 0.4
    fn = net_fn_of(tiny_net)
    grads = []
    for impl, reuse in (("func", True), ("func", False), ("autograd", False)):
        tiny_net.zero_grad()
        cfg = MeanFlowConfig(jvp_impl=impl, jvp_reuse_primal=reuse)
        single_pass_loss(fn, r=r, cfg=cfg, **b).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in tiny_net.parameters()]))
    for other in grads[1:]:
        assert torch.allclose(grads[0], other, rtol=1e-4, atol=1e-6)


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


@pytest.mark.parametrize("mode", ["norm", "rms"])
def test_rms_clip_decides_alike_at_any_crop_size_and_norm_clip_does_not(mode):
    """A JVP of the same per-element size a = 2 on 64 and 256 elements per sample: its RMS is 2
    at both sizes, its L2 norm 16 and 32. rms with bound 3 (1) keeps (clips) both; norm with bound
    20 keeps the small crop and clips the large one."""
    small, large = torch.full((1, 2, 8, 4), 2.0), torch.full((1, 2, 8, 16), 2.0)
    if mode == "rms":
        for bound, expected in ((3.0, False), (1.0, True)):
            assert clip_per_sample(small, bound, mode)[1].item() is expected
            assert clip_per_sample(large, bound, mode)[1].item() is expected
    else:
        assert clip_per_sample(small, 20.0, mode)[1].item() is False
        assert clip_per_sample(large, 20.0, mode)[1].item() is True


def test_rms_clip_gives_the_bound_as_rms_and_null_disables():
    j = torch.randn(3, 2, 8, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    j[2] *= 1e-3  # this one stays below the bound
    clipped, flags = clip_per_sample(j, 0.1, "rms")
    assert flags.tolist() == [True, True, False]
    rms = clipped.flatten(1).pow(2).mean(1).sqrt()
    torch.testing.assert_close(rms[:2], torch.full((2,), 0.1, dtype=torch.float64), rtol=1e-12, atol=0)
    assert torch.equal(clipped[2], j[2])
    for mode in ("norm", "rms"):
        same, none = clip_per_sample(j, None, mode)
        assert same is j and not none.any()
    with pytest.raises(ValueError, match="jvp_clip_mode='l2'.*norm.*rms"):
        clip_per_sample(j, 1.0, "l2")


@pytest.mark.parametrize("mode, clip", [("norm", 1e-3), ("rms", 1e-3), ("rms", None)])
def test_jvp_logs_are_the_unclipped_norm_and_rms(mode, clip):
    """du/dt = 2 (t - r) at every element (see test_jvp_moves_d_with_t): the logged norm and RMS
    are those of the JVP before the clip, whatever the clip does."""

    def fn(x_t, y, t, r):
        return x_t * 0 + ((t - r) ** 2)[:, None, None, None]

    b = make_batch(torch.float64)
    r = b["t"] * 0.5
    cfg = MeanFlowConfig(jvp_clip=clip, jvp_clip_mode=mode)
    _, _, logs = mean_flow_target(fn, r=r, cfg=cfg, **b)
    rms = 2 * (b["t"] - r)
    n = b["x_t"][0].numel()
    assert logs["jvp_rms"] == pytest.approx(rms.mean().item(), rel=1e-9)
    assert logs["jvp_norm"] == pytest.approx((rms * n**0.5).mean().item(), rel=1e-9)
    assert logs["jvp_clip_rate"] == (0.0 if clip is None else 1.0)


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


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate"),
        RuntimeError("shape '[2, 3]' is invalid for input of size 5"),
    ],
)
def test_auto_lets_other_errors_propagate_and_does_not_fall_back(error):
    def fn(x_t, y, t, r):
        raise error

    b = make_batch()
    auto = AutoJvp()
    with pytest.raises(type(error)):
        auto(fn, x_t=b["x_t"], y=b["y"], t=b["t"], r=b["t"] * 0.5, v=b["v"])
    assert auto.fallback_reason is None  # the next step tries the exact JVP again


def test_missing_forward_rule_recognises_torchs_messages():
    from meanflowse.method.jvp import missing_forward_rule

    assert missing_forward_rule(
        NotImplementedError(
            "You must implement the jvp function for custom autograd.Function to use it with forward mode AD."
        )
    )
    assert missing_forward_rule(
        RuntimeError(
            "In order to use an autograd.Function with functorch "
            "transforms (vmap, grad, jvp, jacrev, ...), it must "
            "override the setup_context staticmethod."
        )
    )
    assert missing_forward_rule(RuntimeError("Trying to use forward AD with foo that does not support it"))
    assert not missing_forward_rule(torch.OutOfMemoryError("CUDA out of memory"))
    assert not missing_forward_rule(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


# -- the JVP path against a network whose total derivative is known in closed form -------------
class PolyField(torch.nn.Module):
    """``u = a x_t + b t y + k (t - r)^2 y + e t x_t``, elementwise, with learnable a, b, k, e.

    Along the tangent ``(v, 0, 1)`` on ``(x_t, y, t)`` with ``r`` fixed, the total derivative is
    ``du/dt = a v + b y + 2 k (t - r) y + e (x_t + t v)``. Each term is at most quadratic in the
    step along the tangent, so the central difference (``fd``) is exact up to round-off too.
    """

    def __init__(self):
        super().__init__()
        self.a, self.b, self.k, self.e = (
            torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in (0.7, -1.3, 2.1, 0.9)
        )

    def forward(self, x_t, y, t, r):
        s = lambda z: z[:, None, None, None]
        return self.a * x_t + self.b * s(t) * y + self.k * s(t - r) ** 2 * y + self.e * s(t) * x_t

    def closed_form(self, x_t, y, t, r, v):
        """``(u, du/dt)`` by hand, without autograd."""
        with torch.no_grad():
            s = lambda z: z[:, None, None, None]
            u = self.forward(x_t, y, t, r)
            dudt = self.a * v + self.b * y + 2 * self.k * s(t - r) * y + self.e * (x_t + s(t) * v)
        return u, dudt


# r = t for sample 1 (its target is v whatever the JVP), r < t for the others
R_FRACTION = torch.tensor([0.3, 1.0, 0.7, 0.1], dtype=torch.float64)


def _closed_form_target(field, b, r, c):
    u, dudt = field.closed_form(b["x_t"], b["y"], b["t"], r, b["v"])
    return u, b["v"] - c * (b["t"] - r)[:, None, None, None] * dudt


@pytest.mark.parametrize("impl", ["func", "autograd", "fd", "auto"])
@pytest.mark.parametrize("c", [0.5, 1.0])
def test_meanflow_target_and_loss_match_the_closed_form(impl, c):
    """The JVP path (r < t) against the hand-computed target ``v - c (t - r) du/dt``, for each
    JVP implementation and two values of c; the loss and its gradient (target held fixed, as
    the stop-gradient says) against the closed form too.

    It fails if c were ignored or mis-applied: the two c's closed-form targets differ by
    ``0.5 (t - r) du/dt`` whose size is asserted below to be far above the tolerance."""
    b = make_batch(torch.float64)
    field = PolyField()
    r = b["t"] * R_FRACTION
    cfg = MeanFlowConfig(first_order_coef=c, jvp_impl=impl, jvp_clip=None)
    u_cf, expected = _closed_form_target(field, b, r, c)
    _, other = _closed_form_target(field, b, r, 1.5 - c)  # the other c of the pair
    assert (expected - other)[R_FRACTION < 1].abs().max() > 0.1  # c matters at this size
    torch.testing.assert_close(expected[1], b["v"][1], rtol=0, atol=0)  # r = t: v exactly

    tol = dict(rtol=1e-9, atol=1e-9) if impl != "fd" else dict(rtol=1e-6, atol=1e-7)
    mf = R_FRACTION < 1
    _, target, _ = mean_flow_target(
        field, x_t=b["x_t"][mf], y=b["y"][mf], t=b["t"][mf], r=r[mf], v=b["v"][mf], cfg=cfg
    )
    torch.testing.assert_close(target, expected[mf], **tol)

    field.zero_grad()
    out = single_pass_loss(field, r=r, cfg=cfg, **b)
    out.loss.backward()
    err = u_cf - expected
    per_sample = 0.5 * err.pow(2).flatten(1).sum(1)
    torch.testing.assert_close(out.loss, per_sample.mean(), **tol)
    # d loss / d a = mean_i sum (u - target) x_t: the target contributes no gradient
    grad_a = (err * b["x_t"]).flatten(1).sum(1).mean()
    torch.testing.assert_close(field.a.grad, grad_a, **tol)
    assert out.logs["loss_cfm"] == pytest.approx(per_sample[~mf].mean().item(), rel=1e-6)
    assert out.logs["loss_mf"] == pytest.approx(per_sample[mf].mean().item(), rel=1e-6)

    # the two-pass form: (1 - w) CFM + w MeanFlow, each against its closed form
    w = 0.3
    two = two_pass_loss(field, r=r, w_mf=w, cfg=cfg, **b).loss
    # the CFM pass evaluates u at r = t for every sample (u(x_t, t, t), no k term)
    u_tt, _ = field.closed_form(b["x_t"], b["y"], b["t"], b["t"], b["v"])
    cfm = 0.5 * (u_tt - b["v"]).pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(two, (1 - w) * cfm + w * per_sample.mean(), **tol)


def test_the_closed_form_test_catches_an_ignored_coefficient():
    """The test above would fail if the code used the wrong c: run the code with c = 0 (what
    ignoring c amounts to) and the closed form with c = 0.5, and the comparison must fail."""
    b = make_batch(torch.float64)
    field = PolyField()
    r = b["t"] * R_FRACTION
    _, expected = _closed_form_target(field, b, r, 0.5)
    _, target, _ = mean_flow_target(field, r=r, cfg=MeanFlowConfig(first_order_coef=0.0, jvp_clip=None), **b)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(target, expected, rtol=1e-6, atol=1e-7)


# -- adaptive loss weighting (mf.adaptive_p) -----------------------------------------------------
@pytest.mark.parametrize("loss", ["mse", "mae"])
@pytest.mark.parametrize("p, eps", [(0.5, 1e-3), (1.0, 0.5)])
def test_adaptive_weighting_matches_its_closed_form_with_stop_gradient(loss, p, eps):
    """``L = mean_i l_i / sg(l_i + eps)^p``: the value is that, and the gradient is
    ``mean_i grad(l_i) / (l_i + eps)^p`` (the weight is a constant). Without the stop-gradient
    the gradient would be ``mean_i (1 - p l_i / (l_i + eps)) grad(l_i) / (l_i + eps)^p``;
    the test asserts that the two differ at these sizes, so it tells them apart."""
    b = make_batch(torch.float64)
    field = PolyField()
    r = b["t"] * R_FRACTION
    base = MeanFlowConfig(jvp_clip=None, loss=loss)
    weighted = MeanFlowConfig(jvp_clip=None, loss=loss, adaptive_p=p, adaptive_eps=eps)
    # per-sample losses l_i and their gradients w.r.t. the parameters, unweighted
    per, grads = [], []
    for i in range(4):
        one = {k: v[i : i + 1] for k, v in b.items()}
        field.zero_grad()
        li = single_pass_loss(field, r=r[i : i + 1], cfg=base, **one).loss
        li.backward()
        per.append(li.detach())
        grads.append(torch.stack([q.grad.clone() for q in field.parameters()]))
    per, grads = torch.stack(per), torch.stack(grads)  # [B], [B, 4]
    w = (per + eps).pow(-p)
    field.zero_grad()
    out = single_pass_loss(field, r=r, cfg=weighted, **b).loss
    out.backward()
    got = torch.stack([q.grad for q in field.parameters()])
    torch.testing.assert_close(out, (per * w).mean(), rtol=1e-10, atol=1e-12)
    expected = (w[:, None] * grads).mean(0)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)
    without_sg = ((w * (1 - p * per / (per + eps)))[:, None] * grads).mean(0)
    assert (expected - without_sg).abs().max() > 1e-3 * expected.abs().max()
    # p = 0 is the identity
    assert torch.equal(
        single_pass_loss(
            field, r=r, cfg=MeanFlowConfig(jvp_clip=None, loss=loss, adaptive_p=0.0, adaptive_eps=eps), **b
        ).loss,
        single_pass_loss(field, r=r, cfg=base, **b).loss,
    )


# -- single pass equals two pass in expectation --------------------------------------------------
class PolyBackbone(PolyField):
    """:class:`PolyField` with the backbone's contract ``(x_t, y, t, d = t - r)``."""

    def forward(self, x_t, y, t, d):
        return super().forward(x_t, y, t, t - d)


def _draws(module, b, n, seed, *, wrong_p=False):
    """Loss and parameter gradient of ``module.objective`` (the training step's objective, r
    drawn inside; w_mf 0.5 and gamma 1 by the curriculum of ``module_of``) on a fixed batch,
    for ``n`` seeds; ``wrong_p`` draws the single pass's r = t with
    probability p_r_equals_t alone instead of ``(1 - w) + w p`` (the mistake to catch)."""
    losses, grads = [], []
    for k in range(n):
        torch.manual_seed(seed + k)
        module.zero_grad()
        if wrong_p:
            from meanflowse.method.curriculum import sample_r

            r = sample_r(b["t"], gamma=1.0, p_equal=module.curriculum.p_r_equals_t, r_min=0.03)
            loss = single_pass_loss(module.net_fn, r=r, cfg=module.objective, **b).loss
        else:
            batch = PathBatch(**b, progress=1.0)
            loss = module.objective(module.net_fn, batch, module.curriculum).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.stack([q.grad.clone() for q in module.parameters()]))
    return torch.stack(losses), torch.stack(grads)


def test_single_pass_equals_two_pass_in_expectation():
    """Same batch (x_t, t, v), r redrawn each time: the mean loss and mean gradient of
    ``mf.formulation=single_pass`` and ``two_pass`` agree within 4 standard errors (estimated
    from the draws), while single draws differ; drawing the single pass's r = t with the wrong
    probability is caught by the same statistic."""
    from meanflowse.method.curriculum import CurriculumConfig
    from meanflowse.method.objectives import MeanFlowObjective
    from meanflowse.method.samplers import SamplerConfig
    from meanflowse.training.lit_module import MeanFlowSEModule

    b = make_batch(torch.float64, b=8, seed=3)
    n = 300

    def module_of(form):
        return MeanFlowSEModule(
            backbone=PolyBackbone(),
            path=PathConfig(),
            objective=MeanFlowObjective(
                formulation=form, first_order_coef=1.0, jvp_clip=None, weight_final=0.5
            ),
            curriculum=CurriculumConfig(r_min=0.03, mf_warmup_frac=0.0, gamma_start=1.0, gamma_end=1.0),
            sampler=SamplerConfig(),
        )

    single, two = module_of("single_pass"), module_of("two_pass")
    # independent seeds, so the standard error of the difference is the sum of the two
    stats = {"single_pass": _draws(single, b, n, seed=5000), "two_pass": _draws(two, b, n, seed=1000)}
    wrong = _draws(single, b, n, seed=9000, wrong_p=True)
    # the same seed gives each formulation its own r, so single draws differ
    same_seed = _draws(single, b, 5, seed=1000)[0], stats["two_pass"][0][:5]
    assert not torch.isclose(*same_seed).any(), same_seed

    def z(a, c):  # difference of means in standard errors, per component
        se = (a.var(0) / len(a) + c.var(0) / len(c)).sqrt()
        return ((a.mean(0) - c.mean(0)) / se).abs()

    (ls, gs), (lt, gt) = stats["single_pass"], stats["two_pass"]
    assert ls.std() > 0 and lt.std() > 0  # r is really redrawn
    assert z(ls, lt) < 4, (ls.mean(), lt.mean(), z(ls, lt))
    assert (z(gs.flatten(1), gt.flatten(1)) < 4).all(), z(gs.flatten(1), gt.flatten(1))
    # the statistic has the power to see a wrong r = t probability (0.1 instead of 0.55)
    assert z(wrong[0], lt) > 6, z(wrong[0], lt)  # 7.3 at these seeds; the pass bar is 4
