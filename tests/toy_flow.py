"""A low-dimensional conditional flow with a known answer, for end-to-end MeanFlow checks.

Data (one complex bin: states are real ``[B, 2, 1, 1]``, i.e. points of the plane):
the condition ``y`` lies on the unit circle at a uniform angle ``theta``; the clean ``x`` given
``y`` is a two-mode Gaussian mixture placed in the frame of ``y``::

    x = y + R(theta) (m_k + s * eps),   k ~ Categorical(WEIGHTS),   eps ~ N(0, I_2)

with ``R(theta)`` the rotation by ``theta`` (its first axis points along ``y``). So the residual
in the local frame, ``e = R(theta)^T (x - y)``, has the same mixture law for every ``y``:
the conditional law of ``x`` given ``y`` is known exactly, and the network must use ``y``
to place the modes. The distribution error of a sampler is the sliced Wasserstein-2 distance
between its local residuals and fresh exact residuals (pooled over ``y``).

Everything else is the project's own: the path (``sample_xt``, ``conditional_velocity``,
``complex_noise_like``), the objective (``single_pass_loss``), the time sampling (``sample_t``,
``sample_r``) and the sampler (``samplers.sample``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from meanflowse.method.curriculum import CurriculumConfig, sample_r, sample_t
from meanflowse.method.objective import MeanFlowConfig, single_pass_loss, split_loss
from meanflowse.method.path import PathConfig, complex_noise_like, conditional_velocity, sample_xt
from meanflowse.method.samplers import sample

MODES = torch.tensor([[0.15, 0.6], [0.15, -0.6]])  # local-frame mode centres
WEIGHTS = torch.tensor([0.4, 0.6])
MODE_STD = 0.1
N_COND = 4  # y takes N_COND equally spaced angles (None: a continuous uniform angle)
PATH = PathConfig(sigma_min=0.0, sigma_max=0.487, t_eps=0.0, T_rev=1.0)


def rotate(v: Tensor, theta: Tensor) -> Tensor:
    """Rotate ``[B, 2]`` points by ``theta`` ``[B]``."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], dim=1)


def local_residuals(n: int, g: torch.Generator) -> Tensor:
    """``n`` exact draws of ``e = R^T (x - y)`` (the same mixture for every ``y``)."""
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    return MODES[k] + MODE_STD * torch.randn(n, 2, generator=g)


def draw_pairs(n: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``(x, y, theta)`` with states shaped ``[n, 2, 1, 1]``."""
    if N_COND is None:
        theta = 2 * math.pi * torch.rand(n, generator=g)
    else:
        theta = 2 * math.pi / N_COND * torch.randint(N_COND, (n,), generator=g).float()
    y = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    x = y + rotate(local_residuals(n, g), theta)
    return x[:, :, None, None], y[:, :, None, None], theta


def to_local(x: Tensor, y: Tensor, theta: Tensor) -> Tensor:
    return rotate((x - y).flatten(1), -theta)


class ToyMLP(nn.Module):
    """``(x_t, y, t, d) -> [B, 2, 1, 1]``: an MLP on ``[x_t, y, features(t), features(d)]``."""

    def __init__(self, hidden: int = 128, depth: int = 3, n_freq: int = 4) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, n_freq + 1, dtype=torch.float32))
        dims = [4 + 2 * (1 + 2 * n_freq)] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        layers.append(nn.Linear(dims[-1], 2))
        self.mlp = nn.Sequential(*layers)

    def feats(self, s: Tensor) -> Tensor:
        a = s[:, None] * self.freqs
        return torch.cat([s[:, None], torch.sin(a), torch.cos(a)], dim=1)

    def forward(self, x_t: Tensor, y: Tensor, t: Tensor, d: Tensor) -> Tensor:
        h = torch.cat([x_t.flatten(1), y.flatten(1), self.feats(t), self.feats(d)], dim=1)
        return self.mlp(h).reshape(x_t.shape)


def net_fn_of(net: nn.Module):
    return lambda x_t, y, t, r: net(x_t, y, t, t - r)


@dataclass(frozen=True)
class ToyTrainConfig:
    meanflow: bool = True  # False: plain CFM (r = t, no JVP)
    tangent_mix: float = 1.0  # the JVP tangent's share of v (0: iMF's predicted velocity)
    split: bool = False  # SplitMeanFlow's target for the spans instead of the JVP's
    first_order_coef: float = 1.0  # c of the MeanFlow target
    jvp_clip: float | None = 5.0
    steps: int = 2000
    batch: int = 512
    lr: float = 1e-3
    p_equal: float = 0.25  # fraction of r = t samples (the CFM term of the single pass)
    gamma: float = 1.0
    hidden: int = 128


def train(cfg: ToyTrainConfig, seed: int) -> tuple[nn.Module, dict[str, float]]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = ToyMLP(hidden=cfg.hidden)
    fn = net_fn_of(net)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    mf_cfg = MeanFlowConfig(first_order_coef=cfg.first_order_coef, jvp_impl="func", jvp_clip=cfg.jvp_clip)
    cur = CurriculumConfig(gamma_start=cfg.gamma, gamma_end=cfg.gamma, p_r_equals_t=cfg.p_equal, r_min=0.0)
    logs: dict[str, float] = {}
    clip_rates = []
    for _ in range(cfg.steps):
        x, y, _ = draw_pairs(cfg.batch, g)
        z = complex_noise_like(x, generator=g)
        t = sample_t(cfg.batch, cfg=cur, path=PATH, generator=g)
        if cfg.meanflow:
            r = sample_r(t, gamma=cfg.gamma, p_equal=cfg.p_equal, r_min=cur.r_min, generator=g)
        else:
            r = t
        kw = dict(x_t=sample_xt(x=x, y=y, z=z, t=t, cfg=PATH), y=y, t=t, r=r, cfg=mf_cfg)
        v = conditional_velocity(x=x, y=y, z=z, cfg=PATH)
        if cfg.split:
            out = split_loss(fn, **kw, v=v, generator=g)
        else:
            out = single_pass_loss(fn, **kw, v=v, with_jvp=cfg.meanflow, tangent_mix=cfg.tangent_mix)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        clip_rates.append(out.logs.get("jvp_clip_rate", 0.0))
        logs = out.logs
    logs = dict(logs, loss=out.loss.item(), jvp_clip_rate_mean=sum(clip_rates) / len(clip_rates))
    return net.eval(), logs


def sliced_w(a: Tensor, b: Tensor, p: int = 1, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-``p`` distance between two equal-size 2-D point clouds."""
    g = torch.Generator().manual_seed(seed)
    ang = math.pi * torch.rand(n_proj, generator=g)
    dirs = torch.stack([torch.cos(ang), torch.sin(ang)], dim=0)  # [2, P]
    pa, _ = (a @ dirs).sort(dim=0)
    pb, _ = (b @ dirs).sort(dim=0)
    return (pa - pb).abs().pow(p).mean().pow(1 / p).item()


def sampler_error(net: nn.Module, *, name: str, nfe: int, n: int, seed: int) -> float:
    """SW2 between the sampler's local residuals and ``n`` fresh exact ones."""
    g = torch.Generator().manual_seed(10_000 + seed)
    _, y, theta = draw_pairs(n, g)
    z = complex_noise_like(y, generator=g)
    x_hat = sample(net_fn_of(net), y=y, z=z, name=name, nfe=nfe, t_end=0.0, path=PATH)
    return sliced_w(to_local(x_hat, y, theta), local_residuals(n, g))


def noise_floor(n: int, seed: int) -> float:
    """SW2 between two independent exact samples of size ``n``."""
    g = torch.Generator().manual_seed(20_000 + seed)
    return sliced_w(local_residuals(n, g), local_residuals(n, g))


def exact_velocity(x_t: Tensor, y: Tensor, t: Tensor, r: Tensor | None = None) -> Tensor:
    """The marginal velocity ``E[v | x_t, y]`` of the toy problem in closed form (``r`` unused)."""
    xs, ys = x_t.flatten(1).double(), y.flatten(1).double()
    tt = t.double()[:, None]
    perp = torch.stack([-ys[:, 1], ys[:, 0]], dim=1)
    s2, h = MODE_STD**2, PATH.sigma_max**2 / 2
    var = (1 - tt) ** 2 * s2 + tt**2 * h
    beta = (-(1 - tt) * s2 + tt * h) / var
    logits, cond = [], []
    for m, w in zip(MODES.double(), WEIGHTS.double()):
        centre = ys + m[0] * ys + m[1] * perp
        dev = xs - (1 - tt) * centre - tt * ys
        logits.append(torch.log(w) - dev.pow(2).sum(1, keepdim=True) / (2 * var))
        cond.append((ys - centre) + beta * dev)
    post = torch.softmax(torch.cat(logits, dim=1), dim=1)
    v = sum(post[:, k : k + 1] * cond[k] for k in range(len(cond)))
    return v.to(x_t.dtype).reshape(x_t.shape)
