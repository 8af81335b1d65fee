"""Gather a sweep: the job records of a multirun folder -> one table (rich, CSV, Markdown) and
plots; ``python -m meanflowse.sweep gather DIR`` (or ``GatherCallback`` when Hydra's sweep ends)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

from meanflowse.atomic import write_text_atomic
from meanflowse.metrics import registry

log = logging.getLogger(__name__)
RECORD = "sweep_job.json"  # one per job folder, written by meanflowse.sweep.job.run_job
RESULTS_CSV = "sweep_results.csv"  # the gathered table, in the multirun folder


def mean_or_nan(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


class SweepError(ValueError):
    """A bad sweep setting or folder; the message names the key or path and what to do."""


PARAM_COLUMNS = ("objective", "c", "jvp_impl", "lr", "gamma_start", "seed")
TRAIN_COLUMNS = (
    "val_one_step_mse",
    "steps",
    "step_ms",
    "mf_step_ms",
    "steps_timed",
    "step_cfm_ms",
    "train_s",
)
MIN_TIMED_STEPS = 10  # fewer timed steps than this make a step time a rough figure: gather warns


def first_columns() -> tuple[str, ...]:
    """The CSV's leading columns: job, parameters, NFE, the registry's brief metrics, RTF, the
    noisy input's, training numbers; any other column follows in name order."""
    brief = registry.brief_keys()
    noisy = tuple(f"noisy_{k}" for k in registry.reference_keys())
    return ("job", "status", *PARAM_COLUMNS, "nfe", *brief, "rtf", *noisy, *TRAIN_COLUMNS, "error", "dir")


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
        base = {
            "job": rec["job"].get("num"),
            "status": rec.get("status", "unknown"),
            **(rec.get("params") or {}),
            "val_one_step_mse": (train.get("metrics") or {}).get("val/one_step_mse", math.nan),
            "steps": train.get("steps"),
            "step_ms": _ms(train.get("step_time_s")),
            "mf_step_ms": _ms(train.get("step_time_mf_s")),
            "step_cfm_ms": _ms(train.get("step_time_cfm_s")),
            "steps_timed": train.get("steps_timed_mf"),
            "train_s": train.get("seconds"),
            "error": rec.get("error", ""),
            "dir": rec["job"]["dir"],
        }
        noisy = {f"noisy_{k}": v for k, v in (rec.get("noisy") or {}).items() if "_ci95" not in k}
        evals = rec.get("eval") or []
        if rec.get("status") == "ok" and evals:
            rows.extend({**base, **noisy, **ev} for ev in evals)
        else:
            rows.append(base)
    return rows


def _columns(rows: list[dict]) -> list[str]:
    seen = {k for r in rows for k in r}
    first = first_columns()
    return [k for k in first if k in seen] + sorted(seen - set(first))


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


HEADERS = {
    "jvp_impl": "jvp",
    "gamma_start": "γ₀",
    "val_one_step_mse": "val mse",
    "mf_step_ms": "ms/step",
    "steps_timed": "timed",
}


def header(key: str) -> str:
    """A short column title: ``si-sdr``, ``noisy pesq``, ``dnsmos-ovrl``."""
    if key in HEADERS:
        return HEADERS[key]
    if key.startswith("noisy_"):
        return "noisy " + header(key[len("noisy_") :])
    return key.replace("_", "-")


def rich_table(rows: list[dict], title: str):
    """The finished rows as a rich table; lr, gamma_start and seed only where they vary."""
    from rich.table import Table

    ok = [r for r in rows if r["status"] == "ok"]
    params = [k for k in ("objective",) if _varies(ok, k)] + ["c", "jvp_impl"]
    params += [k for k in ("lr", "gamma_start", "seed") if _varies(ok, k)]
    metrics = registry.present(ok, [*registry.brief_keys(), "rtf"])
    first_noisy = [f"noisy_{k}" for k in registry.reference_keys()[:1]]
    cols = ["job", *params, "nfe", *metrics, *first_noisy, "val_one_step_mse", "mf_step_ms", "steps_timed"]
    table = Table(title=title, caption="± : 95% interval over the evaluated files")
    for col in cols:
        table.add_column(header(col), justify="left" if col == "jvp_impl" else "right")
    for r in sorted(ok, key=_order):
        table.add_row(*(_cell(r, c) for c in cols))
    return table


def _varies(rows: list[dict], key: str) -> bool:
    return len({str(r.get(key)) for r in rows}) > 1


def _method(row: dict) -> str:
    """What a job's step time measures: the JVP implementation, prefixed by the objective when
    it is not MeanFlow (``imf/func``, ``split/none``), so objectives are never averaged together."""
    objective, impl = row.get("objective"), str(row.get("jvp_impl"))
    return impl if objective in (None, "", "meanflow") else f"{objective}/{impl}"


def _order(row: dict) -> tuple:
    """Rows by objective, c, JVP implementation and NFE."""
    return (str(row.get("objective")), str(row.get("c")), str(row.get("jvp_impl")), row.get("nfe") or 0)


def _cell(row: dict, key: str) -> str:
    """A value, with its 95% half-width where the record has one (``<key>_ci95``)."""
    half = row.get(f"{key}_ci95")
    if isinstance(half, float) and math.isfinite(half):
        return f"{_fmt(row.get(key), key)} ± {_fmt(half, key)}"
    return _fmt(row.get(key), key)


def few_timed_steps(rows: list[dict]) -> list:
    """Jobs whose MeanFlow step time rests on fewer than :data:`MIN_TIMED_STEPS` steps."""
    jobs = {r["job"]: r.get("steps_timed") for r in rows if r["status"] == "ok"}
    return [job for job, n in jobs.items() if n is not None and n < MIN_TIMED_STEPS]


def results_markdown(rows: list[dict]) -> str:
    """The finished rows as a Markdown table, then ms per training step by JVP implementation
    (mean over the jobs), for an experiment's README."""
    ok = sorted((r for r in rows if r["status"] == "ok"), key=_order)
    brief = registry.brief_keys()
    wanted = (
        "objective",
        "c",
        "jvp_impl",
        "nfe",
        *brief,
        "rtf",
        *(f"noisy_{k}" for k in brief),
        "val_one_step_mse",
    )
    cols = [c for c in wanted if any(c in r for r in ok)]
    lines = ["| " + " | ".join(header(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c), c) for c in cols) + " |" for r in ok]
    per_impl: dict[str, list[dict]] = defaultdict(list)
    for r in {r["job"]: r for r in ok}.values():
        per_impl[_method(r)].append(r)
    lines += ["", "| jvp | ms/step with JVP | ms/step without | jobs |", "|---|---|---|---|"]
    for impl, jobs in sorted(per_impl.items()):
        mf, cfm = ([r.get(k, math.nan) for r in jobs] for k in ("mf_step_ms", "step_cfm_ms"))
        lines.append(
            f"| {impl} | {_fmt(mean_or_nan(mf), '_ms')} | {_fmt(mean_or_nan(cfm), '_ms')} | {len(jobs)} |"
        )
    failed = [r for r in rows if r["status"] != "ok"]
    lines += [""] + [f"- job {r['job']} {r['status']}: {r['error']}" for r in failed]
    return "\n".join(lines).rstrip() + "\n"


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
        from meanflowse.sweep import plots as plots_module  # it imports this module's helpers

        try:
            made = (
                plots_module.plot_metric_vs_nfe(rows, root / "metric_vs_nfe.png"),
                plots_module.plot_step_time(rows, root / "step_time.png"),
            )
            out["plots"] = [p for p in made if p is not None]
        except ImportError as err:  # the table matters more than the pictures
            log.warning("no plots (%s); install matplotlib", err)
    console = console or Console()
    if not console.is_terminal:  # logs and pipes: wide enough that no column is cut
        console.width = max(console.width, 140)
    n_ok = len(records) - len(out["failed"])
    console.print(rich_table(rows, title=f"sweep {root.name}: {n_ok}/{len(records)} jobs ok"))
    few = few_timed_steps(rows)
    if few:
        console.print(
            f"[yellow]step times of job(s) {', '.join(map(str, few))} rest on fewer than "
            f"{MIN_TIMED_STEPS} timed MeanFlow steps[/yellow] "
            "(raise trainer.max_steps or lower sweep.timer_skip)"
        )
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
    parser = argparse.ArgumentParser(
        prog="python -m meanflowse.sweep", description="Work with the multirun folders of sweep.py."
    )
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
