"""Real-voice check: enhance a natural recording mixed with the corpus's noise kinds, per SNR.

    python experiments/real_voices/check.py CKPT --tag NAME [--speech ../shared/data/real/speech.wav]

Writes the mixes once into ``outputs/real_voices/mixes`` (never committed), scores them with eval.py
(one network evaluation, the model's sampler) into ``outputs/real_voices/<tag>``, and prints the
Markdown table of PESQ / ESTOI / SI-SDR per SNR, noisy -> enhanced, that the README quotes; also
``per_snr.json`` beside eval.py's ``metrics.csv``. The shared real pair (babble at 0 dB) is scored
as one more row when it is there.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from meanflowse.data.real_mixes import per_snr, write_mixes
from meanflowse.metrics import registry

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "real"


def run_eval(ckpt: Path, out: Path, *args: str) -> None:
    cmd = [sys.executable, str(ROOT / "eval.py"), f"ckpt_path={ckpt}", f"output={out}", "overwrite=true"]
    cmd += ["dnsmos=false", "speaker=false", "progress=false", f"hydra.run.dir={out}/.hydra_run", *args]
    subprocess.run(cmd, check=True, cwd=ROOT)


def markdown(table: dict) -> str:
    keys = registry.reference_keys()
    lines = [
        "| SNR (dB) | files | " + " | ".join(f"{registry.label(k)} noisy -> enh." for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for snr, e in table.items():
        digits = {k: registry.metric_of(k).decimals for k in keys}
        cells = [f"{e[f'noisy_{k}']:.{digits[k]}f} -> {e[k]:.{digits[k]}f}" for k in keys]
        lines.append(f"| {snr} | {e['files']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("--tag", required=True, help="output folder name under --out")
    ap.add_argument("--speech", type=Path, default=REAL / "speech.wav")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "real_voices")
    ap.add_argument("--draws", type=int, default=3, help="noise draws per kind and SNR")
    args = ap.parse_args()
    if not args.speech.is_file():
        sys.exit(f"check.py: {args.speech} not found; pass --speech a clean mono recording")
    mixes = fresh_mixes(args.speech.resolve(), args.out / "mixes", args.draws)
    out = args.out / args.tag
    run_eval(args.ckpt.resolve(), out, f"input={mixes}")
    table = per_snr(out / "metrics.csv")
    pair = REAL / "speech_bab_0dB.wav"
    if pair.is_file() and args.speech.resolve() == (REAL / "speech.wav").resolve():
        folder = args.out / "real_pair"  # eval.py pairs noisy/NAME with clean/NAME
        for role, src in (("noisy", pair), ("clean", REAL / "speech.wav")):
            link = folder / role / pair.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(src.resolve())
        run_eval(args.ckpt.resolve(), out / "real_pair", f"input={folder}")
        table["real pair, babble 0"] = per_snr_of_pair(out / "real_pair" / "metrics.csv")
    (out / "per_snr.json").write_text(json.dumps(table, indent=2))
    print(markdown(table))


def fresh_mixes(speech: Path, folder: Path, draws: int) -> Path:
    """The mixes of ``speech``, written again unless ``folder`` holds complete ones of this file."""
    stat = speech.stat()
    key = {"speech": str(speech), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "draws": draws}
    marker = folder / "mixes.json"
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    write_mixes(speech, folder, draws=draws)
    marker.write_text(json.dumps(key))  # last: a folder with a marker is complete
    return folder


def per_snr_of_pair(metrics_csv: Path) -> dict:
    with open(metrics_csv, newline="") as fh:
        row = next(csv.DictReader(fh))
    return {"files": 1, **{c: float(row[c]) for k in registry.reference_keys() for c in (k, f"noisy_{k}")}}


if __name__ == "__main__":
    main()
