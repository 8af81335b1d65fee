"""Validation by the sampler we ship: PESQ, ESTOI and SI-SDR of whole enhanced files.

method.md section 5: the reference validates with a 5-step sampler and ships a 1-step one, so
its "best" checkpoint is chosen for the wrong sampler. Here ``val/pesq``, ``val/estoi`` and
``val/si_sdr`` measure the configured sampler (``sampler.*``, one step by default) through
the package's one measured path (:func:`meanflowse.inference.measured.enhance_and_score`, as
``eval.py``, scoring the float output in memory); ``nfe_extra`` adds ``val/pesq_nfe{N}`` etc.
for other step counts. The keys are the registry's intrusive metrics that every run measures
(:func:`meanflowse.metrics.registry.reference_keys`).

Every rank enhances its share of the files (every ``world_size``-th, from its rank on); the
per-file values are ``torchmetrics`` states (:class:`meanflowse.metrics.file_metric.FileMetric`)
that gather across ranks, so every rank logs the mean over all files and
``ModelCheckpoint(monitor="val/pesq")`` decides the same everywhere. On validation epochs
without a measurement (``every_n_epochs``) the last measured values are logged again: an
unchanged value is never "better", so monitors stay defined without selecting stale
checkpoints. The first validation always measures, so no made-up number is ever logged.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from meanflowse.checkpoint_contents import VALIDATION_KEY
from meanflowse.inference.enhancer import Enhancer
from meanflowse.inference.measured import enhance_and_score, memory_item
from meanflowse.method.stft import SpecConfig, stft
from meanflowse.metrics import registry

log = logging.getLogger(__name__)


def eval_indices(num_files: int, num_eval_files: int) -> list[int]:
    """``num_eval_files`` indices spread evenly over the split (all of them if it is smaller)."""
    if num_files <= 0 or num_eval_files <= 0:
        return []
    n = min(num_files, num_eval_files)
    return sorted({int(round(i)) for i in np.linspace(0, num_files - 1, n)})


def spectrogram_image(
    wavs: Sequence[torch.Tensor], spec: SpecConfig, *, db_range: float = 80.0
) -> np.ndarray:
    """Log-magnitude spectrograms stacked top to bottom as one ``uint8 [H, W]`` image, low
    frequencies at the bottom of each panel, one shared dB scale so the panels compare."""
    mags = [20 * torch.log10(stft(w.float(), spec).abs() + 1e-8) for w in wavs]
    top = max(float(m.max()) for m in mags)
    panels = [((m - top + db_range) / db_range).clamp(0, 1).flip(0).numpy() for m in mags]
    gap = np.ones((2, panels[0].shape[1]), dtype=np.float32)
    rows = [p for panel in panels for p in (panel, gap)][:-1]
    return (np.concatenate(rows, axis=0) * 255).astype(np.uint8)


def log_media(
    trainer: Trainer, *, name: str, audio: dict[str, torch.Tensor], sample_rate: int, image: np.ndarray
) -> None:
    """Audio clips and a spectrogram image to the loggers that take media (W&B, TensorBoard)."""
    step = trainer.global_step
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_audio(
                f"val_audio/{name}",
                [a.numpy() for a in audio.values()],
                step=step,
                caption=list(audio),
                sample_rate=[sample_rate] * len(audio),
            )
            logger.log_image(
                f"val_spec/{name}", [image], step=step, caption=[" / ".join(audio) + " (top to bottom)"]
            )
        elif isinstance(logger, TensorBoardLogger):
            for role, a in audio.items():
                logger.experiment.add_audio(f"val_audio/{name}/{role}", a[None], step, sample_rate)
            logger.experiment.add_image(f"val_spec/{name}", image, step, dataformats="HW")


class ValidationMetrics(Callback):
    """Intrusive metrics of whole validation files enhanced by the shipped sampler.

    Runs in ``on_validation_epoch_end``, while the EMA callback has its weights swapped in.
    """

    def __init__(
        self,
        *,
        num_eval_files: int = 10,
        every_n_epochs: int = 1,
        nfe_extra: Sequence[int] = (),
        num_media: int = 2,
        batch_size: int = 4,
        seed: int = 0,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"callbacks.val_metrics.every_n_epochs={every_n_epochs}: must be >= 1")
        if any(int(n) < 1 for n in nfe_extra):
            raise ValueError(f"callbacks.val_metrics.nfe_extra={list(nfe_extra)}: step counts >= 1")
        self.num_eval_files = int(num_eval_files)
        self.every_n_epochs = int(every_n_epochs)
        self.nfe_extra = [int(n) for n in nfe_extra]
        self.num_media = int(num_media)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.last: dict[str, float] = {}  # the values logged again between measurements
        self.scored: list[str] = []  # this rank's files at the last measurement

    @property
    def state_key(self) -> str:
        return VALIDATION_KEY

    def keys(self) -> list[str]:
        found = registry.reference_keys()
        return [f"val/{m}" for m in found] + [f"val/{m}_nfe{n}" for n in self.nfe_extra for m in found]

    def should_measure(self, epoch: int) -> bool:
        return not self.last or (epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self.num_eval_files <= 0:
            return
        if self.should_measure(trainer.current_epoch):  # same decision on every rank
            values = self.measure(trainer, pl_module)  # every rank: the means gather across ranks
            self.last = {k: v if math.isfinite(v) else self.last.get(k, math.nan) for k, v in values.items()}
        # NaN until a value was measured: FiniteModelCheckpoint never ranks it (a placeholder
        # such as -1 would be ranked, and kept as "best" if nothing better came)
        for key in self.keys():
            pl_module.log(key, self.last.get(key, math.nan), sync_dist=True)

    @torch.no_grad()
    def measure(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Enhance this rank's share of the evaluation files; ``{"val/pesq": mean over the files
        of every rank, ...}``. Under DDP every rank must call it (the means are a collective)."""
        dataset = trainer.datamodule.dataset("valid")
        if not dataset.has_clean:
            raise ValueError(
                "callbacks.val_metrics: the valid split has no clean files to compare "
                "with; set callbacks.val_metrics.num_eval_files=0"
            )
        share = eval_indices(len(dataset), self.num_eval_files)[trainer.global_rank :: trainer.world_size]
        pairs = [dataset.load_pair(i) for i in share]
        self.scored = [p["name"] for p in pairs]  # this rank's files at the last measurement
        metrics = registry.reference_metrics()
        means: dict[str, float] = {}
        for nfe in [None, *self.nfe_extra]:
            suffix = "" if nfe is None else f"_nfe{nfe}"
            enhancer = Enhancer(
                module=pl_module.inference,
                spec=dataset.spec,
                sample_rate=dataset.sample_rate,
                nfe=nfe,
                device=pl_module.device,
                seed=self.seed,
                batch_size=self.batch_size,
            )
            items = [memory_item(p["name"], p["noisy"], p["sample_rate"], p["clean"]) for p in pairs]
            shown = self.num_media if nfe is None and trainer.is_global_zero else 0
            media = {id(it): p for it, p in list(zip(items, pairs))[:shown]}

            def show(item, noisy, enhanced, media=media) -> None:
                pair = media.get(id(item))
                if pair is not None:
                    audio = {"noisy": pair["noisy"], "enhanced": enhanced[0], "clean": pair["clean"]}
                    log_media(
                        trainer,
                        name=pair["name"].replace("/", "_"),
                        audio=audio,
                        sample_rate=pair["sample_rate"],
                        image=spectrogram_image(list(audio.values()), dataset.spec),
                    )

            scorer = enhance_and_score(
                enhancer,
                items,
                metrics=metrics,
                score_noisy=False,
                warm_up=False,
                on_item=show,
                device=pl_module.device,
            ).scorer
            means.update({f"val/{k}{suffix}": v for k, v in scorer.means().items()})
        for k, v in means.items():
            if not math.isfinite(v):
                log.warning("%s: no file could be measured; logging the previous value", k)
        return means

    def state_dict(self) -> dict[str, Any]:
        return {"last": dict(self.last)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last = {k: float(v) for k, v in state_dict.get("last", {}).items()}
