"""Exponential moving average of the weights, as a Lightning callback.

The EMA weights are saved in every checkpoint (its state under ``callbacks["EMA"]``; where and
who reads it: :mod:`meanflowse.checkpoint_contents`), restored on resume, swapped in for
validation, and used by evaluation by default. Under DDP every rank holds the same parameters
after each step, so every rank's average is the same too.

Why our own rather than Lightning's ``EMAWeightAveraging`` (checked against the installed
Lightning 2.6 source, ``lightning/pytorch/callbacks/weight_averaging.py``, and torch's
``swa_utils``):
- its average is ``get_ema_avg_fn(decay)``, a fixed decay: no warm-up ``min(decay, (1+n)/(10+n))``,
  so a short run (the demo, tests) averages mostly the random initial weights;
- its first update copies the weights (``AveragedModel`` with ``n_averaged == 0``) rather than
  starting from the initial ones;
- ``on_save_checkpoint`` writes the *average* as the checkpoint's ``state_dict`` and moves the
  training weights to ``current_model_state``: every reader of ``state_dict`` (evaluation with
  ``use_ema=false``, resume) would change meaning;
- ``on_train_end`` copies the average into the model, so the module in memory after ``fit`` no
  longer holds the training weights;
- resuming needs ``current_model_state`` and ``averaging_state`` (and ``latest_update_step`` in
  its callback state), which no checkpoint written so far has: it would warn and restart the
  average from the training weights, dropping the stored one.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from meanflowse.checkpoint_contents import EMA_KEY


class EMA(Callback):
    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        """``warmup`` uses ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so short runs
        (the demo, tests) get a useful average instead of the random initial weights."""
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay={decay}: must be in [0, 1)")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {}
        self._backup: dict[str, torch.Tensor] | None = None
        self._last_step = 0  # trainer.global_step at the last update (steps count from 1)

    @property
    def state_key(self) -> str:
        return EMA_KEY

    def _params(self, pl_module: LightningModule) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        params = self._params(pl_module)
        if not self.shadow:  # a resumed run keeps the shadow it loaded
            self.shadow = {n: p.detach().clone() for n, p in params.items()}
        else:
            self.shadow = {n: t.to(params[n].device) for n, t in self.shadow.items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        # one update per optimizer step: not for accumulation batches or skipped (NaN) steps
        if trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        self.num_updates += 1
        n = self.num_updates
        decay = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        for name, p in self._params(pl_module).items():
            self.shadow[name].lerp_(p.detach(), 1.0 - decay)

    @torch.no_grad()
    def _swap_in(self, pl_module: LightningModule) -> None:
        if not self.shadow or self._backup is not None:
            return
        params = self._params(pl_module)
        self._backup = {n: p.detach().clone() for n, p in params.items()}
        for n, p in params.items():
            p.copy_(self.shadow[n])

    @torch.no_grad()
    def _swap_out(self, pl_module: LightningModule) -> None:
        if self._backup is None:
            return
        for n, p in self._params(pl_module).items():
            p.copy_(self._backup[n])
        self._backup = None

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._swap_in(pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning runs ModelCheckpoint after the other callbacks, so checkpoints written at
        # validation end hold the training weights in state_dict and the average here.
        self._swap_out(pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._swap_out(pl_module)  # never leave the average in place of the training weights

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {n: t.detach().cpu() for n, t in self.shadow.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_updates = int(state_dict["num_updates"])
        self._last_step = -1  # a resumed run's first step is new, whatever its number
        self.shadow = dict(state_dict["shadow"])
