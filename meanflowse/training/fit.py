"""``train(cfg)``: build everything from a composed config and fit. Tests call it directly."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

from meanflowse.config import (
    MODEL_PARTS,
    TRAIN_NUMBERS,
    ConfigError,
    build_part,
    check_numbers,
    dotted_leaves,
)
from meanflowse.training.checkpointing import AtomicCheckpointIO, resume_checkpoint, run_dir_of
from meanflowse.training.lit_module import MeanFlowSEModule
from meanflowse.training.quiet import silence_known_noise

log = logging.getLogger(__name__)


def build_module(cfg: DictConfig) -> MeanFlowSEModule:
    """The LightningModule described by ``cfg`` (fresh weights): each part of
    :data:`~meanflowse.config.MODEL_PARTS` instantiated from its ``_target_`` node, in order."""
    parts = {arg: build_part(cfg, key) for arg, key in MODEL_PARTS.items()}
    return MeanFlowSEModule(
        **parts, optimizer=instantiate(cfg.optim), config=OmegaConf.to_container(cfg, resolve=True)
    )


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"mf.first_order_coef": 0.5, ...}``: W&B groups and filters runs
    by top-level keys, which a nested ``config`` key would hide one level down."""
    return dotted_leaves(OmegaConf.to_container(cfg, resolve=True))


def log_flat_config(loggers: list, cfg: DictConfig) -> None:
    """The flat config into each W&B run (rank 0's; other ranks' loggers ignore it)."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.config.update(flat_config(cfg), allow_val_change=True)


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
    sibling runs that trained the same model and objective; a run folder; a file) and refuse a
    run trained with another one unless ``resume_force`` (checkpointing.RESUME_KEYS). A run
    resumed from its own ``checkpoints/`` folder keeps writing there (checkpoints, logs), so
    ``best`` tracking and ``ckpt_path=last`` carry on across restarts."""
    ckpt, diffs = resume_checkpoint(
        cfg.get("ckpt_path"),
        config=cfg,
        run_dir=cfg.paths.get("output_dir"),
        force=bool(cfg.get("resume_force", False)),
    )
    if ckpt is None:
        return None
    if diffs:
        log.warning(
            "resume_force=true: resuming %s, trained with another model or objective "
            "(%s); it goes on with this config",
            ckpt,
            "; ".join(diffs),
        )
    run = run_dir_of(ckpt)
    with open_dict(cfg):
        cfg.ckpt_path = str(ckpt)
        if run is not None:
            cfg.paths.output_dir = str(run)
    log.info("resuming from %s", ckpt)
    return ckpt


# Keys left at ``???`` that a first run often misses, with what to pass.
MISSING_HINTS = {
    "data.base_dir": "the dataset folder, laid out as base_dir/{train,valid,test}/{clean,noisy}/ "
    "(pass data.base_dir=/path/to/dataset, or data=synthetic for the built-in one)",
}


def check_config(cfg: DictConfig) -> None:
    """Refuse first-run mistakes before any data or model is built, as one-line ConfigErrors."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            "; ".join(f"{k} is required: {MISSING_HINTS.get(k, f'pass {k}=...')}" for k in missing)
        )
    base_dir = cfg.data.get("base_dir")
    if cfg.data.get("synthetic") is None and base_dir and not Path(base_dir).is_dir():
        # (a generated corpus creates its folder; a dataset must be there)
        raise ConfigError(
            f"data.base_dir={base_dir}: no such folder; pass the dataset folder, "
            "laid out as base_dir/{train,valid,test}/{clean,noisy}/"
        )
    check_numbers(cfg, TRAIN_NUMBERS)  # data.batch_size=0, sampler.nfe=-1 ...: one line, now
    steps, epochs = cfg.trainer.get("max_steps", -1), cfg.trainer.get("max_epochs")
    if steps == 0 or steps < -1:
        raise ConfigError(
            f"trainer.max_steps={steps}: nothing would be trained; set a positive "
            "number of steps, or -1 to train for trainer.max_epochs"
        )
    if steps == -1 and epochs == 0:
        raise ConfigError(
            "trainer.max_epochs=0 with trainer.max_steps=-1: nothing would be "
            "trained; set trainer.max_steps or a positive trainer.max_epochs"
        )
    _check_validation_nfes(cfg)


def _check_validation_nfes(cfg: DictConfig) -> None:
    """Each ``callbacks.val_metrics.nfe_extra`` step count must suit the model's sampler (heun
    takes an even nfe), or the first validation, minutes in, would fail."""
    from meanflowse.method.samplers import check_nfe, resolve_sampler

    extra = ((cfg.get("callbacks") or {}).get("val_metrics") or {}).get("nfe_extra") or []
    if not extra:
        return
    objective = build_part(cfg, "mf")
    name = resolve_sampler(cfg.sampler.name, trained_with_meanflow=objective.learns_average_velocity)
    for nfe in extra:
        try:
            check_nfe(name, int(nfe))
        except ValueError as err:
            raise ConfigError(f"callbacks.val_metrics.nfe_extra: {err}") from None


def _build_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> Trainer:
    """The Lightning Trainer; a setting Lightning refuses (e.g. ``trainer=gpu`` without a GPU)
    comes out as a ConfigError with Lightning's reason, not wrapped in Hydra's exception."""
    try:
        return instantiate(trainer_cfg, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, MisconfigurationException):
            raise ConfigError(
                f"trainer: {err.__cause__} (the trainer= group, e.g. trainer=cpu on a machine without a GPU)"
            ) from err
        raise


def cpu_precision_note(precision: str, *, on_cpu: bool) -> str | None:
    """A warning for bf16 autocast on a CPU, None otherwise. Measured on the 2-core machine
    (BENCHMARKS.md sections 2 and 7): it speeds up the full NCSN++ but made the demo's narrow
    network far slower, so a user who sets it for a small CPU run should know before waiting."""
    if not (on_cpu and str(precision).startswith("bf16")):
        return None
    return (
        f"trainer.precision={precision} on the CPU: it sped up the full NCSN++ 1.6x per step but "
        "made the demo's narrow network (nf 16) about 28x slower (BENCHMARKS.md sections 2 and 7); "
        "time a few steps first, or use trainer.precision=32-true"
    )


def compile_note(compile_backbone: bool, jvp_impl: str | None) -> str | None:
    """A warning for ``compile=true`` with the ``func`` JVP (``auto`` tries it first), None
    otherwise. Measured (BENCHMARKS.md section 7, torch 2.11): dynamo cannot trace the backbone
    under ``torch.func.jvp`` (forward-mode dual tensors) and runs it eagerly, and compiling then
    bought nothing per step, where the ``fd`` JVP's plain forwards compile."""
    if not compile_backbone or jvp_impl not in ("func", "auto"):
        return None
    return (
        f"compile=true with mf.jvp_impl={jvp_impl}: torch.compile falls back to eager for the "
        "backbone inside torch.func.jvp, and on the 2-core CPU compiling gave no speed-up per step "
        "(0.98 against 1.01 steps/s at nf 24) where mf.jvp_impl=fd compiled gained 14% "
        "(BENCHMARKS.md section 7)"
    )


def accumulation(
    global_batch: int | None, batch_size: int, world_size: int, accumulate: int = 1
) -> tuple[int, str]:
    """``(micro-batches per optimizer step, the sentence the log says)`` for
    ``data.global_batch_size`` over ``world_size`` processes of ``batch_size`` each."""
    per_pass = batch_size * world_size
    where = f"{batch_size} per device x {world_size} device{'s' if world_size > 1 else ''}"
    if global_batch is None:
        return accumulate, f"global batch {per_pass * accumulate}: {where}" + (
            f" x {accumulate} accumulated (trainer.accumulate_grad_batches)" if accumulate > 1 else ""
        )
    if accumulate != 1:
        raise ConfigError(
            f"data.global_batch_size={global_batch} and trainer.accumulate_grad_batches={accumulate}: "
            "set one of them (data.global_batch_size=null keeps the trainer's)"
        )
    if global_batch < per_pass or global_batch % per_pass:
        raise ConfigError(
            f"data.global_batch_size={global_batch} is not a multiple of data.batch_size x devices "
            f"({where} = {per_pass}); choose a batch_size that divides it, or data.global_batch_size=null"
        )
    k = global_batch // per_pass
    return k, f"global batch {global_batch}: {where}" + (
        f" x {k} micro-batches accumulated (data.global_batch_size)" if k > 1 else ""
    )


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    os.environ.setdefault("WANDB_SILENT", "true")  # offline W&B: no banners, never a prompt
    silence_known_noise()
    check_config(cfg)
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
    trainer = _build_trainer(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    # The world size is known once the Trainer has resolved its devices ("auto", a list ...);
    # Lightning reads accumulate_grad_batches only when the fit loop runs.
    trainer.accumulate_grad_batches, batch_note = accumulation(
        datamodule.global_batch_size,
        datamodule.batch_size,
        trainer.world_size,
        trainer.accumulate_grad_batches,
    )
    log.info(batch_note)
    notes = (
        cpu_precision_note(trainer.precision, on_cpu=isinstance(trainer.accelerator, CPUAccelerator)),
        compile_note(bool(cfg.get("compile")), cfg.mf.get("jvp_impl")),
    )
    for note in notes:
        if note and trainer.is_global_zero:  # once, not once per process
            log.warning(note)
    log_flat_config(loggers, cfg)
    params = list(module.backbone.parameters())
    log.info(
        "backbone %s: %s parameters (%s trained), %.1f MB; objective %s",
        cfg.backbone._target_.rsplit(".", 1)[-1],
        f"{sum(p.numel() for p in params):,}",
        f"{sum(p.numel() for p in params if p.requires_grad):,}",
        sum(p.numel() * p.element_size() for p in params) / 1e6,
        type(module.objective).__name__,
    )
    # Our checkpoints hold tensors and plain containers only, so the safe loader reads them.
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return metrics, {"trainer": trainer, "module": module, "datamodule": datamodule}
