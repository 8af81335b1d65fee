"""Sweeps: one job trains a model and evaluates it at several NFEs; ``gather`` turns the job
records of a multirun folder into one table (rich + CSV) and plots.

A job trains once per point of the grid (c, jvp_impl, ...) and evaluates that model at every NFE
of ``sweep.eval_nfe``: the NFE changes only the sampler, so retraining per NFE would repeat
identical trainings. Each job writes ``sweep_job.json`` into its own folder (also when it
fails), so ``python -m meanflowse.sweep gather DIR`` can rebuild the table at any time; the
gathering is :mod:`meanflowse.sweep.gather`.

The evaluation is eval.py's (:func:`meanflowse.inference.evaluation.evaluate`), one call per NFE with its
output under the job folder (``eval/nfe<N>/``: the enhanced files, ``metrics.csv``,
``summary.json``), so the files are scored as written (quantised to the input's sample format)
and a sweep reports for a checkpoint exactly what
``python eval.py ckpt_path=<ckpt> split=<sweep.eval_split> sampler.nfe=<N>`` reports.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from meanflowse.atomic import write_text_atomic
from meanflowse.config import CONFIG_DIR, target_of
from meanflowse.sweep.gather import RECORD, SweepError
from meanflowse.sweep.step_timer import StepTimer

__all__ = [
    "SweepConfig",
    "job_params",
    "sweep_group",
    "eval_checkpoint",
    "eval_config",
    "evaluate_checkpoint",
    "flat_metrics",
    "train_and_evaluate",
    "run_job",
    "write_json_atomic",
]
log = logging.getLogger(__name__)
EVAL_YAML = CONFIG_DIR / "eval.yaml"  # eval.py's defaults


@dataclass
class SweepConfig:
    """The ``sweep`` node of configs/sweep.yaml (a typo there is an error at start).

    The evaluation is eval.py's with the defaults of configs/eval.yaml (seed, chunking,
    precision) and what ``eval_*`` sets here (split, files, checkpoint, EMA, sampler, device)."""

    group: Optional[str] = None  # W&B group; null: <task_name>-<multirun folder name>
    eval_nfe: list[int] = field(default_factory=lambda: [1, 2, 5])
    eval_split: str = "valid"  # valid selects configurations; keep test for the final run
    eval_num_files: Optional[int] = None  # first N files of the split (null: all)
    eval_checkpoint: str = "last"  # last (equal training budget) | best (by the monitor)
    eval_use_ema: bool = True
    eval_sampler: Optional[str] = None  # null: the model's sampler (auto -> euler_mf)
    eval_t_end: Optional[float] = None
    eval_dnsmos: bool = False  # DNSMOS costs ~1 s per file on a CPU
    eval_device: str = "auto"  # eval.py's device: auto | cpu | cuda ...
    timer_skip: int = 2  # first steps of each kind left out of the step time


ConfigStore.instance().store(group="schema", name="sweep", node=SweepConfig)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


# --------------------------------------------------------------------------------------------
# one job: train, evaluate at every NFE, write the record
# --------------------------------------------------------------------------------------------
def _hydra_config() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def objective_name(target: str | None) -> str:
    """The ``mf_objective`` option of an objective class path (``meanflow``, ``imf``, ...)."""
    from meanflowse.method.objectives import OBJECTIVES

    names = {target_of(cls): name for name, cls in OBJECTIVES.items()}
    return names.get(str(target), str(target).rsplit(".", 1)[-1])


def job_params(cfg: DictConfig) -> dict[str, Any]:
    """The knobs a sweep varies (the default grid and the Optuna space), resolved."""
    return {
        "objective": objective_name(cfg.mf.get("_target_")),
        # cfm and split have neither c nor a JVP: None in the record, "none" in names
        "c": None if cfg.mf.get("first_order_coef") is None else float(cfg.mf.first_order_coef),
        "jvp_impl": str(cfg.mf.get("jvp_impl", "none")),
        "lr": float(cfg.optim.lr),
        "gamma_start": float(cfg.curriculum.gamma_start),
        "seed": int(cfg.seed),
    }


def _job_info(cfg: DictConfig) -> dict[str, Any]:
    hc = _hydra_config()
    info: dict[str, Any] = {"dir": str(cfg.paths.output_dir), "num": 0, "overrides": []}
    if hc is not None:
        info["num"] = int(hc.job.get("num") or 0)
        info["overrides"] = list(hc.overrides.task)
    return info


def sweep_group(cfg: DictConfig) -> str:
    """One W&B group per multirun: ``sweep.group`` or ``<task_name>-<multirun folder name>``
    (every job of a multirun resolves the same folder, ``now`` included)."""
    if cfg.sweep.group:
        return str(cfg.sweep.group)
    from hydra.types import RunMode

    hc = _hydra_config()
    multirun = hc is not None and hc.mode == RunMode.MULTIRUN
    folder = Path(str(hc.sweep.dir)) if multirun else Path(str(cfg.paths.output_dir))
    return f"{cfg.task_name}-{folder.name}"


def _set_logging_group(cfg: DictConfig, params: dict[str, Any], num: int) -> None:
    loggers = cfg.get("logger") or {}
    if loggers.get("wandb") is None:
        return
    with open_dict(cfg):
        cfg.logger.wandb.group = sweep_group(cfg)
        if cfg.logger.wandb.get("name") is None:
            parts = [] if params["objective"] == "meanflow" else [params["objective"]]
            parts += [] if params["c"] is None else [f"c{params['c']:g}"]
            parts += [] if params["jvp_impl"] == "none" else [params["jvp_impl"]]
            cfg.logger.wandb.name = "-".join([str(num), *parts])


def _close_wandb() -> None:
    """Jobs share one process under the basic launcher: end this job's W&B run before the next."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def eval_checkpoint(cfg: DictConfig, objects: dict[str, Any]) -> tuple[str, str]:
    """The checkpoint a job is evaluated from, and a note on where its weights came from.

    ``sweep.eval_checkpoint`` (last | best) of the checkpoint callback; without one, the
    trainer's state after the fit (EMA included) is saved to ``checkpoints/sweep_eval.ckpt``
    in the job folder, so that eval.py can read it like any other checkpoint."""
    s = cfg.sweep
    if s.eval_checkpoint not in ("last", "best"):
        raise SweepError(f"sweep.eval_checkpoint={s.eval_checkpoint!r}: use last or best")
    trainer = objects["trainer"]
    ckpt_cb = trainer.checkpoint_callback
    path = getattr(ckpt_cb, f"{s.eval_checkpoint}_model_path", "") if ckpt_cb else ""
    if path:
        return str(path), str(path)
    path = Path(str(cfg.paths.output_dir)) / "checkpoints" / "sweep_eval.ckpt"
    trainer.save_checkpoint(path)
    return str(path), f"{path} (saved from memory: no checkpoint callback)"


def eval_config(cfg: DictConfig, ckpt_path: str, nfe: int, output: Path) -> DictConfig:
    """eval.py's configuration (the defaults of configs/eval.yaml) for ``split=sweep.eval_split``
    at ``nfe``; the sweep sets only what ``sweep.eval_*`` names, so eval.py with the same
    checkpoint, split, sampler and NFE reproduces the job's numbers."""
    s = cfg.sweep
    ecfg = OmegaConf.load(EVAL_YAML)
    with open_dict(ecfg):
        ecfg.pop("defaults", None)
        ecfg.merge_with(
            {
                "ckpt_path": str(ckpt_path),
                "split": str(s.eval_split),
                "input": None,
                "output": str(output),
                "limit_files": s.eval_num_files,
                "sampler": {"name": s.eval_sampler, "nfe": int(nfe), "t_end": s.eval_t_end},
                "use_ema": bool(s.eval_use_ema),
                "device": str(s.eval_device),
                "dnsmos": bool(s.eval_dnsmos),
                "speaker": False,
                "plots": False,
                "progress": False,
                "metrics": True,
                "overwrite": True,
            }
        )  # a rerun job re-enhances, never mixes models
    return ecfg


def evaluate_checkpoint(
    cfg: DictConfig, ckpt_path: str, out_dir: Path
) -> tuple[list[dict], dict[str, float]]:
    """eval.py's :func:`~meanflowse.inference.evaluation.evaluate` of ``ckpt_path`` at every NFE of
    ``sweep.eval_nfe``, each into ``out_dir/nfe<N>``: the mean metrics per NFE (its summary,
    plus 95% half-widths), and the noisy input's means."""
    from meanflowse.inference.evaluation import evaluate
    from meanflowse.inference.reports import nothing_scored

    results, noisy = [], {}
    for nfe in cfg.sweep.eval_nfe:
        folder = out_dir / f"nfe{int(nfe)}"
        summary = evaluate(eval_config(cfg, ckpt_path, int(nfe), folder))
        problem = nothing_scored(summary, metrics=True)  # where eval.py would exit non-zero
        if problem:
            raise SweepError(f"sweep.eval_split={cfg.sweep.eval_split}, NFE {nfe}: {problem}")
        keys = list(summary["ci95"])  # the registry's metrics this evaluation measured
        results.append(
            {
                "nfe": int(summary["nfe"]),
                **{k: summary[k] for k in keys},
                **{f"{k}_ci95": summary["ci95"][k] for k in keys},
                "files_with_metric_errors": summary["files_with_metric_errors"],
                "rtf": summary["rtf"],
                "num_files": summary["num_files"],
                "num_failed": summary["num_failed"],
                "output": str(folder),
            }
        )
        noisy = {k: summary["noisy"][k] for k in keys}
    return results, noisy


def flat_metrics(record: dict) -> dict[str, float]:
    """Every number of a job record under one name: ``val/one_step_mse``,
    ``train/step_time_mf_s``, ``eval/nfe1/pesq`` ... (what ``optimized_metric`` may name)."""
    train = record.get("train") or {}
    out = {k: float(v) for k, v in (train.get("metrics") or {}).items()}
    out.update(
        {
            f"train/{k}": float(train[k])
            for k in ("step_time_s", "step_time_mf_s", "step_time_cfm_s", "steps_timed_mf", "peak_memory_mb")
            if k in train
        }
    )
    for ev in record.get("eval") or []:
        out.update(
            {
                f"eval/nfe{ev['nfe']}/{k}": float(v)
                for k, v in ev.items()
                if k != "nfe" and isinstance(v, (int, float))
            }
        )
    return out


def train_and_evaluate(cfg: DictConfig) -> dict[str, Any]:
    from meanflowse.training.fit import train

    start = time.perf_counter()
    metrics, objects = train(cfg)
    trainer = objects["trainer"]
    timer = next((c for c in trainer.callbacks if isinstance(c, StepTimer)), None)
    part: dict[str, Any] = {
        "train": {
            "steps": int(trainer.global_step),
            "seconds": time.perf_counter() - start,
            "metrics": metrics,
            **(timer.summary() if timer else {}),
        }
    }
    ckpt, weights = eval_checkpoint(cfg, objects)
    start = time.perf_counter()
    evals, noisy = evaluate_checkpoint(cfg, ckpt, Path(str(cfg.paths.output_dir)) / "eval")
    part.update(
        eval=evals,
        noisy=noisy,
        eval_weights=weights,
        eval_split=cfg.sweep.eval_split,
        eval_checkpoint=ckpt,
        eval_seconds=time.perf_counter() - start,
    )
    # the eval numbers, step times and peak memory join the job's run (one W&B group per sweep)
    scalars = {k: v for k, v in flat_metrics(part).items() if k.startswith(("eval/", "train/"))}
    scalars = {k: v for k, v in scalars.items() if math.isfinite(v)}
    for lg in trainer.loggers:
        lg.log_metrics(scalars, step=trainer.global_step)
        lg.save()
    return part


def run_job(cfg: DictConfig, *, reraise: bool = False) -> float:
    """Train + evaluate one grid point; the record ``sweep_job.json`` lands in the job folder.

    A failure is written as a record with its traceback and returns NaN, so the other jobs of
    a multirun go on (Optuna counts a NaN trial as failed); ``reraise`` raises it afterwards.
    Returns ``optimized_metric`` for a sweeper to optimise.
    """
    params, info = job_params(cfg), _job_info(cfg)
    out_dir = Path(info["dir"])
    record: dict[str, Any] = {
        "status": "running",
        "job": info,
        "params": params,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json_atomic(out_dir / RECORD, record)  # a job killed midway shows up as "running"
    try:
        _set_logging_group(cfg, params, info["num"])
        record["wandb_group"] = sweep_group(cfg)
        record.update(train_and_evaluate(cfg))
        record["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - recorded with its traceback; reraise for single runs
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        log.error("sweep job %s failed: %s", info["num"], record["error"])
        if reraise:
            raise
    finally:
        _close_wandb()
        write_json_atomic(out_dir / RECORD, record)
    flat = flat_metrics(record)
    key = str(cfg.optimized_metric)
    if record["status"] == "ok" and key not in flat:
        log.warning("optimized_metric=%s is not among this job's numbers: %s", key, sorted(flat))
    return flat.get(key, math.nan)
