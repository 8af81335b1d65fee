"""Figures for ``eval.py plots=true``: a spectrogram per file and one summary figure.

matplotlib is optional: importing this module raises ImportError without it, and
:func:`meanflowse.inference.evaluation.evaluate` turns that into a clear error before enhancing anything.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, safe in worker threads and on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from meanflowse.atomic import atomic_path  # noqa: E402

_DB_RANGE = 80.0  # colour range below the loudest bin of the figure


def _save(fig, path: Path) -> None:
    """Atomic like every other output: temp file beside ``path``, then rename."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)


def _db_spectrogram(wav: torch.Tensor, sr: int) -> np.ndarray:
    n_fft = 1 << max(8, int(round(math.log2(0.032 * sr))))  # ~32 ms at any rate
    spec = torch.stft(
        wav.float(), n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True
    ).abs()
    return (20 * torch.log10(spec.clamp_min(1e-8))).numpy()


def spectrogram_figure(
    path: Path,
    *,
    noisy: torch.Tensor,
    enhanced: torch.Tensor,
    clean: torch.Tensor | None,
    sr: int,
    title: str = "",
) -> None:
    """Log-magnitude spectrograms of noisy, enhanced and (when given) clean ``[L]`` signals on
    one colour scale, written to ``path`` (PNG)."""
    panels = [("noisy", noisy), ("enhanced", enhanced)] + ([("clean", clean)] if clean is not None else [])
    specs = [(name, _db_spectrogram(w, sr)) for name, w in panels]
    top = max(s.max() for _, s in specs)
    duration = noisy.shape[-1] / sr
    fig, axes = plt.subplots(len(specs), 1, figsize=(9, 2.2 * len(specs)), sharex=True, squeeze=False)
    for ax, (name, s) in zip(axes[:, 0], specs):
        im = ax.imshow(
            s,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - _DB_RANGE,
            vmax=top,
            extent=(0, duration, 0, sr / 2000),
        )
        ax.set_ylabel(f"{name}\nkHz")
    axes[-1, 0].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="dB", shrink=0.9)
    fig.suptitle(title)
    _save(fig, path)


def summary_figure(path: Path, rows: Sequence[dict[str, Any]], *, keys: Sequence[str]) -> None:
    """One panel per metric: the per-file values of the noisy input and the enhanced output
    (box plot with the points on top), for the metrics that have any finite value."""

    def finite(key: str) -> list[float]:
        vals = [r.get(key) for r in rows]
        return [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]

    shown = [k for k in keys if finite(k) or finite("noisy_" + k)]
    if not shown:
        return
    cols = min(3, len(shown))
    nrows = -(-len(shown) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.0 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, shown):
        data = [finite("noisy_" + key), finite(key)]
        ax.boxplot(
            [d if d else [math.nan] for d in data], tick_labels=["noisy", "enhanced"], showfliers=False
        )
        for i, d in enumerate(data, start=1):
            jitter = np.random.default_rng(i).uniform(-0.08, 0.08, len(d))
            ax.scatter(np.full(len(d), i) + jitter, d, s=8, alpha=0.6)
        ax.set_title(key)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.suptitle(f"{len(rows)} files")
    fig.tight_layout()
    _save(fig, path)
