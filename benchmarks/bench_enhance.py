"""Enhancement benchmarks (issue 6), for a trained checkpoint:

(a) peak memory enhancing a long file vs a short one through eval.py's pipeline (chunked; one
    fresh subprocess per case, so each high-water mark is its own: ``VmHWM`` on CPU,
    ``torch.cuda.max_memory_allocated`` on a GPU);
(b) real-time factor for NFE 1, 2, 5, 10, and the pipeline's overhead over one bare backbone
    forward on the same input (same padded spectrogram);
(c) quality on the checkpoint's test split: NFE 1 euler_mf against NFE 5 euler and euler_mf,
    and NFE 1 with the network in bf16;
(d) a folder of files through ``evaluate`` (metrics off), with the writer on a worker thread
    (``overlap_io=true``) and without: the whole run's overhead over the bare forwards.

`python -m benchmarks.bench_enhance --ckpt PATH [--quick] [--device auto]
[--only memory,rtf,quality,folder]`
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from benchmarks.common import machine, markdown_table, time_call

ROOT = Path(__file__).resolve().parents[1]


def eval_config(overrides: list[str], out_dir: Path):
    """configs/eval.yaml composed as eval.py would, writing under ``out_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[f"paths.root_dir={ROOT}", f"paths.output_dir={out_dir}", "progress=false", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def write_noisy(path: Path, seconds: float, sr: int = 16000, seed: int = 0) -> Path:
    """A speech-like signal in noise (the built-in corpus's generator), written in blocks."""
    from meanflowse.data.synthetic import speech_like

    rng = np.random.default_rng(seed)
    total, block = int(seconds * sr), 30 * sr
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=1, subtype="PCM_16") as fh:
        for start in range(0, total, block):
            n = min(block, total - start)
            x = speech_like(rng, n, sr) + 0.05 * rng.standard_normal(n)
            fh.write(0.5 * x / max(1e-9, np.abs(x).max()))
    return path


# ------------------------------------------------------------------------------ (a) memory
def _peak_rss_mb() -> float:
    """This process's RSS high-water mark. Linux keeps ``ru_maxrss`` across ``execve``, so a
    subprocess started from a large parent would report the parent's peak; ``VmHWM`` belongs to
    the new address space and starts afresh."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_case(ckpt: str, wav: Path, out: Path, device: str, chunk_s: float) -> dict:
    """Runs inside the subprocess: load the model, then enhance ``wav`` with evaluate()."""
    from meanflowse.inference.enhancer import Enhancer
    from meanflowse.inference.evaluation import evaluate
    from meanflowse.runtime import apply_cpu_memory_setting

    apply_cpu_memory_setting("auto")  # as eval.py does

    Enhancer.from_checkpoint(ckpt, device=device)  # imports and a model: the baseline
    before = _peak_rss_mb()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    summary = evaluate(
        eval_config(
            [
                f"ckpt_path={ckpt}",
                f"input={wav}",
                f"output={out}",
                f"device={device}",
                f"chunk_s={chunk_s}",
                "metrics=false",
            ],
            out,
        )
    )
    peak = _peak_rss_mb()
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")
    return {
        "rss_peak_mb": peak,
        "rss_before_mb": before,
        "cuda_peak_mb": cuda,
        "rtf": summary["rtf"],
        "ok": summary["num_files"] == 1,
    }


def memory(ckpt: str, *, long_s: float, short_s: float, chunk_s: float, device: str) -> list[list]:
    rows, peaks = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, seconds in (("short", short_s), ("long", long_s)):
            wav = write_noisy(Path(tmp) / f"{label}.wav", seconds)
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.bench_enhance",
                "--ckpt",
                ckpt,
                "--device",
                device,
                "--memory-case",
                str(wav),
                "--chunk-s",
                str(chunk_s),
                "--out",
                f"{tmp}/out_{label}",
            ]
            res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"memory case {label} failed:\n{res.stderr[-3000:]}")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            peaks[label] = r
            rows.append(
                [
                    f"{seconds:g} s",
                    f"{r['rss_before_mb']:.0f}",
                    f"{r['rss_peak_mb']:.0f}",
                    f"{r['rss_peak_mb'] - r['rss_before_mb']:.0f}",
                    "—" if np.isnan(r["cuda_peak_mb"]) else f"{r['cuda_peak_mb']:.0f}",
                    f"{r['rtf']:.3f}",
                ]
            )
    ratio = peaks["long"]["rss_peak_mb"] / peaks["short"]["rss_peak_mb"]
    rows.append(["long / short", "", f"{ratio:.2f}x", "", _ratio(peaks, "cuda_peak_mb"), ""])
    return rows


def _ratio(peaks: dict, key: str) -> str:
    a, b = peaks["long"][key], peaks["short"][key]
    return "—" if np.isnan(a) or np.isnan(b) else f"{a / b:.2f}x"


# ------------------------------------------------------------------------------ (b) speed
def speed(ckpt: str, *, seconds: float, nfes: tuple[int, ...], device: str, repeats: int) -> list[list]:
    """RTF of the pipeline per NFE (one piece: chunk_s above the input's length) and its
    overhead over NFE bare backbone forwards on the same padded spectrogram.

    Pipeline and bare forwards are timed in alternation and the overhead is the median of the
    paired ratios, so a machine whose speed drifts between minutes (this VM's does, by up to
    10%) shifts both sides of a pair alike."""
    from meanflowse.data.audio import load_audio
    from meanflowse.inference.audio_io import write_atomic
    from meanflowse.inference.enhancer import Enhancer, padded_frames
    from meanflowse.inference.inputs import Item
    from meanflowse.inference.measured import enhance_group

    with tempfile.TemporaryDirectory() as tmp:
        src = write_noisy(Path(tmp) / "in.wav", seconds)
        item = Item(src=src, rel=Path("in.wav"), frames=sf.info(str(src)).frames, sr=16000, channels=1)
        rows = []
        for nfe in nfes:
            enh = Enhancer.from_checkpoint(ckpt, device=device, nfe=nfe, chunk_s=seconds + 1.0)
            wav = load_audio(src, mono=False)[0]
            core = time_call(lambda: enh.enhance(wav), repeats=repeats)
            bare = _bare_forward_fn(
                enh, padded_frames(item.frames, hop=enh.spec.hop_length, multiple=enh.frame_multiple)
            )

            def pipeline():  # eval.py's work for one file, metrics aside
                noisy = load_audio(src, mono=False)[0]
                out, _ = enhance_group(enh, [item], [noisy])
                write_atomic(Path(tmp) / "out.wav", out[0], item.sr, subtype="PCM_16")

            def forwards():
                for _ in range(nfe):
                    bare()

            pipeline(), forwards()  # warm-up
            pairs = [
                (time_call(pipeline, warmup=0, repeats=1), time_call(forwards, warmup=0, repeats=1))
                for _ in range(repeats)
            ]
            full = statistics.median(p[0] for p in pairs)
            base = statistics.median(p[1] for p in pairs)
            overhead = statistics.median(p[0] / p[1] - 1 for p in pairs)
            rows.append(
                [
                    nfe,
                    enh.sampler_name,
                    f"{full / seconds:.4f}",
                    f"{core / seconds:.4f}",
                    f"{full:.3f}",
                    f"{base:.3f}",
                    f"{overhead:+.1%}",
                ]
            )
    return rows


def _bare_forward_fn(enh, frames: int):
    """One backbone call on a spectrogram of the input's padded size, in the enhancer's layout
    and precision: the network's own work."""
    dev = enh.device
    x = torch.randn(1, 2, enh.spec.num_bins, frames, device=dev)
    if enh.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.ones(1, device=dev)

    def forward():
        with torch.no_grad(), enh.autocast():
            enh.module.backbone(x, x, t, t)

    return forward


def _bare_forward(enh, frames: int, repeats: int) -> float:
    return time_call(_bare_forward_fn(enh, frames), repeats=repeats)


# ------------------------------------------------------------------------------ (c) quality
def _quality_keys() -> tuple[str, ...]:
    """The registry's brief metrics, DNSMOS included (a dash where dnsmos=false)."""
    from meanflowse.metrics import registry

    return registry.brief_keys(registry.selected(dnsmos=True))


def _quality_labels() -> list[str]:
    from meanflowse.metrics import registry

    return [registry.label(k) for k in _quality_keys()]


def _cell(value) -> str:
    return "—" if value is None or np.isnan(value) else f"{value:.3f}"


def quality(ckpt: str, *, device: str, limit: int | None, dnsmos: bool) -> list[list]:
    from meanflowse.inference.evaluation import evaluate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, nfe, precision in (
            ("euler_mf", 1, "fp32"),
            ("euler", 5, "fp32"),
            ("euler_mf", 5, "fp32"),
            ("euler_mf", 1, "bf16"),
        ):
            out = Path(tmp) / f"{name}_{nfe}_{precision}"
            s = evaluate(
                eval_config(
                    [
                        f"ckpt_path={ckpt}",
                        "split=test",
                        f"output={out}",
                        f"device={device}",
                        f"sampler.name={name}",
                        f"sampler.nfe={nfe}",
                        f"precision={precision}",
                        f"dnsmos={str(dnsmos).lower()}",
                        "speaker=false",
                        f"limit_files={limit if limit else 'null'}",
                    ],
                    out,
                )
            )
            label = f"{name}, NFE {nfe}" + (", bf16" if precision == "bf16" else "")
            rows.append([label, s["num_files"]] + [_cell(s.get(k)) for k in (*_quality_keys(), "rtf")])
        rows.append(
            ["noisy input", s["num_files"]] + [_cell(s["noisy"].get(k)) for k in _quality_keys()] + [""]
        )
    return rows


# ------------------------------------------------------------------------------ (d) folder
def folder(ckpt: str, *, files: int, seconds: float, device: str) -> list[list]:
    """``evaluate`` over ``files`` files (metrics off, model loaded beforehand) with and without
    the background writer, against ``files`` bare forwards: what a folder run adds."""
    from meanflowse.inference.enhancer import Enhancer, padded_frames
    from meanflowse.inference.evaluation import evaluate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for k in range(files):
            write_noisy(src / f"f{k:02d}.wav", seconds, seed=k)
        enh = Enhancer.from_checkpoint(ckpt, device=device)
        frames = padded_frames(int(seconds * 16000), hop=enh.spec.hop_length, multiple=enh.frame_multiple)
        bare = files * _bare_forward(enh, frames, repeats=3)
        for overlap in ("false", "true", "false"):  # off twice: the first run warms the disk cache
            out = Path(tmp) / f"out_{overlap}"
            cfg = eval_config(
                [
                    f"ckpt_path={ckpt}",
                    f"input={src}",
                    f"output={out}",
                    f"device={device}",
                    "metrics=false",
                    f"overlap_io={overlap}",
                    "overwrite=true",
                    f"chunk_s={seconds + 1.0}",
                ],
                out,
            )
            wall = time_call(lambda: evaluate(cfg, enhancer=enh), warmup=0, repeats=1)
            rows.append(
                [f"overlap_io={overlap}", files, f"{wall:.3f}", f"{bare:.3f}", f"{(wall - bare) / bare:+.1%}"]
            )
    return rows[1:]


# ------------------------------------------------------------------------------ report
def run(
    ckpt: str,
    *,
    quick: bool = False,
    device: str = "auto",
    only: tuple[str, ...] = ("memory", "rtf", "quality", "folder"),
) -> dict[str, list[list]]:
    from meanflowse.inference.enhancer import resolve_device

    dev = str(resolve_device(device))
    print(f"Enhancement benchmarks, checkpoint {ckpt}, device {dev}; {machine()}\n")
    out = {}
    if "memory" in only:
        long_s, short_s, chunk_s = (20.0, 2.0, 2.0) if quick else (600.0, 10.0, 10.0)
        out["memory"] = memory(ckpt, long_s=long_s, short_s=short_s, chunk_s=chunk_s, device=dev)
        print(f"(a) peak memory, whole eval.py pipeline, chunk_s={chunk_s}\n")
        print(
            markdown_table(
                [
                    "file",
                    "RSS after model load (MB)",
                    "peak RSS (MB)",
                    "RSS added (MB)",
                    "peak CUDA alloc (MB)",
                    "RTF",
                ],
                out["memory"],
            )
            + "\n"
        )
    if "rtf" in only:
        seconds, nfes, reps = (2.0, (1, 2), 1) if quick else (10.0, (1, 2, 5, 10), 5)
        out["rtf"] = speed(ckpt, seconds=seconds, nfes=nfes, device=dev, repeats=reps)
        print(f"(b) speed on a {seconds:g} s file (median of {reps} alternating pairs, after a warm-up)\n")
        print(
            markdown_table(
                [
                    "NFE",
                    "sampler",
                    "RTF (load+enhance+write)",
                    "RTF (enhance)",
                    "pipeline s",
                    "NFE x bare forward s",
                    "overhead",
                ],
                out["rtf"],
            )
            + "\n"
        )
    if "quality" in only:
        out["quality"] = quality(ckpt, device=dev, limit=2 if quick else None, dnsmos=not quick)
        print("(c) quality on the checkpoint's test split (means over files)\n")
        print(markdown_table(["sampler", "files", *_quality_labels(), "RTF"], out["quality"]) + "\n")
    if "folder" in only:
        files, seconds = (3, 2.0) if quick else (8, 10.0)
        out["folder"] = folder(ckpt, files=files, seconds=seconds, device=dev)
        print(
            f"(d) a folder of {files} files of {seconds:g} s through evaluate() (metrics off, "
            "model loaded beforehand): whole run against the bare forwards\n"
        )
        print(
            markdown_table(["mode", "files", "run s", "files x bare forward s", "overhead"], out["folder"])
            + "\n"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="checkpoint, e.g. outputs/demo/checkpoints/last.ckpt")
    ap.add_argument("--quick", action="store_true", help="short files, few repeats: checks it runs")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default="memory,rtf,quality,folder", help="comma-separated sections")
    ap.add_argument("--memory-case", help=argparse.SUPPRESS)  # internal: one subprocess case
    ap.add_argument("--chunk-s", type=float, default=10.0, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if not Path(a.ckpt).is_file():
        ap.error(f"--ckpt {a.ckpt}: no such file (train one: `python train.py experiment=demo`)")
    from meanflowse.runtime import apply_cpu_memory_setting

    apply_cpu_memory_setting("auto")  # as eval.py does
    if a.memory_case:
        print(json.dumps(_memory_case(a.ckpt, Path(a.memory_case), Path(a.out), a.device, a.chunk_s)))
        return
    run(a.ckpt, quick=a.quick, device=a.device, only=tuple(s.strip() for s in a.only.split(",")))


if __name__ == "__main__":
    main()
