"""Each registered metric as a ``torchmetrics.Metric``: per-file values in a "cat" state.

``FileMetric(metric).update(preds, target, sample_rate)`` scores one file with the registry's
function (the project's input checks; NaN for a file it cannot score, the message in
:attr:`FileMetric.last`), and appends the value. ``compute()`` is the mean over the finite
values of every file, so a failed file never poisons a mean; under DDP torchmetrics gathers the
per-file lists of every rank first, so ranks that scored disjoint shares all get the mean over
all files. Keeping per-file values (not a running sum) is what lets ``metrics.csv`` keep a row
per file and the summary its 95% intervals.

Which torchmetrics code runs underneath (measured, tests/test_metrics.py and BENCHMARKS.md §5):

* PESQ: ``torchmetrics.functional.audio.perceptual_evaluation_speech_quality``. It returns a
  float32 tensor, but the pesq library computes in single precision, so nothing is lost: equal
  to the pesq package's value on the 12 demo test files and the real pair (difference 0.0);
* ESTOI: ``torchmetrics.functional.audio.short_time_objective_intelligibility`` (float64; at
  most 1.1e-16 from calling pystoi directly on the demo files). pystoi's 1e-5 placeholder below
  30 frames stays our MetricError (NaN);
* SI-SDR: ours. torchmetrics' formula (``zero_mean=True``, float64) equals ours to 1e-14 dB on
  the real pair (0.103790 dB both), but it adds float64 eps to both energies instead of capping,
  so an exact copy of the real speech scores 186.7 dB at peak 1.0, 166.7 dB at peak 0.1 and
  146.7 dB at peak 0.01: a ceiling that moves with the level, where ours is 200 dB at any level;
* DNSMOS: ours (``meanflowse.metrics.dnsmos``): torchmetrics' DNSMOS downloads its ONNX models at
  run time and needs librosa, neither of which this project may rely on;
* speaker similarity: ours (resemblyzer); torchmetrics has none.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torchmetrics
from torchmetrics.utilities import dim_zero_cat

from meanflowse.metrics import registry


class FileMetric(torchmetrics.Metric):
    """One registered metric, file by file (see the module docstring)."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, metric: registry.Metric, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metric = metric
        for key in metric.keys:
            self.add_state(self._state(key), default=[], dist_reduce_fx="cat")
        # float64 states; a rank that scored no file then sends an empty float64 tensor
        self.set_dtype(torch.float64)
        self.last: dict[str, Any] = {}  # the last update: {key: value, "errors": {name: message}}

    @property
    def higher_is_better(self) -> bool:  # torchmetrics' attribute, from the registry's entry
        return self.metric.higher_is_better

    @staticmethod
    def _state(key: str) -> str:
        return f"values_{key}"

    def update(self, preds: Any, target: Any | None, sample_rate: int) -> None:
        """Score one file: ``preds`` the signal, ``target`` its clean reference (None for a
        metric that needs none), both 1-D."""
        self.last = registry.score(target, preds, sample_rate, [self.metric])
        for key in self.metric.keys:
            value = torch.tensor([self.last[key]], dtype=torch.float64, device=self.device)
            getattr(self, self._state(key)).append(value)

    def values(self, key: str) -> torch.Tensor:
        """The value of ``key`` of each file this process scored (``compute`` gathers every
        rank's for the mean, then gives each rank its own back)."""
        held = getattr(self, self._state(key))
        if isinstance(held, list) and not held:
            return torch.zeros(0, dtype=torch.float64, device=self.device)
        return dim_zero_cat(held)

    def compute(self) -> dict[str, torch.Tensor]:
        """``{key: mean over the files with a finite value}`` (NaN when there is none)."""
        out = {}
        for key in self.metric.keys:
            values = self.values(key)
            finite = values[torch.isfinite(values)]
            out[key] = finite.mean() if finite.numel() else torch.tensor(math.nan, dtype=torch.float64)
        return out
