"""What the backbone's output means (``mf.parametrization``).

``velocity``: the output is the average velocity ``u(x_t, r, t | y)`` itself (the reference).
``data``: the output ``F`` corrects the noisy input to a clean estimate ``x0_hat = y + F``, and
``u = (x_t - x0_hat) / t``. Any ``u`` can be written so for ``t > 0``, so the model class is the
same; what changes is what the network has to learn (a residual on the scale of the clean
spectrogram) and that a one-step jump from ``t = 1`` to ``r = 0`` lands exactly on ``y + F``.
The division is part of the network function, so the JVP differentiates through it.
"""

from __future__ import annotations

from torch import Tensor

from meanflowse.method.path import expand_time

PARAMETRIZATIONS = ("velocity", "data")


def average_velocity(out: Tensor, *, x_t: Tensor, y: Tensor, t: Tensor, kind: str) -> Tensor:
    """The average velocity ``u`` from the backbone output ``out`` (``t > 0``)."""
    if kind == "velocity":
        return out
    if kind == "data":
        return (x_t - (y + out)) / expand_time(t, x_t)
    raise ValueError(f"mf.parametrization={kind!r}; use one of {PARAMETRIZATIONS}")


def loss_weight(t: Tensor, *, kind: str, loss: str) -> Tensor | None:
    """Per-sample weight that puts the loss on the scale of ``x0_hat`` for ``data``.

    The velocity error is ``(x0_hat - x0_target) / t``: unweighted it grows as ``1/t^2`` (mse)
    near ``t_eps``. ``mse`` is weighted by ``t^2`` (``0.5 |t u - t u_tgt|^2``), ``mae`` by ``t``
    (``sum |t u - t u_tgt|``). ``None`` (no weighting) for ``velocity``.
    """
    if kind == "velocity":
        return None
    if kind != "data":
        raise ValueError(f"mf.parametrization={kind!r}; use one of {PARAMETRIZATIONS}")
    return t.pow(2) if loss == "mse" else t
