"""eval.py's reports: summary.json means, metrics.csv rows and the on-screen table."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

from rich.table import Table

from meanflowse.atomic import atomic_path, write_error
from meanflowse.metrics import registry
from meanflowse.metrics import scores as M


def summarize(
    rows: list[dict], num_failed: int, *, nfe: int, rtf: float, keys: Sequence[str]
) -> dict[str, Any]:
    """Means over files of each of ``keys`` (the measured metrics' registry keys): the
    summary.json layout (see meanflowse.inference.evaluation's docstring); ``ci95[key]``: the
    half-width of the mean's 95% interval; ``counts[key]``: how many files the mean of ``key`` is
    over (its finite values); ``noisy[key]``: the noisy input's mean; ``files_with_metric_errors``:
    files on which at least one metric of the enhanced output failed."""

    def stats(prefix: str) -> dict[str, tuple[float, float]]:
        return {k: M.summarize([r.get(prefix + k, math.nan) for r in rows]) for k in keys}

    enhanced = stats("")
    summary: dict[str, Any] = {k: mean for k, (mean, _) in enhanced.items()}
    summary.update(
        rtf=rtf,
        nfe=int(nfe),
        num_files=len(rows),
        num_failed=int(num_failed),
        noisy={k: mean for k, (mean, _) in stats("noisy_").items()},
        ci95={k: half for k, (_, half) in enhanced.items()},
        counts={k: sum(registry.is_finite(r.get(k)) for r in rows) for k in keys},
        files_with_metric_errors=sum(any(v for c, v in r.items() if c.startswith("error_")) for r in rows),
    )
    return summary


def nothing_scored(summary: dict[str, Any], *, metrics: bool) -> str | None:
    """Why a run's summary holds no result (eval.py then exits non-zero), or None: no file was
    enhanced or resumed, or metrics were asked for and not one metric has a finite value."""
    if summary["num_files"] == 0:
        return (
            f"nothing was scored: no file was enhanced or resumed ({summary['num_failed']} "
            "failed; their errors are listed above and in metrics.csv)"
        )
    if metrics and not any(summary["counts"].values()):
        return (
            f"nothing was scored: no metric has a finite value on any of the "
            f"{summary['num_files']} files (see the error_* columns of metrics.csv; without "
            "clean references only DNSMOS applies, so keep dnsmos=true or pass reference=DIR, "
            "or metrics=false to only enhance)"
        )
    return None


def results_table(rows: list[dict], summary: dict, title: str, keys: Sequence[str]) -> Table:
    table = Table(title=title)
    for col in ("metric", "noisy (mean ± 95% CI)", "enhanced (mean ± 95% CI)", "n"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    fmt = lambda m, h: "—" if math.isnan(m) else (f"{m:.3f}" + ("" if math.isnan(h) else f" ± {h:.3f}"))
    for key in keys:
        noisy = M.summarize([r.get("noisy_" + key, math.nan) for r in rows])
        values = [r.get(key, math.nan) for r in rows]
        if not (math.isnan(noisy[0]) and all(math.isnan(v) for v in values)):
            n = sum(math.isfinite(v) for v in values)
            table.add_row(key, fmt(*noisy), fmt(*M.summarize(values)), str(n))
    rtf = M.summarize([r["rtf"] for r in rows if "rtf" in r])
    table.add_row(
        "rtf (overall; ± over files)", "", fmt(summary["rtf"], rtf[1]), str(sum("rtf" in r for r in rows))
    )
    return table


def _replace_text(path: Path, write) -> None:
    try:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            write(fh)
    except OSError as err:  # the OS's "No space left on device" does not say which file
        raise write_error(path, err) from None


SCORED = ("metrics.csv", "summary.json")
# metrics=false writes its rows and summary under other names: a rerun that only enhances must
# never replace the numbers an earlier run measured in the same folder with nothing
UNSCORED = ("unscored_metrics.csv", "unscored_summary.json")


def write_reports(out_dir: Path, rows: list[dict], summary: dict, *, scored: bool = True) -> None:
    csv_name, json_name = SCORED if scored else UNSCORED
    out_dir.mkdir(parents=True, exist_ok=True)
    first = ("file", "status", "error", "duration_s", "sample_rate", "channels", "rtf")
    seen = {k for r in rows for k in r}
    keys = [k for k in first if k in seen] + sorted(seen - set(first))
    _replace_text(
        out_dir / csv_name,
        lambda fh: (w := csv.DictWriter(fh, fieldnames=keys), w.writeheader(), w.writerows(rows)),
    )
    _replace_text(out_dir / json_name, lambda fh: fh.write(json.dumps(_json_safe(summary), indent=2) + "\n"))


def _json_safe(value: Any) -> Any:
    """NaN (a metric with no finite value) as JSON ``null``, which every JSON reader accepts."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
