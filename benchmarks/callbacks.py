"""Lightning callbacks that benchmark runs add on the command line (``+callbacks.x._target_=...``)."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback


class ReportBackend(Callback):
    """Prints the distributed backend and world size once training starts (gpu.sh's ``ddp1``:
    ``trainer=ddp trainer.devices=1`` on a GPU must run NCCL, the multi-GPU code path with one rank)."""

    def on_train_start(self, trainer, pl_module) -> None:
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
        print(f"process group backend: {backend}, world size {trainer.world_size}", flush=True)
