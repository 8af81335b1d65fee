"""The sweep's figures: each metric against NFE (a line per c, or per objective and c), and the
training step time per JVP implementation (and objective). ``gather`` draws them."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from meanflowse.atomic import atomic_path
from meanflowse.metrics import registry
from meanflowse.sweep.gather import _method, _varies, mean_or_nan


def _line_label(row: dict, objectives_vary: bool) -> str:
    """A plot line's name: ``c = 0.5``, or ``imf, c = 1`` when the sweep varies the objective
    (cfm and split have no c: None in a record, an empty cell in the CSV)."""
    c, parts = row.get("c"), [str(row.get("objective"))] if objectives_vary else []
    parts += [f"c = {float(c):g}"] if c not in (None, "") else []
    return ", ".join(parts) or str(row.get("objective"))


def _save_figure(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


MARKERS = ("o", "s", "^", "D", "v", "P")


def plot_metric_vs_nfe(rows: list[dict], path: Path) -> Path | None:
    """One panel per metric: the mean over JVP implementations against NFE, a line and marker per
    c with bars of the jobs' mean 95% interval over files, each job a faint dot, the noisy input
    dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r.get("nfe") is not None]
    keys = registry.present(ok, registry.reference_keys())
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        by_line: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
        vary = _varies(ok, "objective")
        for r in ok:  # (the job's mean, its 95% half-width over files)
            if math.isfinite(r.get(key, math.nan)):
                by_line[_line_label(r, vary)][r["nfe"]].append((r[key], r.get(f"{key}_ci95", math.nan)))
        for i, (label, by_nfe) in enumerate(sorted(by_line.items())):
            nfes = sorted(by_nfe)
            # lines of equal values would hide each other: each line gets its marker and a small
            # shift along the (log) NFE axis
            xs = [n * 1.04**i for n in nfes]
            means = [mean_or_nan([v for v, _ in by_nfe[n]]) for n in nfes]
            bars = [mean_or_nan([h for _, h in by_nfe[n] if math.isfinite(h)]) for n in nfes]
            line = ax.errorbar(
                xs, means, yerr=bars, marker=MARKERS[i % len(MARKERS)], capsize=3, label=label
            )[0]
            for x, n in zip(xs, nfes):
                ax.scatter(
                    [x] * len(by_nfe[n]), [v for v, _ in by_nfe[n]], color=line.get_color(), alpha=0.3, s=12
                )
        noisy = [r[f"noisy_{key}"] for r in ok if math.isfinite(r.get(f"noisy_{key}", math.nan))]
        if noisy:
            ax.axhline(mean_or_nan(noisy), color="gray", linestyle="--", linewidth=1, label="noisy input")
        ax.set_xscale("log")
        ticks = sorted({r["nfe"] for r in ok})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel="NFE", ylabel=registry.label(key), title=f"{registry.label(key)} against NFE")
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=6))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    try:
        return _save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_step_time(rows: list[dict], path: Path) -> Path | None:
    """Mean training-step time per JVP implementation (per objective too, :func:`_method`; steps
    with the span branch on), a dot per job; dashed: the steps without it, for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_job = {r["job"]: r for r in rows if r["status"] == "ok"}  # one row per job is enough
    by_impl: dict[str, list[float]] = defaultdict(list)
    for r in per_job.values():
        ms = r.get("mf_step_ms", math.nan)
        if not math.isfinite(ms):
            ms = r.get("step_ms", math.nan)
        if math.isfinite(ms):
            by_impl[_method(r)].append(ms)
    if not by_impl:
        return None
    impls = sorted(by_impl, key=lambda k: mean_or_nan(by_impl[k]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(impls), 3.4))
    ax.bar(impls, [mean_or_nan(by_impl[k]) for k in impls], color="tab:blue", alpha=0.6)
    for i, k in enumerate(impls):
        ax.scatter([i] * len(by_impl[k]), by_impl[k], color="black", s=12, zorder=3)
    cfm = [r["step_cfm_ms"] for r in per_job.values() if math.isfinite(r.get("step_cfm_ms", math.nan))]
    if cfm:
        ax.axhline(mean_or_nan(cfm), color="gray", linestyle="--", linewidth=1, label="without JVP")
        ax.legend(fontsize=8)
    ax.set(
        xlabel="mf.jvp_impl (objective/jvp_impl beside MeanFlow)",
        ylabel="ms per training step",
        title="training step time (MeanFlow steps)",
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        return _save_figure(fig, path)
    finally:
        plt.close(fig)
