"""``train(cfg)``: build everything from a composed config and fit. Tests call it directly."""
from __future__ import annotations

import logging
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

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


def _instantiate_all(node: DictConfig | None) -> list[Any]:
    return [instantiate(c) for c in (node or {}).values() if c is not None and "_target_" in c]


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it may not show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = _instantiate_all(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log.info("backbone %s: %.2fM parameters", cfg.backbone._target_.rsplit(".", 1)[-1],
             sum(p.numel() for p in module.backbone.parameters()) / 1e6)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule}
