"""LightningModule: glue between the data, the backbone and the pure MeanFlow functions."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Callable

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from meanflowse.config import ConfigError
from meanflowse.inference.model import InferenceModel
from meanflowse.method.curriculum import CurriculumConfig, lr_factor, sample_t
from meanflowse.method.objective import NonFiniteError, ObjectiveConfig, cfm_loss
from meanflowse.method.objectives import PathBatch
from meanflowse.method.path import PathConfig, complex_noise_like, conditional_velocity, sample_xt
from meanflowse.method.samplers import SamplerConfig, check_nfe, resolve_sampler

log = logging.getLogger(__name__)


class MeanFlowSEModule(LightningModule):
    """Trains ``backbone`` to give the average velocity ``u(x_t, r, t | y)``, directly or through
    the ``data`` parametrization (``mf.parametrization``, see ``net_fn``).

    It receives built parts (``training.fit.build_module`` instantiates them from the config's
    ``_target_`` nodes): the backbone, the path, the ``objective`` (batch on the path in, loss and
    logs out; :mod:`meanflowse.method.objectives`), the curriculum and the sampler settings.
    Batches are ``{"clean": [B,2,F,T], "noisy": [B,2,F,T]}`` compressed spectrograms.
    ``config`` (the composed Hydra config) is stored in every checkpoint so that evaluation can
    rebuild the model from the checkpoint alone.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        path: PathConfig,
        objective: ObjectiveConfig,
        curriculum: CurriculumConfig,
        sampler: SamplerConfig,
        optimizer: Callable[..., torch.optim.Optimizer] = partial(torch.optim.Adam, lr=1e-4),
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.trained_with_meanflow = bool(objective.learns_average_velocity)
        try:  # an unknown mf.* or sampler choice fails here, before data or training
            objective.check()
            name = resolve_sampler(sampler.name, trained_with_meanflow=self.trained_with_meanflow)
            check_nfe(name, sampler.nfe)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.backbone = backbone
        self.path, self.objective, self.curriculum, self.sampler_cfg = path, objective, curriculum, sampler
        self.optimizer_factory = optimizer
        self.save_hyperparameters({"config": config})
        # set by training_step when every rank skips a non-finite step; cleared once the optimizer
        # step it belongs to is done, so under gradient accumulation a non-finite micro-batch
        # skips its whole optimizer step (the window's gradients are then zeroed unused)
        self._skip_step = False
        # built once: net_fn runs several times a training step (and inside the JVP)
        self._inference = InferenceModel(
            backbone=self.backbone,
            path=self.path,
            parametrization=self.objective.parametrization,
            sampler_cfg=self.sampler_cfg,
            trained_with_meanflow=self.trained_with_meanflow,
            config=self.hparams.get("config") or {},
        )

    # -- the network as a function of (x_t, y, t, r) -------------------------------------------
    @property
    def inference(self) -> InferenceModel:
        """This model as inference sees it (a view over ``backbone``, no copy): what validation
        and the ``Enhancer`` of a module that is still training enhance with."""
        return self._inference

    def net_fn(self, x_t: Tensor, y: Tensor, t: Tensor, r: Tensor) -> Tensor:
        """The average velocity; training, validation, the JVP and the samplers all call this."""
        return self.inference.net_fn(x_t, y, t, r)

    def step_budget(self) -> float | None:
        """Total optimizer steps of this fit, or None when there is no finite budget (yet)."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        return total if total and total != float("inf") else None

    def progress(self) -> float:
        total = self.step_budget()
        return min(self.global_step / total, 1.0) if total else 0.0

    # -- training --------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # The curriculum follows progress = step / total steps; with no total, progress stays 0,
        # w_mf stays 0 and the run would be plain CFM while sampler=auto ships the MeanFlow jump.
        if self.trained_with_meanflow and self.step_budget() is None:
            weight = getattr(self.objective, "weight_final", None)
            what = type(self.objective).__name__ if weight is None else f"mf.weight_final={weight}"
            raise ConfigError(
                f"{what} needs a finite step budget: the MeanFlow curriculum "
                "follows step / total steps, so with trainer.max_steps=-1 and "
                "trainer.max_epochs=-1 it would never switch the MeanFlow term on. Set "
                "trainer.max_steps (or max_epochs), or mf_objective=cfm for plain CFM"
            )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, y = batch["clean"], batch["noisy"]
        progress = self.progress()
        t = sample_t(x.shape[0], cfg=self.curriculum, path=self.path, device=x.device)
        z = complex_noise_like(x)
        x_t = sample_xt(x=x, y=y, z=z, t=t, cfg=self.path)
        v = conditional_velocity(x=x, y=y, z=z, cfg=self.path)
        on_path = PathBatch(x_t=x_t, y=y, t=t, v=v, progress=progress, t_min=self.path.t_eps)
        out, failure = None, None
        try:
            out = self.objective(self.net_fn, on_path, self.curriculum)
        except NonFiniteError as err:
            failure = err
        if self._on_any_rank(failure is not None):
            return self._nonfinite_step(failure)
        self.log("train/loss", out.loss, prog_bar=True)
        self.log("train/progress", progress)
        self.log_dict({f"train/{k}": v for k, v in out.logs.items()})
        return out.loss

    # -- non-finite steps: one decision for all ranks ---------------------------------------------
    # Each rank draws its own noise, so a NaN usually appears on one rank only. A rank that
    # skipped or stopped alone would leave the others waiting in the gradient all-reduce (and
    # Lightning refuses a `None` from training_step under DDP), so the ranks first agree, by
    # one all-reduce of a flag per step, and then all skip (or all stop) together.
    def _on_any_rank(self, flag: bool) -> bool:
        if self._trainer is None or self.trainer.world_size <= 1:
            return flag
        return self.trainer.strategy.reduce_boolean_decision(flag, all=False)

    def _nonfinite_step(self, failure: NonFiniteError | None) -> Tensor:
        """A skipped step (``mf.nan_policy=skip``): a zero loss that still reaches every
        parameter, so the backward runs DDP's all-reduce like any step, while
        :meth:`optimizer_step` leaves the weights and the optimizer state as they were."""
        msg = f"step {self.global_step}: {failure or 'a NaN or Inf on another rank'}"
        if self.objective.nan_policy != "skip":
            raise NonFiniteError(
                f"{msg}. Training stopped (set mf.nan_policy=skip to skip such "
                "steps, or lower optim.lr / enable mf.jvp_clip)"
            ) from failure
        log.warning("%s; skipping this step (mf.nan_policy=skip)", msg)
        self.log("train/skipped_nonfinite", 1.0)
        self._skip_step = True
        return sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Callable[[], Any] | None = None
    ) -> None:
        if optimizer_closure is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # The closure is training_step + backward. Run it first: only then is it known whether
        # this step was skipped; the optimizer then steps with its result, as Lightning would.
        loss = optimizer_closure()
        if not self._skip_step:
            optimizer.step(closure=lambda: loss)
        self._skip_step = False

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Before Lightning clips (trainer.gradient_clip_val): how often the clip actually bites.
        # Under DDP the gradients are already averaged here, so every rank logs the same.
        grads = [p.grad.detach() for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        self.log("train/grad_norm", total)
        clip = self.trainer.gradient_clip_val
        if clip:
            self.log("train/grad_clip_rate", (total > clip).float())

    # -- validation: the flow-matching loss and the shipped sampler's error ----------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x, y = batch["clean"], batch["noisy"]
        gen = torch.Generator(device=x.device).manual_seed(batch_idx)  # same noise every epoch
        t = sample_t(x.shape[0], cfg=self.curriculum, path=self.path, device=x.device, generator=gen)
        z = complex_noise_like(x, generator=gen)
        x_t = sample_xt(x=x, y=y, z=z, t=t, cfg=self.path)
        v = conditional_velocity(x=x, y=y, z=z, cfg=self.path)
        loss_cfm = cfm_loss(self.net_fn, x_t=x_t, y=y, t=t, v=v, cfg=self.objective)
        self.log("val/loss_cfm", loss_cfm, sync_dist=True)
        x_hat = self.enhance_spec(y, z=complex_noise_like(y, generator=gen))
        err = 0.5 * (x_hat - x).pow(2).flatten(1).sum(1).mean()
        self.log("val/one_step_mse", err, prog_bar=True, sync_dist=True)

    def enhance_spec(self, y: Tensor, **kwargs: Any) -> Tensor:
        """Sample the clean spectrogram given the noisy one (:meth:`InferenceModel.enhance_spec`)."""
        return self.inference.enhance_spec(y, **kwargs)

    def configure_optimizers(self) -> Any:
        opt = self.optimizer_factory(params=self.parameters())
        cur = self.curriculum
        if cur.lr_decay == "constant" and cur.lr_warmup_steps <= 0:
            return opt
        total = self.step_budget()
        if cur.lr_decay != "constant" and total is None:
            raise ConfigError(
                f"curriculum.lr_decay={cur.lr_decay} needs a finite step budget: set "
                "trainer.max_steps or trainer.max_epochs"
            )
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total=total, cfg=cur))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
