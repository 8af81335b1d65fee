"""Metric time per file: the torchmetrics classes against the calls they replaced (BENCHMARKS.md §5).

    python -m benchmarks.bench_metrics CLEAN_DIR ENHANCED_DIR [--json OUT] [--repeats 7] [--dnsmos]

Pairs ``CLEAN_DIR/NAME`` with ``ENHANCED_DIR/NAME`` (e.g. the demo's test split and
``outputs/demo/enhanced``). For each registered metric and file it times, in alternation,
``FileMetric.update`` (what eval.py and validation now call per file: input checks, the
torchmetrics function, the state append) and the call before it: the ``pesq`` and ``pystoi``
packages called directly for PESQ and ESTOI (the old code's work, less its cheap input checks),
the registry's function alone for the others. The overhead is the median over files of the
median paired ratio, so this VM's drift between seconds hits both sides alike. ``--json`` also
writes every per-file value of both, so they can be compared file by file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from meanflowse.data.audio import load_audio
from meanflowse.metrics import registry
from meanflowse.metrics.file_metric import FileMetric


def _pairs(clean_dir: Path, enhanced_dir: Path) -> list[tuple[str, object, object, int]]:
    out = []
    for enh in sorted(enhanced_dir.rglob("*.wav")):
        rel = enh.relative_to(enhanced_dir)
        ref = clean_dir / rel
        if ref.is_file():
            deg, sr = load_audio(enh)
            clean = load_audio(ref, target_sr=sr)[0]
            n = min(clean.shape[-1], deg.shape[-1])
            out.append((rel.as_posix(), clean[:n].double().numpy(), deg[:n].double().numpy(), sr))
    if not out:
        raise SystemExit(f"no file of {enhanced_dir} has a reference in {clean_dir}")
    return out


def _direct(metric: registry.Metric):
    """The call the metric made before the torchmetrics classes, as ``fn(ref, deg, sr) -> dict``."""
    if metric.function == "meanflowse.metrics.scores:pesq_wb":
        from pesq import pesq

        return "pesq.pesq", lambda r, d, sr: {metric.name: pesq(sr, r, d, "wb")}
    if metric.function == "meanflowse.metrics.scores:estoi":
        from pystoi import stoi

        return "pystoi.stoi", lambda r, d, sr: {metric.name: float(stoi(r, d, sr, extended=True))}
    return "registry function", lambda r, d, sr: registry.score(r, d, sr, [metric])


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    got = fn()
    return time.perf_counter() - start, got


def run(clean_dir: Path, enhanced_dir: Path, *, repeats: int = 7, dnsmos: bool = False) -> dict:
    pairs = _pairs(clean_dir, enhanced_dir)
    result: dict = {"files": [p[0] for p in pairs], "metrics": {}}
    for metric in registry.selected(dnsmos=dnsmos):
        name, direct = _direct(metric)
        state = FileMetric(metric)
        ours, theirs, ratios = [], [], []
        values: dict = {"class": {k: [] for k in metric.keys}, "direct": {k: [] for k in metric.keys}}
        for _, clean, deg, sr in pairs:
            laps_class, laps_direct = [], []
            for _ in range(repeats):
                sec, _ = _time(lambda: state.update(deg, clean, sr))  # noqa: B023 (called here)
                laps_class.append(sec)
                sec, got = _time(lambda: direct(clean, deg, sr))  # noqa: B023
                laps_direct.append(sec)
            ours.append(statistics.median(laps_class))
            theirs.append(statistics.median(laps_direct))
            ratios.append(statistics.median(a / b for a, b in zip(laps_class, laps_direct)))
            for k in metric.keys:
                values["class"][k].append(state.last[k])
                values["direct"][k].append(float(got[k]))
        diff = max(abs(a - b) for k in metric.keys for a, b in zip(values["class"][k], values["direct"][k]))
        result["metrics"][metric.name] = {
            "before": name,
            "ms_class": 1000 * statistics.mean(ours),
            "ms_before": 1000 * statistics.mean(theirs),
            "overhead": statistics.median(ratios) - 1,
            "max_abs_diff": diff,
            "values": values,
        }
    head = ("metric", "before", "ms/file before", "ms/file FileMetric.update", "overhead", "max abs diff")
    print("| " + " | ".join(head) + " |")
    print("|---|---|---|---|---|---|")
    for name, e in result["metrics"].items():
        print(
            f"| {name} | {e['before']} | {e['ms_before']:.1f} | {e['ms_class']:.1f} | "
            f"{100 * e['overhead']:+.1f}% | {e['max_abs_diff']:.2g} |"
        )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clean_dir", type=Path)
    ap.add_argument("enhanced_dir", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dnsmos", action="store_true")
    args = ap.parse_args()
    result = run(args.clean_dir, args.enhanced_dir, repeats=args.repeats, dnsmos=args.dnsmos)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
