"""The study's table: each recipe at NFE 1, 2, 4 on the test split, mean over its seeds with the
spread (min to max) and the seed count, next to the noisy input.

`python experiments/mean_flow_family/table.py [RUNS_DIR] > experiments/mean_flow_family/results.md`
(RUNS_DIR: outputs/family, as run.sh writes it). Also writes results.csv beside this file.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from meanflowse.metrics import registry  # the one list of metrics

KEYS = [k for k in registry.brief_keys() if k != "spk_sim"]  # the figures the study compares
HERE = Path(__file__).resolve().parent
ORDER = {  # the recipes of run.sh, in the table's order
    name: i
    for i, name in enumerate(
        ["cfm", "meanflow", "meanflow_c1", "imf", "imf_vr", "split", "cfm_vel", "meanflow_vel"]
    )
}


def runs(root: Path) -> dict[tuple[str, int], list[dict]]:
    """``(recipe, nfe) -> [summary of each seed]`` (with ``train_min``, the training wall time)."""
    found: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for run in sorted(p for p in root.glob("*-s*") if p.is_dir()):
        recipe, _, seed = run.name.rpartition("-s")
        seconds = run / "train_seconds.txt"
        for summary in sorted(run.glob("enhanced-nfe*/summary.json")):
            data = json.loads(summary.read_text())
            data["seed"] = int(seed)
            data["train_min"] = int(seconds.read_text()) / 60 if seconds.is_file() else float("nan")
            found[(recipe, int(data["nfe"]))].append(data)
    return found


def cell(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main(root: Path) -> None:
    found = runs(root)
    if not found:
        sys.exit(f"{root}: no <recipe>-s<seed>/enhanced-nfe<N>/summary.json; run run.sh first")
    digits = {k: max(registry.metric_of(k).decimals, 2) for k in KEYS}
    head = ["recipe", "NFE", "seeds", *(registry.label(k) for k in KEYS), "train min"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    rows = []
    noisy = next(iter(found.values()))[0]["noisy"]
    print("| noisy input | — | — | " + " | ".join(f"{noisy[k]:.{digits[k]}f}" for k in KEYS) + " | — |")
    for (recipe, nfe), seeds in sorted(found.items(), key=lambda kv: (ORDER.get(kv[0][0], 9), kv[0])):
        cells = [cell([s[k] for s in seeds if k in s], digits[k]) for k in KEYS]  # no DNSMOS at NFE > 1
        minutes = cell([s["train_min"] for s in seeds], 1)
        print(f"| {recipe} | {nfe} | {len(seeds)} | " + " | ".join(cells) + f" | {minutes} |")
        for s in seeds:
            rows.append({"recipe": recipe, "nfe": nfe, "seed": s["seed"], "train_min": s["train_min"]})
            rows[-1].update({k: s.get(k) for k in KEYS})
    with open(HERE / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("outputs/family"))
