"""The one list of metrics. Every key list in the package (CSV columns, summary keys, the printed
table, ``val/*`` logs, sweep records, gather tables and plots, the study's curves) derives from
:data:`METRICS`, read at call time.

Adding a metric is a function (in :mod:`meanflowse.metrics.scores` or a module of its own) and
one line here. A function is named by ``"module:attribute"`` and looked up at each call, so a
test that patches ``scores.pesq_wb`` patches what every caller measures with.

A function takes ``(reference, degraded, sample_rate)``: ``reference`` only when the metric
``needs_reference``, the rate only when ``takes_rate``. It returns a float, or for a metric with
``parts`` a ``{part: float}`` dict (DNSMOS gives SIG, BAK and OVRL from one network call). It
raises one of :data:`METRIC_FAILURES` when it cannot score a signal; :func:`score` turns that
(only that) into NaN plus an error message, so a run goes on.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from pesq import PesqError

from meanflowse.metrics.base import MetricError

# What a metric raises when it cannot score a file; PesqError: the PESQ library's own errors
# (pesq_wb wraps them; this is a second net).
METRIC_FAILURES: tuple[type[Exception], ...] = (MetricError, PesqError)


@dataclass(frozen=True)
class Metric:
    """One metric: its name, its function and how callers treat its numbers.

    ``switch``: the option that turns an optional metric on (``dnsmos``, ``speaker``); ``None``
    for a metric measured whenever it can be. ``brief``: the keys compact tables and plots show
    (None: all of :attr:`keys`)."""

    name: str
    function: str | Callable[..., Any]  # "module:attribute", looked up at each call, or a callable
    label: str
    needs_reference: bool = True
    takes_rate: bool = True
    parts: tuple[str, ...] = ()
    switch: str | None = None
    higher_is_better: bool = True
    brief: tuple[str, ...] | None = None
    decimals: int = 3  # for tables written for people (README figures)

    @property
    def keys(self) -> tuple[str, ...]:
        """The columns it fills: its name, or ``name_part`` per part."""
        return tuple(f"{self.name}_{p}" for p in self.parts) or (self.name,)

    @property
    def brief_keys(self) -> tuple[str, ...]:
        return self.keys if self.brief is None else self.brief

    def resolve(self) -> Callable[..., Any]:
        if callable(self.function):
            return self.function
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(module), attr)

    def __call__(self, ref: Any, deg: Any, sr: int) -> dict[str, float]:
        args = ((ref,) if self.needs_reference else ()) + (deg,) + ((sr,) if self.takes_rate else ())
        value = self.resolve()(*args)
        if self.parts:
            return {f"{self.name}_{p}": float(value[p]) for p in self.parts}
        return {self.name: float(value)}


_SCORES = "meanflowse.metrics.scores"
METRICS: tuple[Metric, ...] = (
    Metric("pesq", f"{_SCORES}:pesq_wb", "PESQ (wb)"),
    Metric("estoi", f"{_SCORES}:estoi", "ESTOI"),
    Metric("si_sdr", f"{_SCORES}:si_sdr", "SI-SDR (dB)", takes_rate=False, decimals=1),
    Metric(
        "dnsmos",
        f"{_SCORES}:dnsmos",
        "DNSMOS",
        needs_reference=False,
        parts=("sig", "bak", "ovrl"),
        switch="dnsmos",
        brief=("dnsmos_ovrl",),
    ),
    Metric("spk_sim", f"{_SCORES}:speaker_similarity", "speaker similarity", switch="speaker"),
)


def selected(**switches: bool) -> tuple[Metric, ...]:
    """The metrics a run measures: every one without a switch, and those whose switch is on
    (``selected(dnsmos=True)``). An unknown switch is a bug in the caller: KeyError."""
    known = {m.switch for m in METRICS if m.switch}
    unknown = set(switches) - known
    if unknown:
        raise KeyError(f"unknown metric switches {sorted(unknown)}; known: {sorted(known)}")
    return tuple(m for m in METRICS if m.switch is None or switches.get(m.switch, False))


def keys(metrics: Iterable[Metric] | None = None) -> tuple[str, ...]:
    """The columns of ``metrics`` (default: every registered metric), in registry order."""
    return tuple(k for m in (METRICS if metrics is None else metrics) for k in m.keys)


def brief_keys(metrics: Iterable[Metric] | None = None) -> tuple[str, ...]:
    return tuple(k for m in (METRICS if metrics is None else metrics) for k in m.brief_keys)


def reference_metrics() -> tuple[Metric, ...]:
    """The intrusive metrics measured in every run (what validation logs as ``val/*``)."""
    return tuple(m for m in selected() if m.needs_reference)


def reference_keys() -> tuple[str, ...]:
    return keys(reference_metrics())


def metric_of(key: str) -> Metric | None:
    """The registered metric that fills column ``key`` (None for a column of no metric)."""
    return next((m for m in METRICS if key in m.keys), None)


def label(key: str) -> str:
    """The axis or column title of a key: ``"SI-SDR (dB)"``, ``"DNSMOS OVRL"``."""
    for m in METRICS:
        if key == m.name:
            return m.label
        if key in m.keys:
            return f"{m.label} {key[len(m.name) + 1 :].upper()}"
    return key


def score(ref: Any | None, deg: Any, sr: int, metrics: Iterable[Metric]) -> dict[str, Any]:
    """``metrics`` of one signal: ``{key: value, ..., "errors": {name: message}}``.

    With ``ref=None`` the metrics that need a reference are left out. A metric that raises one of
    :data:`METRIC_FAILURES` gives NaN for each of its keys and one ``errors[name]`` entry;
    anything else is a bug and propagates."""
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for metric in metrics:
        if metric.needs_reference and ref is None:
            continue
        try:
            out.update(metric(ref, deg, sr))
        except METRIC_FAILURES as err:
            out.update({k: math.nan for k in metric.keys})
            errors[metric.name] = _message(err)
    out["errors"] = errors
    return out


def _message(err: Exception) -> str:
    """Our own messages say what failed; a library's error gets its type in front."""
    return str(err) if isinstance(err, MetricError) else f"{type(err).__name__}: {err}"


def present(rows: Iterable[Mapping[str, Any]], candidates: Iterable[str]) -> list[str]:
    """The ``candidates`` that have a finite value in at least one row, in their order."""
    rows = list(rows)
    return [k for k in candidates if any(is_finite(r.get(k)) for r in rows)]


def is_finite(value: Any) -> bool:
    """A measured value (a missing key, None, an error's NaN or text that is no number is not one)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
