"""``StepTimer``: the wall time of each training step, split by whether the JVP ran."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from meanflowse.method.curriculum import mf_weight
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

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        cur = pl_module.curriculum
        w = mf_weight(pl_module.progress(), weight_final=pl_module.mf.weight_final, cfg=cur)
        self._kind = "mf" if w > 0 and w >= cur.mf_skip_below else "cfm"
        self._watch = M.Stopwatch(pl_module.device).start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._watch is not None:
            self.laps[self._kind].append(self._watch.stop())
            self._watch = None

    def summary(self) -> dict[str, float]:
        mf, cfm = self.laps["mf"][self.skip :], self.laps["cfm"][self.skip :]
        return {
            "step_time_s": mean_or_nan(mf + cfm),
            "step_time_mf_s": mean_or_nan(mf),
            "step_time_cfm_s": mean_or_nan(cfm),
            "steps_timed_mf": len(mf),
        }
