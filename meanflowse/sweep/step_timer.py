"""``StepTimer``: the wall time of each training step, split by whether the JVP ran, and the
job's peak memory."""

from __future__ import annotations

import resource

import torch
from lightning.pytorch.callbacks import Callback

from meanflowse.metrics import scores as M
from meanflowse.sweep.gather import mean_or_nan


class StepTimer(Callback):
    """Wall time per training step (forward, JVP, backward, optimizer), device-synchronised.

    Steps are split by whether the MeanFlow branch, and so the JVP, runs: the curriculum skips
    it early in training, and only those steps tell the JVP implementations apart. The first
    ``skip`` steps of each kind are left out (allocator and kernel warm-up).
    """

    def __init__(self, *, skip: int = 2) -> None:
        self.skip = skip
        self.laps: dict[str, list[float]] = {"mf": [], "cfm": []}
        self._watch: M.Stopwatch | None = None
        self._kind = "cfm"
        self.peak_memory_mb = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        weight_at = getattr(pl_module.objective, "weight_at", None)  # objectives with a JVP term
        w = weight_at(pl_module.progress(), pl_module.curriculum) if weight_at else 0.0
        self._kind = "mf" if w > 0 else "cfm"
        self._watch = M.Stopwatch(pl_module.device).start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._watch is not None:
            self.laps[self._kind].append(self._watch.stop())
            self._watch = None

    def on_train_end(self, trainer, pl_module) -> None:
        """Peak memory of the training: the GPU's allocations on CUDA, else the process's
        resident peak (``ru_maxrss``, which covers the whole process up to now)."""
        if pl_module.device.type == "cuda":
            self.peak_memory_mb = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        else:
            self.peak_memory_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    def summary(self) -> dict[str, float]:
        mf, cfm = self.laps["mf"][self.skip :], self.laps["cfm"][self.skip :]
        return {
            "step_time_s": mean_or_nan(mf + cfm),
            "step_time_mf_s": mean_or_nan(mf),
            "step_time_cfm_s": mean_or_nan(cfm),
            "steps_timed_mf": len(mf),
            "peak_memory_mb": self.peak_memory_mb,
        }
