"""Learning curves for the "Make it enhance" study (README.md beside this file).

    python experiments/make_it_enhance/study.py curves outputs/study/<run> --sampler euler_mf --nfes 1 2 5
    python experiments/make_it_enhance/study.py plot experiments/make_it_enhance

``curves`` scores every checkpoint of a run (``checkpoints/curve/step*.ckpt`` and ``last.ckpt``,
EMA weights, as eval.py uses them) on the test split of the run's own corpus with the project's
one measured path (``meanflowse.inference.measured.enhance_and_score``, as eval.py and
validation; the float output scored in memory, as validation does), and appends the rows to
``experiments/make_it_enhance/curves.csv``. The extra NFEs and DNSMOS are measured on
``last.ckpt`` only (they cost more than the rest together). ``plot`` draws PESQ, ESTOI and
SI-SDR against training steps and wall-clock minutes (``curves_vs_step.png``,
``curves_vs_minutes.png``) and the long run beside the 650-step recipe (``long_run.png``).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
CURVES = HERE / "curves.csv"


def _shown() -> tuple[str, ...]:
    """The metrics of curves.csv: the registry's brief keys with DNSMOS on (no speaker model)."""
    from meanflowse.metrics import registry

    return registry.brief_keys(registry.selected(dnsmos=True))


def _fields() -> list[str]:
    return ["run", "sampler", "nfe", "step", "minutes", *_shown(), *(f"noisy_{k}" for k in _shown())]


def _checkpoints(run: Path) -> list[tuple[int, Path]]:
    found = []
    for path in sorted((run / "checkpoints" / "curve").glob("step*.ckpt")):
        found.append((int(re.search(r"step(\d+)", path.name).group(1)), path))
    last = run / "checkpoints" / "last.ckpt"
    if last.is_file():
        import torch

        step = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
        found = [(s, p) for s, p in found if s != step] + [(step, last)]
    return sorted(found)


def curves(run: Path, *, sampler: str, nfes: list[int], name: str | None) -> None:
    """Every checkpoint at the first NFE of ``nfes``; the last checkpoint at all of them."""
    import dataclasses

    import torch
    from hydra.utils import instantiate

    from meanflowse.inference.enhancer import Enhancer, load_module
    from meanflowse.inference.measured import enhance_and_score, memory_item
    from meanflowse.metrics import registry

    torch.set_num_threads(os.cpu_count() or 1)
    ckpts = _checkpoints(run)
    if not ckpts:
        raise SystemExit(f"{run}: no checkpoints under checkpoints/curve or checkpoints/last.ckpt")
    _, cfg = load_module(ckpts[-1][1])
    dataset = instantiate(cfg.data).dataset("test")
    pairs = [dataset.load_pair(i) for i in range(len(dataset))]
    start = (run / ".hydra" / "config.yaml").stat().st_mtime
    rows = []
    for step, path in ckpts:
        final = path.name == "last.ckpt"
        enhancer = Enhancer.from_checkpoint(path, sampler=sampler, seed=0)
        for nfe in nfes if final else nfes[:1]:
            items = [memory_item(p["name"], p["noisy"], p["sample_rate"], p["clean"]) for p in pairs]
            summary = enhance_and_score(
                dataclasses.replace(enhancer, nfe=int(nfe)),
                items,
                metrics=registry.selected(dnsmos=final),
            ).summary
            row = {
                "run": name or run.name,
                "sampler": sampler,
                "nfe": summary["nfe"],
                "step": step,
                "minutes": round((path.stat().st_mtime - start) / 60, 2),
            }
            for k in _shown():
                if k in summary:
                    row[k], row[f"noisy_{k}"] = round(summary[k], 4), round(summary["noisy"][k], 4)
            rows.append(row)
            print({k: row.get(k) for k in ("run", "sampler", "nfe", "step", *_shown())}, flush=True)
    new = not CURVES.exists()
    with open(CURVES, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_fields())
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _read() -> list[dict]:
    with open(CURVES, newline="") as f:
        return list(csv.DictReader(f))


def _figure(series: dict[str, list[dict]], noisy: dict, xkey: str, xlabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from meanflowse.metrics import registry

    keys = registry.reference_keys()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.3 * len(keys), 4.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        label = registry.label(key)
        for i, (name, pts) in enumerate(sorted(series.items())):
            pts = sorted(pts, key=lambda r: float(r[xkey]))
            # the colour cycle has 10 entries: runs beyond it get another line and marker style
            style = dict(ls=("-", "--", ":")[i // 10 % 3], marker=("o", "s", "^")[i // 10 % 3])
            ax.plot([float(p[xkey]) for p in pts], [float(p[key]) for p in pts], ms=3, label=name, **style)
        ax.axhline(float(noisy[f"noisy_{key}"]), color="k", ls="--", lw=1, label="noisy input")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(out_dir: Path) -> None:
    """The 650-step variants against steps and minutes; the long run beside the short recipe."""
    rows = _read()
    series: dict[str, list[dict]] = {}
    for r in rows:
        series.setdefault(f"{r['run']} {r['sampler']} NFE {r['nfe']}", []).append(r)
    short = {k: v for k, v in series.items() if not k.startswith("long")}
    for xkey, xlabel in (("step", "training steps"), ("minutes", "wall-clock minutes (2 CPU cores)")):
        _figure(short, rows[0], xkey, xlabel, out_dir / f"curves_vs_{xkey}.png")
    long = {k: v for k, v in series.items() if k.startswith(("long", "s650-recipe"))}
    if any(k.startswith("long") for k in long):
        _figure(long, rows[0], "minutes", "wall-clock minutes (2 CPU cores)", out_dir / "long_run.png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curves")
    c.add_argument("run", type=Path)
    c.add_argument("--sampler", default="euler_mf", choices=["euler_mf", "euler"])
    c.add_argument("--nfes", type=int, nargs="+", default=[1])
    c.add_argument("--name", default=None, help="run label in curves.csv (default: folder name)")
    p = sub.add_parser("plot")
    p.add_argument("out_dir", type=Path, nargs="?", default=HERE)
    args = parser.parse_args()
    if args.cmd == "curves":
        curves(args.run, sampler=args.sampler, nfes=args.nfes, name=args.name)
    else:
        plot(args.out_dir)


if __name__ == "__main__":
    main()
