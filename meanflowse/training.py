"""``train(cfg)``: build everything from a composed config and fit. Tests call it directly."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

from meanflowse.checkpointing import AtomicCheckpointIO, resolve_ckpt_path, run_dir_of
from meanflowse.config import to_dataclass
from meanflowse.lit_module import MeanFlowSEModule

log = logging.getLogger(__name__)


def build_module(cfg: DictConfig) -> MeanFlowSEModule:
    """The LightningModule described by ``cfg`` (fresh weights)."""
    return MeanFlowSEModule(
        backbone=instantiate(cfg.backbone),
        path=to_dataclass(cfg, "path"), mf=to_dataclass(cfg, "mf"),
        curriculum=to_dataclass(cfg, "curriculum"), sampler=to_dataclass(cfg, "sampler"),
        optimizer=instantiate(cfg.optim),
        config=OmegaConf.to_container(cfg, resolve=True))


def rank_seed(seed: int, rank: int, step: int) -> int:
    """A seed for the training noise (t, r, z) of one rank from one step on."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


class RankSeed(Callback):
    """Every rank starts from ``seed`` (so the initial weights agree); when training starts,
    each rank's noise stream is reseeded from ``(seed, rank, global_step)``, so ranks draw
    different t, r, z and a resumed run draws fresh, reproducible noise."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        s = rank_seed(self.seed, trainer.global_rank, trainer.global_step)
        torch.manual_seed(s)
        np.random.seed(s % 2**32)


def _instantiate_all(node: DictConfig | None) -> list[Any]:
    return [instantiate(c) for c in (node or {}).values() if c is not None and "_target_" in c]


def _resume_target(cfg: DictConfig) -> Path | None:
    """Resolve ``ckpt_path`` (``last``: the newest ``last.ckpt`` of this run's folder and its
    sibling runs; a run folder; a file). A run resumed from its own
    ``checkpoints/`` folder keeps writing there (checkpoints, logs), so ``best`` tracking and
    ``ckpt_path=last`` carry on across restarts."""
    ckpt = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir=cfg.paths.get("output_dir"))
    if ckpt is None:
        return None
    run = run_dir_of(ckpt)
    with open_dict(cfg):
        cfg.ckpt_path = str(ckpt)
        if run is not None:
            cfg.paths.output_dir = str(run)
    log.info("resuming from %s", ckpt)
    return ckpt


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    os.environ.setdefault("WANDB_SILENT", "true")  # offline W&B: no banners, never a prompt
    ckpt = _resume_target(cfg)
    L.seed_everything(cfg.seed, workers=True)  # same on every rank: identical initial weights
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    if cfg.get("compile"):
        # in place, so parameter names (checkpoints, EMA) stay those of the plain backbone
        module.backbone.compile()
    callbacks = [*_instantiate_all(cfg.get("callbacks")), RankSeed(cfg.seed)]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it may not show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = _instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                          plugins=[AtomicCheckpointIO()])
    log.info("backbone %s: %.2fM parameters", cfg.backbone._target_.rsplit(".", 1)[-1],
             sum(p.numel() for p in module.backbone.parameters()) / 1e6)
    # Our checkpoints hold tensors and plain containers only, so the safe loader reads them.
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule}
