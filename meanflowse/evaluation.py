"""``evaluate(cfg)``: enhance a file or folder, write wavs atomically, measure where references exist."""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import soundfile as sf
import torch
import torchaudio
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from meanflowse import metrics as M
from meanflowse.data.audio import AudioError, load_audio
from meanflowse.enhance import Enhancer

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".wav", ".flac")
SUMMARY_KEYS = ("pesq", "estoi", "si_sdr", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")


class EvalError(ValueError):
    """A bad eval.py argument; the message names the key and what to do."""


def resolve_io(cfg: DictConfig) -> tuple[Path, list[Path], Path, Path | None]:
    """``(input_root, files, output_dir, reference_dir)``; a split folder with ``clean/`` and
    ``noisy/`` enhances ``noisy`` and uses ``clean`` as the reference."""
    src = Path(str(cfg.input)).expanduser()
    if not src.exists():
        raise EvalError(f"input={src}: no such file or folder")
    reference = Path(str(cfg.reference)) if cfg.get("reference") else None
    if src.is_dir() and (src / "noisy").is_dir():
        reference = reference or ((src / "clean") if (src / "clean").is_dir() else None)
        src = src / "noisy"
    if src.is_file():
        files, root = [src], src.parent
    else:
        files, root = sorted(p for p in src.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES), src
        if not files:
            raise EvalError(f"input={src}: no .wav or .flac files in this folder")
    out = Path(str(cfg.output)) if cfg.get("output") else Path(str(cfg.ckpt_path)).parent.parent / "enhanced"
    if out.resolve() == root.resolve():
        raise EvalError(f"output={out} is the input folder: choose another so no input is overwritten")
    return root, files, out, reference


def write_atomic(path: Path, wav: torch.Tensor, sr: int, subtype: str | None) -> None:
    """Write ``wav [C, L]`` to a temp file beside ``path``, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
        ok = subtype if subtype and sf.check_format(fmt, subtype) else None
        sf.write(tmp, wav.T.numpy(), sr, format=fmt, subtype=ok)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def enhance_file(enhancer: Enhancer, src: Path, dst: Path) -> dict[str, Any]:
    """Enhance one file at the model rate; the output keeps the input's rate, length and channels."""
    wav, sr = load_audio(src, mono=False)  # [C, L]
    model_sr = enhancer.sample_rate
    x = torchaudio.functional.resample(wav, sr, model_sr) if sr != model_sr else wav
    with M.Stopwatch(enhancer.device) as sw:
        out = enhancer.enhance(x)
    if sr != model_sr:
        out = torchaudio.functional.resample(out, model_sr, sr)
    out = torch.nn.functional.pad(out, (0, max(0, wav.shape[-1] - out.shape[-1])))[..., :wav.shape[-1]]
    write_atomic(dst, out, sr, sf.info(str(src)).subtype)
    return {"seconds": sw.seconds, "duration": wav.shape[-1] / sr, "sr": sr, "wav": out, "noisy": wav}


def _measure(ref_path: Path, noisy: torch.Tensor, enhanced: torch.Tensor, sr: int,
             with_dnsmos: bool) -> dict[str, Any]:
    ref, ref_sr = load_audio(ref_path, target_sr=sr, mono=True)
    n = min(ref.shape[-1], enhanced.shape[-1])
    row: dict[str, Any] = {}
    for prefix, sig in (("", enhanced), ("noisy_", noisy)):
        res = M.compute_all(ref[:n].numpy(), sig.mean(0)[:n].numpy(), sr, with_dnsmos=with_dnsmos)
        row.update({prefix + k: v for k, v in res.items() if k != "errors"})
        row.update({f"{prefix}error_{k}": v for k, v in res["errors"].items()})
    return row


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    root, files, out_dir, ref_dir = resolve_io(cfg)
    s = cfg.get("sampler") or {}
    enhancer = Enhancer.from_checkpoint(cfg.ckpt_path, use_ema=cfg.use_ema, device=cfg.device,
                                        sampler=s.get("name"), nfe=s.get("nfe"), t_end=s.get("t_end"),
                                        seed=cfg.seed)
    nfe = enhancer.nfe or enhancer.module.sampler_cfg.nfe
    console = Console()
    rows, failures, seconds, duration = [], [], 0.0, 0.0
    enhancer.enhance(torch.zeros(1, enhancer.sample_rate))  # warm-up, so the RTF is steady-state
    columns = (TextColumn("[bold]enhancing"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not cfg.progress) as bar:
        task = bar.add_task("enhance", total=len(files))
        for src in files:
            rel = src.relative_to(root)
            dst = out_dir / rel
            row: dict[str, Any] = {"file": str(rel)}
            try:
                if dst.exists() and not cfg.overwrite:
                    log.info("%s exists; skipped (overwrite=true redoes it)", dst)
                    row["skipped"] = True
                else:
                    res = enhance_file(enhancer, src, dst)
                    seconds, duration = seconds + res["seconds"], duration + res["duration"]
                    row["rtf"] = M.rtf(res["seconds"], int(res["duration"] * res["sr"]), res["sr"])
                    ref = ref_dir / rel if ref_dir else None
                    if cfg.metrics and ref is not None and ref.exists():
                        row.update(_measure(ref, res["noisy"], res["wav"], res["sr"], cfg.dnsmos))
                rows.append(row)
            except (AudioError, OSError, RuntimeError, ValueError) as err:
                failures.append({"file": str(rel), "error": f"{type(err).__name__}: {err}"})
                log.error("%s: %s", src, err)
            bar.advance(task)
    summary = summarize(rows, failures, nfe=nfe, rtf=seconds / duration if duration else math.nan)
    write_reports(out_dir, rows, summary)
    console.print(results_table(rows, summary, title=f"MeanFlowSE, NFE {nfe}: {len(rows)} files"))
    for f in failures:
        console.print(f"[red]failed[/red] {f['file']}: {f['error']}")
    return summary


def summarize(rows: list[dict], failures: list[dict], *, nfe: int, rtf: float) -> dict[str, Any]:
    def means(prefix: str) -> dict[str, float]:
        return {k: M.summarize([r.get(prefix + k, math.nan) for r in rows])[0] for k in SUMMARY_KEYS}
    summary: dict[str, Any] = means("")
    summary.update(rtf=rtf, nfe=nfe, num_files=len(rows), num_failed=len(failures),
                   failures=failures, noisy=means("noisy_"))
    return summary


def results_table(rows: list[dict], summary: dict, title: str) -> Table:
    table = Table(title=title)
    for col in ("metric", "noisy (mean ± 95% CI)", "enhanced (mean ± 95% CI)"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    fmt = lambda m, h: "—" if math.isnan(m) else (f"{m:.3f}" + ("" if math.isnan(h) else f" ± {h:.3f}"))
    for key in SUMMARY_KEYS:
        noisy = M.summarize([r.get("noisy_" + key, math.nan) for r in rows])
        enh = M.summarize([r.get(key, math.nan) for r in rows])
        if not (math.isnan(noisy[0]) and math.isnan(enh[0])):
            table.add_row(key, fmt(*noisy), fmt(*enh))
    table.add_row("rtf", "", fmt(summary["rtf"], math.nan))
    return table


def write_reports(out_dir: Path, rows: list[dict], summary: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "file", k))
    tmp = out_dir / ".metrics.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out_dir / "metrics.csv")
    tmp = out_dir / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=float))
    os.replace(tmp, out_dir / "summary.json")
