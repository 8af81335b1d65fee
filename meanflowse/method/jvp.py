"""Jacobian-vector products of the average-velocity network along the flow (method.md section 4).

All implementations compute ``d/dt u(x_t, r, t | y) = v . grad_x u + d_t u`` with tangent ``(v, 1)``
on ``(x_t, t)`` and ``r`` held fixed, so ``d = t - r`` moves with ``t``. ``net_fn(x_t, y, t, r)``
is the network as a function of its inputs (batch-sliceable, for chunking).
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor

from meanflowse.method.path import expand_time

NetFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
JVP_IMPLS = ("func", "autograd", "fd", "auto")
JVP_CLIP_MODES = ("norm", "rms")
log = logging.getLogger(__name__)


def jvp_func(
    net_fn: NetFn, *, x_t: Tensor, y: Tensor, t: Tensor, r: Tensor, v: Tensor, reuse_primal: bool = False
) -> tuple[Tensor | None, Tensor]:
    """Exact forward-mode JVP (``torch.func.jvp``). Returns ``(u, dudt)``.

    ``reuse_primal=True`` records the whole dual computation for autograd, so the primal output
    ``u`` keeps its graph and serves as the prediction (no second forward); but every tangent op
    is recorded and its inputs saved too, which costs several times a forward's activation memory
    (the full NCSN++ at batch 8 x 256 frames ran out of an 80 GB H100 this way). By default the
    JVP runs without recording (forward-mode AD is independent of grad mode) and ``u`` is
    ``None``: the caller takes the prediction from an ordinary forward.
    """

    def run() -> tuple[Tensor, Tensor]:
        return torch.func.jvp(lambda x, tt: net_fn(x, y, tt, r), (x_t, t), (v, torch.ones_like(t)))

    if reuse_primal:
        return run()
    with torch.no_grad():
        return None, run()[1]


def jvp_autograd(net_fn: NetFn, *, x_t: Tensor, y: Tensor, t: Tensor, r: Tensor, v: Tensor) -> Tensor:
    """``torch.autograd.functional.jvp`` (reverse mode twice, the reference's "autograd")."""
    with torch.enable_grad():
        _, dudt = torch.autograd.functional.jvp(
            lambda x, tt: net_fn(x, y, tt, r),
            (x_t.detach(), t.detach()),
            (v.detach(), torch.ones_like(t)),
            create_graph=False,
            strict=False,
        )
    return dudt


@torch.no_grad()
def jvp_fd(
    net_fn: NetFn,
    *,
    x_t: Tensor,
    y: Tensor,
    t: Tensor,
    r: Tensor,
    v: Tensor,
    eps_rel: float = 1e-3,
    chunk: int | None = None,
) -> Tensor:
    """Central difference with a per-sample step ``eps = eps_rel * (mean|x_t| + mean|v|)``.

    ``chunk`` bounds how many samples go through the network at once (memory, not maths).
    """
    dims = tuple(range(1, x_t.dim()))
    eps = eps_rel * (x_t.abs().mean(dims) + v.abs().mean(dims))
    step = chunk or x_t.shape[0]
    parts = []
    for i in range(0, x_t.shape[0], step):
        s = slice(i, i + step)
        e, xs, vs, ts = eps[s], x_t[s], v[s], t[s]
        ex = expand_time(e, xs)
        plus = net_fn(xs + ex * vs, y[s], ts + e, r[s])
        minus = net_fn(xs - ex * vs, y[s], ts - e, r[s])
        parts.append((plus - minus) / (2 * ex))
    return torch.cat(parts)


# What torch says when an op or an autograd.Function has no forward-mode rule; any other error
# (out of memory, a shape bug in the backbone) is not a reason to switch implementations.
_NO_FORWARD_RULE = ("forward ad", "forward mode", "forward-mode", "functorch transforms")


def missing_forward_rule(err: BaseException) -> bool:
    """Whether ``err`` means "this network cannot be traced in forward mode"."""
    if isinstance(err, torch.OutOfMemoryError):
        return False
    if isinstance(err, NotImplementedError):
        return True
    return isinstance(err, RuntimeError) and any(k in str(err).lower() for k in _NO_FORWARD_RULE)


class AutoJvp:
    """``auto``: the exact ``func`` JVP, falling back to ``fd`` (once, with a warning) when the
    network cannot be traced in forward mode. Stateful so the warning is not repeated. Any other
    error (out of memory included) propagates: falling back for good would hide it."""

    def __init__(self) -> None:
        self.fallback_reason: str | None = None

    def __call__(self, net_fn: NetFn, *, reuse_primal: bool = False, **kw) -> tuple[Tensor | None, Tensor]:
        if self.fallback_reason is None:
            try:
                return jvp_func(
                    net_fn, **{k: kw[k] for k in ("x_t", "y", "t", "r", "v")}, reuse_primal=reuse_primal
                )
            except (RuntimeError, NotImplementedError) as err:
                if not missing_forward_rule(err):
                    raise
                self.fallback_reason = f"{type(err).__name__}: {err}".splitlines()[0]
                log.warning(
                    "mf.jvp_impl=auto: torch.func.jvp failed (%s); using the finite "
                    "difference ('fd') from now on",
                    self.fallback_reason,
                )
        return None, jvp_fd(net_fn, **kw)


def clip_per_sample(j: Tensor, bound: float | None, mode: str = "norm") -> tuple[Tensor, Tensor]:
    """Scale each sample's JVP down to at most ``bound`` (``None``: no clip).

    ``norm``: ``bound`` is on the per-sample L2 norm (the reference), whose meaning changes with
    the number of bins in a crop; ``rms``: on the root-mean-square per element, i.e. the norm
    bound is ``bound * sqrt(elements per sample)``, the same per-element bound at any crop size.
    Returns the clipped JVP and a boolean ``[B]`` telling which samples were clipped.
    """
    if mode not in JVP_CLIP_MODES:
        raise ValueError(f"mf.jvp_clip_mode={mode!r}; use one of {JVP_CLIP_MODES}")
    flat = j.flatten(1)
    norms = flat.norm(dim=1)
    if bound is None:
        return j, torch.zeros_like(norms, dtype=torch.bool)
    max_norm = bound * flat.shape[1] ** 0.5 if mode == "rms" else bound
    scale = (max_norm / norms.clamp_min(1e-12)).clamp(max=1.0)
    return j * expand_time(scale, j), norms > max_norm
