"""The study's learning curves, from each run's own training log (no extra training or scoring).

`python experiments/mean_flow_family/curves.py [RUNS_DIR]` writes curves.csv and curves.png beside
this file (RUNS_DIR: outputs/family, as run.sh writes it; each run's csv/*/metrics.csv).

The curve is `train/loss_cfm`: the training loss of the batch's `r = t` samples, i.e. how well the
network's instantaneous velocity u(x_t, t, t) fits the conditional velocity. Every objective of
the study trains those samples with the same loss on the same time law (whether `r = t` is drawn
independently of `t`), so it is one yardstick for all of them: the data parametrization's
t^2-weighted MSE, no adaptive weighting. The `_vel` recipes (velocity parametrization) train them
with the unweighted velocity MSE, another scale, so they get a panel of their own. The span losses
(`train/loss_mf`) have a different target per objective and are not compared. It is logged every
25 steps from one batch, so each point is the mean over a 100-step window; only finished
trainings (with train_seconds.txt) count. It measures the flow-matching fit, not the one-step
output: the test-split table (results.md) is the result.
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from table import HERE, ORDER

KEY = "train/loss_cfm"
WINDOW = 100  # steps per point


def seed_curves(root: Path) -> dict[str, list[dict[int, float]]]:
    """``recipe -> [ {window end step: mean loss} for each seed with a training log ]``."""
    found: dict[str, list[dict[int, float]]] = defaultdict(list)
    for run in sorted(p for p in root.glob("*-s*") if (p / "train_seconds.txt").is_file()):
        logs = sorted(run.glob("csv/*/metrics.csv"))
        if not logs:  # (meanflow seed 0 is the demo's run, logged elsewhere)
            continue
        log, recipe = logs[-1], run.name.rpartition("-s")[0]  # the last version: a rerun's
        windows: dict[int, list[float]] = defaultdict(list)
        with open(log, newline="") as f:
            for row in csv.DictReader(f):
                if row.get(KEY):
                    step = int(row["step"]) + 1  # Lightning logs the step before it counts it
                    windows[-(-step // WINDOW) * WINDOW].append(float(row[KEY]))
        found[recipe].append({end: statistics.fmean(v) for end, v in sorted(windows.items())})
    return found


def main(root: Path) -> None:
    found = {recipe: seeds for recipe, seeds in seed_curves(root).items() if any(seeds)}
    if not found:
        sys.exit(f"{root}: no finished <recipe>-s<seed>/csv/*/metrics.csv with {KEY}; run run.sh first")
    rows = []
    for recipe, seeds in sorted(found.items(), key=lambda kv: (ORDER.get(kv[0], 9), kv[0])):
        for step in sorted(set.intersection(*(set(s) for s in seeds))):
            values = [s[step] for s in seeds]
            rows.append(
                {
                    "recipe": recipe,
                    "step": step,
                    "seeds": len(values),
                    "loss_cfm_mean": round(statistics.fmean(values), 5),
                    "loss_cfm_min": round(min(values), 5),
                    "loss_cfm_max": round(max(values), 5),
                }
            )
    with open(HERE / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    panels = {
        "data parametrization (t^2-weighted MSE)": [r for r in recipes if not r.endswith("_vel")],
        "velocity parametrization (velocity MSE)": [r for r in recipes if r.endswith("_vel")],
    }
    panels = {title: names for title, names in panels.items() if names}
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4), squeeze=False)
    for ax, (title, names) in zip(axes[0], panels.items()):
        _draw(ax, rows, names, title)
    fig.suptitle("Flow-matching fit of u(x_t, t, t) during training, demo recipe")
    fig.tight_layout()
    fig.savefig(HERE / "curves.png", dpi=120)
    print(f"wrote {HERE / 'curves.csv'} and {HERE / 'curves.png'}")


def _draw(ax, rows: list[dict], recipes: list[str], title: str) -> None:
    for recipe in recipes:
        mine = [r for r in rows if r["recipe"] == recipe]
        steps = [r["step"] for r in mine]
        label = f"{recipe} ({mine[0]['seeds']} seeds)"
        line = ax.plot(steps, [r["loss_cfm_mean"] for r in mine], label=label)
        low, high = [r["loss_cfm_min"] for r in mine], [r["loss_cfm_max"] for r in mine]
        ax.fill_between(steps, low, high, color=line[0].get_color(), alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{KEY} ({WINDOW}-step mean; band: seed range)")
    ax.set_title(title)
    ax.legend()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("outputs/family"))
