"""Sweeps: one job trains a model and evaluates it at several NFEs; ``gather`` turns the job
records of a multirun folder into one table (rich + CSV) and plots.

A job trains once per point of the grid (c, jvp_impl, ...) and evaluates that model at every NFE
of ``sweep.eval_nfe``: the NFE changes only the sampler, so retraining per NFE would repeat
identical trainings. Each job writes ``sweep_job.json`` into its own folder (also when it
fails), so ``python -m meanflowse.sweep gather DIR`` can rebuild the table at any time.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict

from meanflowse import metrics as M
from meanflowse.atomic import atomic_path, write_text_atomic
from meanflowse.curriculum import mf_weight

log = logging.getLogger(__name__)
RECORD = "sweep_job.json"
RESULTS_CSV = "sweep_results.csv"
EVAL_KEYS = ("pesq", "estoi", "si_sdr", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")


@dataclass
class SweepConfig:
    """The ``sweep`` node of configs/sweep.yaml (a typo there is an error at start)."""

    group: Optional[str] = None          # W&B group; null: <task_name>-<multirun folder name>
    eval_nfe: list[int] = field(default_factory=lambda: [1, 2, 5])
    eval_split: str = "valid"            # valid selects configurations; keep test for the final run
    eval_num_files: Optional[int] = None  # first N files of the split (null: all)
    eval_checkpoint: str = "last"        # last (equal training budget) | best (by the monitor)
    eval_use_ema: bool = True
    eval_sampler: Optional[str] = None   # null: the model's sampler (auto -> euler_mf)
    eval_t_end: Optional[float] = None
    eval_dnsmos: bool = False            # DNSMOS costs ~1 s per file on a CPU
    eval_device: str = "auto"
    timer_skip: int = 2                  # first steps of each kind left out of the step time


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
# step time
# --------------------------------------------------------------------------------------------
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
        mf, cfm = self.laps["mf"][self.skip:], self.laps["cfm"][self.skip:]
        return {"step_time_s": _mean(mf + cfm), "step_time_mf_s": _mean(mf),
                "step_time_cfm_s": _mean(cfm), "steps_timed_mf": len(mf)}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


# --------------------------------------------------------------------------------------------
# one job: train, evaluate at every NFE, write the record
# --------------------------------------------------------------------------------------------
class SweepError(ValueError):
    """A bad sweep setting or folder; the message names the key or path and what to do."""


def _hydra_config() -> Any | None:
    from hydra.core.hydra_config import HydraConfig
    return HydraConfig.get() if HydraConfig.initialized() else None


def job_params(cfg: DictConfig) -> dict[str, Any]:
    """The knobs a sweep varies (the default grid and the Optuna space), resolved."""
    return {"c": float(cfg.mf.first_order_coef), "jvp_impl": str(cfg.mf.jvp_impl),
            "lr": float(cfg.optim.lr), "gamma_start": float(cfg.curriculum.gamma_start),
            "seed": int(cfg.seed)}


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
            cfg.logger.wandb.name = f"{num}-c{params['c']:g}-{params['jvp_impl']}"


def _close_wandb() -> None:
    """Jobs share one process under the basic launcher: end this job's W&B run before the next."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_enhancer(cfg: DictConfig, objects: dict[str, Any]) -> tuple[Any, str]:
    """The trained model as an :class:`~meanflowse.enhance.Enhancer` (EMA weights from the
    checkpoint), and where its weights came from."""
    from meanflowse.config import spec_config
    from meanflowse.enhance import Enhancer

    s = cfg.sweep
    if s.eval_checkpoint not in ("last", "best"):
        raise SweepError(f"sweep.eval_checkpoint={s.eval_checkpoint!r}: use last or best")
    kw = {"sampler": s.eval_sampler, "t_end": s.eval_t_end, "seed": int(cfg.seed)}
    ckpt_cb = objects["trainer"].checkpoint_callback
    path = getattr(ckpt_cb, f"{s.eval_checkpoint}_model_path", "") if ckpt_cb else ""
    if path:
        return Enhancer.from_checkpoint(path, use_ema=s.eval_use_ema, device=s.eval_device,
                                        **kw), path
    # no checkpoint callback: the weights in memory (raw, not EMA) are all there is
    dev = _device(s.eval_device)
    module = objects["module"].eval().to(dev)
    return Enhancer(module=module, spec=spec_config(cfg), sample_rate=int(cfg.data.sample_rate),
                    device=dev, **kw), "memory (raw weights)"


def eval_pairs(cfg: DictConfig, objects: dict[str, Any]) -> list[dict]:
    """Whole clean/noisy files of ``sweep.eval_split`` (the first ``eval_num_files``)."""
    from hydra.utils import instantiate

    s = cfg.sweep
    dm = objects.get("datamodule") or instantiate(cfg.data)
    ds = dm.dataset(s.eval_split)
    n = len(ds) if s.eval_num_files is None else min(int(s.eval_num_files), len(ds))
    if n == 0 or not ds.has_clean:
        raise SweepError(f"sweep.eval_split={s.eval_split}: no files with clean references in "
                         f"{cfg.data.get('base_dir')}; pick a split with clean/ and noisy/ files")
    return [ds.load_pair(i) for i in range(n)]


def _means(rows: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in EVAL_KEYS:
        if any(key in r for r in rows):
            mean, half = M.summarize([r.get(key, math.nan) for r in rows])
            out[key], out[f"{key}_ci95"] = mean, half
    return out


def evaluate_nfes(enhancer: Any, pairs: list[dict], *, nfes: list[int], dnsmos: bool
                  ) -> tuple[list[dict], dict[str, float]]:
    """Mean metrics of ``enhancer`` at each NFE over ``pairs``, and those of the noisy input."""
    sr = enhancer.sample_rate
    score = lambda ref, deg: M.compute_all(ref.numpy(), deg.numpy(), sr, with_dnsmos=dnsmos)
    noisy = _means([score(p["clean"], p["noisy"]) for p in pairs])
    results = []
    for nfe in nfes:
        enh = dataclasses.replace(enhancer, nfe=int(nfe))
        enh.enhance(pairs[0]["noisy"][:sr])  # warm-up, so the RTF is steady-state
        rows, seconds, samples = [], 0.0, 0
        for p in pairs:
            with M.Stopwatch(enh.device) as sw:
                out = enh.enhance(p["noisy"])
            seconds, samples = seconds + sw.seconds, samples + p["noisy"].shape[-1]
            rows.append(score(p["clean"], out))
        failed = sum(bool(r["errors"]) for r in rows)
        results.append({"nfe": int(nfe), **_means(rows), "rtf": M.rtf(seconds, samples, sr),
                        "num_files": len(rows), "files_with_metric_errors": failed})
    return results, noisy


def flat_metrics(record: dict) -> dict[str, float]:
    """Every number of a job record under one name: ``val/one_step_mse``,
    ``train/step_time_mf_s``, ``eval/nfe1/pesq`` ... (what ``optimized_metric`` may name)."""
    train = record.get("train") or {}
    out = {k: float(v) for k, v in (train.get("metrics") or {}).items()}
    out.update({f"train/{k}": float(train[k]) for k in ("step_time_s", "step_time_mf_s",
                                                       "step_time_cfm_s") if k in train})
    for ev in record.get("eval") or []:
        out.update({f"eval/nfe{ev['nfe']}/{k}": float(v) for k, v in ev.items()
                    if k != "nfe" and isinstance(v, (int, float))})
    return out


def train_and_evaluate(cfg: DictConfig) -> dict[str, Any]:
    from meanflowse.training import train

    start = time.perf_counter()
    metrics, objects = train(cfg)
    trainer = objects["trainer"]
    timer = next((c for c in trainer.callbacks if isinstance(c, StepTimer)), None)
    part: dict[str, Any] = {"train": {"steps": int(trainer.global_step),
                                      "seconds": time.perf_counter() - start, "metrics": metrics,
                                      **(timer.summary() if timer else {})}}
    enhancer, weights = build_enhancer(cfg, objects)
    start = time.perf_counter()
    evals, noisy = evaluate_nfes(enhancer, eval_pairs(cfg, objects),
                                 nfes=list(cfg.sweep.eval_nfe), dnsmos=cfg.sweep.eval_dnsmos)
    part.update(eval=evals, noisy=noisy, eval_weights=weights, eval_split=cfg.sweep.eval_split,
                eval_seconds=time.perf_counter() - start)
    scalars = {k: v for k, v in flat_metrics(part).items() if k.startswith("eval/")}
    for lg in trainer.loggers:  # the eval numbers join the job's run (one W&B group per sweep)
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
    record: dict[str, Any] = {"status": "running", "job": info, "params": params,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json_atomic(out_dir / RECORD, record)  # a job killed midway shows up as "running"
    try:
        _set_logging_group(cfg, params, info["num"])
        record["wandb_group"] = sweep_group(cfg)
        record.update(train_and_evaluate(cfg))
        record["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - recorded with its traceback; reraise for single runs
        record.update(status="failed", error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc())
        log.error("sweep job %s failed: %s", info["num"], record["error"])
        if reraise:
            raise
    finally:
        _close_wandb()
        write_json_atomic(out_dir / RECORD, record)
    flat = flat_metrics(record)
    key = str(cfg.get("optimized_metric") or "val/one_step_mse")
    if record["status"] == "ok" and key not in flat:
        log.warning("optimized_metric=%s is not among this job's numbers: %s", key, sorted(flat))
    return flat.get(key, math.nan)


# --------------------------------------------------------------------------------------------
# gather: records -> table, CSV, plots
# --------------------------------------------------------------------------------------------
FIRST_COLUMNS = ("job", "status", "c", "jvp_impl", "lr", "gamma_start", "seed", "nfe", "pesq",
                 "estoi", "si_sdr", "dnsmos_ovrl", "rtf", "noisy_pesq", "noisy_estoi",
                 "noisy_si_sdr", "val_one_step_mse", "steps", "step_ms", "mf_step_ms",
                 "step_cfm_ms", "train_s", "error", "dir")


def load_records(root: Path) -> list[dict]:
    """Every ``sweep_job.json`` below ``root`` (or ``root``'s own), by job number."""
    records = []
    for path in sorted(Path(root).rglob(RECORD)):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            rec = {"status": "unreadable", "error": f"{path.name}: {err}"}
        rec.setdefault("job", {})["dir"] = str(path.parent)
        records.append(rec)
    return sorted(records, key=lambda r: (int(r["job"].get("num") or 0), r["job"]["dir"]))


def _ms(seconds: Any) -> float:
    return 1000.0 * float(seconds) if seconds is not None else math.nan


def result_rows(records: list[dict]) -> list[dict]:
    """One row per (job, NFE) of the finished jobs, one row per failed or unfinished job."""
    rows = []
    for rec in records:
        train = rec.get("train") or {}
        base = {"job": rec["job"].get("num"), "status": rec.get("status", "unknown"),
                **(rec.get("params") or {}),
                "val_one_step_mse": (train.get("metrics") or {}).get("val/one_step_mse", math.nan),
                "steps": train.get("steps"), "step_ms": _ms(train.get("step_time_s")),
                "mf_step_ms": _ms(train.get("step_time_mf_s")),
                "step_cfm_ms": _ms(train.get("step_time_cfm_s")), "train_s": train.get("seconds"),
                "error": rec.get("error", ""), "dir": rec["job"]["dir"]}
        noisy = {f"noisy_{k}": v for k, v in (rec.get("noisy") or {}).items() if "_ci95" not in k}
        evals = rec.get("eval") or []
        if rec.get("status") == "ok" and evals:
            rows.extend({**base, **noisy, **ev} for ev in evals)
        else:
            rows.append(base)
    return rows


def _columns(rows: list[dict]) -> list[str]:
    seen = {k for r in rows for k in r}
    return [k for k in FIRST_COLUMNS if k in seen] + sorted(seen - set(FIRST_COLUMNS))


def write_csv(rows: list[dict], path: Path) -> Path:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=_columns(rows), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return path


def _fmt(value: Any, key: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if not isinstance(value, float):
        return str(value)
    if key.endswith("_ms"):
        return f"{value:.0f}"
    if key in ("c", "lr", "gamma_start") or abs(value) >= 1e3 or abs(value) < 1e-2:
        return f"{value:.3g}"
    return f"{value:.3f}"


HEADERS = {"jvp_impl": "jvp", "gamma_start": "γ₀", "si_sdr": "si-sdr", "dnsmos_ovrl": "dnsmos",
           "noisy_pesq": "noisy pesq", "noisy_estoi": "noisy estoi", "noisy_si_sdr": "noisy si-sdr",
           "val_one_step_mse": "val mse", "mf_step_ms": "ms/step"}


def rich_table(rows: list[dict], title: str):
    """The finished rows as a rich table; lr, gamma_start and seed only where they vary."""
    from rich.table import Table

    ok = [r for r in rows if r["status"] == "ok"]
    params = ["c", "jvp_impl"] + [k for k in ("lr", "gamma_start", "seed")
                                  if len({str(r.get(k)) for r in ok}) > 1]
    metrics = [k for k in ("pesq", "estoi", "si_sdr", "dnsmos_ovrl", "rtf")
               if any(isinstance(r.get(k), float) and math.isfinite(r[k]) for r in ok)]
    cols = ["job", *params, "nfe", *metrics, "noisy_pesq", "val_one_step_mse", "mf_step_ms"]
    table = Table(title=title)
    for col in cols:
        table.add_column(HEADERS.get(col, col), justify="left" if col == "jvp_impl" else "right")
    for r in sorted(ok, key=lambda r: (str(r.get("c")), str(r.get("jvp_impl")), r.get("nfe") or 0)):
        table.add_row(*(_fmt(r.get(c), c) for c in cols))
    return table


def results_markdown(rows: list[dict]) -> str:
    """The finished rows as a Markdown table, then ms per training step by JVP implementation
    (mean over the jobs), for an experiment's README."""
    ok = sorted((r for r in rows if r["status"] == "ok"),
                key=lambda r: (str(r.get("c")), str(r.get("jvp_impl")), r.get("nfe") or 0))
    cols = [c for c in ("c", "jvp_impl", "nfe", "pesq", "estoi", "si_sdr", "rtf", "noisy_pesq",
                        "noisy_estoi", "noisy_si_sdr", "val_one_step_mse")
            if any(c in r for r in ok)]
    lines = ["| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |",
             "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c), c) for c in cols) + " |" for r in ok]
    per_impl: dict[str, list[dict]] = defaultdict(list)
    for r in {r["job"]: r for r in ok}.values():
        per_impl[r["jvp_impl"]].append(r)
    lines += ["", "| jvp | ms/step with JVP | ms/step without | jobs |", "|---|---|---|---|"]
    for impl, jobs in sorted(per_impl.items()):
        mf, cfm = ([r.get(k, math.nan) for r in jobs] for k in ("mf_step_ms", "step_cfm_ms"))
        lines.append(f"| {impl} | {_fmt(_mean(mf), '_ms')} | {_fmt(_mean(cfm), '_ms')} "
                     f"| {len(jobs)} |")
    failed = [r for r in rows if r["status"] != "ok"]
    lines += [""] + [f"- job {r['job']} {r['status']}: {r['error']}" for r in failed]
    return "\n".join(lines).rstrip() + "\n"


def _save_figure(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def plot_metric_vs_nfe(rows: list[dict], path: Path) -> Path | None:
    """One panel per metric: the mean over JVP implementations against NFE, a line per c, each
    job as a faint dot, the noisy input dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r.get("nfe") is not None]
    keys = [k for k in ("pesq", "estoi", "si_sdr")
            if any(math.isfinite(r.get(k, math.nan)) for r in ok)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        by_c: dict[float, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in ok:
            if math.isfinite(r.get(key, math.nan)):
                by_c[r["c"]][r["nfe"]].append(r[key])
        for c, by_nfe in sorted(by_c.items()):
            nfes = sorted(by_nfe)
            line, = ax.plot(nfes, [_mean(by_nfe[n]) for n in nfes], marker="o", label=f"c = {c:g}")
            for n in nfes:
                ax.scatter([n] * len(by_nfe[n]), by_nfe[n], color=line.get_color(), alpha=0.3, s=12)
        noisy = [r[f"noisy_{key}"] for r in ok if math.isfinite(r.get(f"noisy_{key}", math.nan))]
        if noisy:
            ax.axhline(_mean(noisy), color="gray", linestyle="--", linewidth=1, label="noisy input")
        ax.set_xscale("log")
        ticks = sorted({r["nfe"] for r in ok})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel="NFE", ylabel=key, title=f"{key} against NFE")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    try:
        return _save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_step_time(rows: list[dict], path: Path) -> Path | None:
    """Mean training-step time per JVP implementation (steps with the MeanFlow branch on),
    a dot per job; dashed: the steps without the branch (no JVP), for scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_job = {r["job"]: r for r in rows if r["status"] == "ok"}  # one row per job is enough
    by_impl: dict[str, list[float]] = defaultdict(list)
    for r in per_job.values():
        ms = r.get("mf_step_ms", math.nan)
        if not math.isfinite(ms):
            ms = r.get("step_ms", math.nan)
        if math.isfinite(ms):
            by_impl[r["jvp_impl"]].append(ms)
    if not by_impl:
        return None
    impls = sorted(by_impl, key=lambda k: _mean(by_impl[k]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(impls), 3.4))
    ax.bar(impls, [_mean(by_impl[k]) for k in impls], color="tab:blue", alpha=0.6)
    for i, k in enumerate(impls):
        ax.scatter([i] * len(by_impl[k]), by_impl[k], color="black", s=12, zorder=3)
    cfm = [r["step_cfm_ms"] for r in per_job.values()
           if math.isfinite(r.get("step_cfm_ms", math.nan))]
    if cfm:
        ax.axhline(_mean(cfm), color="gray", linestyle="--", linewidth=1, label="without JVP")
        ax.legend(fontsize=8)
    ax.set(xlabel="mf.jvp_impl", ylabel="ms per training step",
           title="training step time (MeanFlow steps)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        return _save_figure(fig, path)
    finally:
        plt.close(fig)


def gather(root: str | Path, *, plots: bool = True, console: Any = None) -> dict[str, Any]:
    """Collect the job records below ``root`` into ``sweep_results.csv`` / ``.md``, a rich table
    and ``metric_vs_nfe.png`` / ``step_time.png``, all in ``root``. Failed jobs are listed."""
    from rich.console import Console

    root = Path(root)
    if not root.is_dir():
        raise SweepError(f"{root}: no such folder; pass the multirun folder of sweep.py")
    records = load_records(root)
    if not records:
        raise SweepError(f"{root}: no {RECORD} below this folder; is it a sweep.py multirun?")
    rows = result_rows(records)
    out: dict[str, Any] = {"rows": rows, "csv": write_csv(rows, root / RESULTS_CSV), "plots": []}
    out["markdown"] = root / "sweep_results.md"
    write_text_atomic(out["markdown"], results_markdown(rows))
    out["failed"] = [r for r in rows if r["status"] != "ok"]
    if plots:
        try:
            made = (plot_metric_vs_nfe(rows, root / "metric_vs_nfe.png"),
                    plot_step_time(rows, root / "step_time.png"))
            out["plots"] = [p for p in made if p is not None]
        except ImportError as err:  # the table matters more than the pictures
            log.warning("no plots (%s); install matplotlib", err)
    console = console or Console()
    if not console.is_terminal:  # logs and pipes: wide enough that no column is cut
        console.width = max(console.width, 140)
    n_ok = len(records) - len(out["failed"])
    console.print(rich_table(rows, title=f"sweep {root.name}: {n_ok}/{len(records)} jobs ok"))
    for r in out["failed"]:
        console.print(f"[red]job {r['job']} {r['status']}[/red] ({r['dir']}): {r['error']}")
    console.print(f"table: {out['csv']}" + "".join(f"\nplot: {p}" for p in out["plots"]))
    return out


class GatherCallback(HydraCallback):
    """Gathers the multirun folder when Hydra's sweep ends (also after failed jobs)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._gather(config.hydra.sweep.dir)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._gather(config.hydra.runtime.output_dir)

    @staticmethod
    def _gather(folder: str) -> None:
        try:
            gather(folder)
        except SweepError as err:
            log.warning("nothing gathered: %s", err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meanflowse.sweep",
                                     description="Work with the multirun folders of sweep.py.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gather", help="(re)build sweep_results.csv, the table and the plots of DIR")
    g.add_argument("dir", type=Path, help="a multirun folder (outputs/sweep/multiruns/<time>)")
    g.add_argument("--no-plots", action="store_true", help="table and CSV only")
    args = parser.parse_args(argv)
    try:
        gather(args.dir, plots=not args.no_plots)
    except SweepError as err:
        print(f"python -m meanflowse.sweep gather: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
