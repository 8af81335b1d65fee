"""``evaluate(cfg)``: enhance a file, a folder or a dataset split; write wavs atomically; measure.

Inputs (exactly one of ``input`` and ``split``):

* ``input=FILE``; ``input=DIR`` (every audio file below it, recursively); ``input=DIR`` holding
  ``noisy/`` (enhanced) and ``clean/`` (the references, same relative names);
* ``split=test`` (or train/valid): that split of the dataset the checkpoint was trained on, at
  ``data.base_dir`` when given, else the ``data.base_dir`` stored in the checkpoint's config;
  the checkpoint's data module finds (and, for the built-in corpus, generates) the files.

Outputs, under ``output`` (default ``<run>/enhanced/<input or split name>``): the enhanced files
with the inputs' relative paths, rate, length, channels, format and sample format;
``metrics.csv`` (a row per file, failures included, with their error); ``summary.json`` (means
over files: :data:`meanflowse.eval_reports.SUMMARY_KEYS` plus ``rtf, nfe, num_files, num_failed`` and the noisy input's
means under ``noisy``); ``plots/`` with ``plots=true``.

A file whose output exists is not enhanced again (``overwrite=true`` redoes it): its output is
read back and measured, so an interrupted run resumes and still reports every file. The output
folder records what made its files (:data:`SETTINGS_FILE`: the checkpoint's path, size and
modification time, sampler, NFE, precision, seed, chunking); a run whose settings differ refuses
to mix its files with those, unless ``overwrite=true``, so a retrained checkpoint is never
reported with a previous model's outputs.
RTF = enhancement wall time (normalisation, STFT, sampler, inverse STFT, resampling; no disk
I/O and no metrics) / audio duration, after a warm-up call and with device synchronisation.

Overlap (``overlap_io``, default on a GPU): writing, reading back, measuring and plotting file k
run on one worker thread while the device enhances file k+1, so disk I/O and the CPU-bound
metrics stop adding to the GPU's time; at most ``MAX_PENDING`` files wait for the worker,
which bounds memory (:class:`meanflowse.background.Background`). Off on a CPU: there the worker would compete for the cores with torch's
own threads.
"""
from __future__ import annotations

import importlib
import json
import logging
import math
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
import torch
import torchaudio
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from meanflowse import metrics as M
from meanflowse.atomic import atomic_path, write_text_atomic
from meanflowse.background import Background
from meanflowse.data.audio import AudioError, audio_info, load_audio
from meanflowse.data.folder import AUDIO_EXTS, SPLITS, UNSUPPORTED_EXTS, DatasetError
from meanflowse.enhance import CheckpointError, Enhancer, padded_frames
from meanflowse.eval_reports import results_table, summarize, summary_keys, write_reports
from meanflowse.runtime import auto_flag

log = logging.getLogger(__name__)
# what one bad file may raise; anything else is a bug and stops the run
FILE_ERRORS = (AudioError, OSError, RuntimeError, ValueError, sf.SoundFileError)


class EvalError(ValueError):
    """A bad eval.py argument; the message names the key and what to do."""


@dataclass
class Item:
    """One file to enhance: ``src`` -> ``output/rel``, measured against ``ref`` when given."""

    src: Path
    rel: Path
    ref: Path | None = None
    row: dict[str, Any] = field(default_factory=dict)
    frames: int = 0
    sr: int = 0
    channels: int = 0
    format: str = "WAV"
    subtype: str | None = None

    @property
    def duration(self) -> float:
        return self.frames / self.sr if self.sr else 0.0


# ------------------------------------------------------------------------------ arguments
def check_args(cfg: DictConfig) -> None:
    """Argument combinations, checked before the checkpoint is loaded."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise EvalError("no checkpoint given: pass ckpt_path=<run>/checkpoints/last.ckpt (a "
                        "train.py run); `make demo` leaves its model at "
                        "outputs/demo/checkpoints/last.ckpt")
    has_input, split = cfg.get("input") is not None, cfg.get("split")
    base_dir = (cfg.get("data") or {}).get("base_dir")
    if has_input == (split is not None):
        raise EvalError("give exactly one of input=PATH (a file or folder) and split=NAME "
                        f"(a split of the checkpoint's dataset: {', '.join(SPLITS)})")
    if split is not None and split not in SPLITS:
        raise EvalError(f"split={split}: use one of {', '.join(SPLITS)}")
    if split is not None and cfg.get("reference"):
        raise EvalError("reference= goes with input=; a split's references are its clean/ folder")
    if base_dir and split is None:
        raise EvalError("data.base_dir= goes with split=NAME; for a folder pass input=DIR")
    if int(cfg.batch_size) < 1:
        raise EvalError(f"batch_size={cfg.batch_size}: needs at least 1")
    nfe = (cfg.get("sampler") or {}).get("nfe")
    if nfe is not None and int(nfe) < 1:
        raise EvalError(f"sampler.nfe={nfe}: needs at least one network evaluation")
    for key in ("overlap_io", "channels_last"):
        try:
            auto_flag(cfg.get(key), key, auto=False)
        except ValueError as err:
            raise EvalError(str(err)) from None
    if cfg.get("limit_files") is not None and int(cfg.limit_files) < 1:
        raise EvalError(f"limit_files={cfg.limit_files}: use null (all files) or a positive number")


def _scan(folder: Path, skip: Path | None) -> list[Path]:
    """Audio files below ``folder`` (hidden ones and the ``skip`` folder left out), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (skip is None or (here / d).resolve() != skip))
        found += [here / f for f in sorted(filenames) if not f.startswith(".")
                  and Path(f).suffix.lower() in AUDIO_EXTS | UNSUPPORTED_EXTS]
    return found


def _default_output(cfg: DictConfig, name: str) -> Path:
    return Path(str(cfg.ckpt_path)).resolve().parent.parent / "enhanced" / name


def input_items(cfg: DictConfig) -> tuple[list[Item], Path]:
    """``(items, output_dir)`` for ``input=PATH``; the output may be neither the input folder
    nor the references' folder."""
    src = Path(str(cfg.input)).expanduser()
    if not src.exists():
        raise EvalError(f"input={src}: no such file or folder")
    ref_dir = Path(str(cfg.reference)).expanduser() if cfg.get("reference") else None
    if ref_dir is not None and not ref_dir.is_dir():
        raise EvalError(f"reference={ref_dir}: no such folder")
    name = src.stem if src.is_file() else src.resolve().name
    if src.is_dir() and (src / "noisy").is_dir():  # a split folder
        ref_dir = ref_dir or ((src / "clean") if (src / "clean").is_dir() else None)
        src = src / "noisy"
    out = Path(str(cfg.output)).expanduser() if cfg.get("output") else _default_output(cfg, name)
    root = src.parent if src.is_file() else src
    _check_output(out, [root] + ([ref_dir] if ref_dir is not None else []))
    files = [src] if src.is_file() else _scan(src, skip=out.resolve())
    if not files:
        raise EvalError(f"input={src}: no audio files ({', '.join(sorted(AUDIO_EXTS))}) in this folder")
    items = []
    for f in files:
        rel = f.relative_to(root)
        ref = None
        if ref_dir is not None:  # same relative name, any audio extension
            ref = next((c for c in (ref_dir / rel, *sorted((ref_dir / rel.parent).glob(rel.stem + ".*")))
                        if c.is_file() and c.suffix.lower() in AUDIO_EXTS), None)
        items.append(Item(src=f, rel=rel, ref=ref))
    return items, out


def split_items(cfg: DictConfig, train_cfg: DictConfig) -> tuple[list[Item], Path]:
    """Items of ``split`` of the checkpoint's dataset (see the module docstring)."""
    from hydra.utils import instantiate

    data_cfg = train_cfg.get("data")
    if data_cfg is None or "_target_" not in data_cfg:
        raise EvalError(f"{cfg.ckpt_path}: the checkpoint stores no data config; pass input=DIR")
    given = (cfg.get("data") or {}).get("base_dir")
    base_dir = given or data_cfg.get("base_dir")
    if not base_dir:
        raise EvalError("split= needs data.base_dir=DIR (the checkpoint stores none)")
    # the checkpoint's own built-in corpus is regenerated if it was deleted; a folder named on
    # the command line is read as it is
    extra = {"synthetic": None} if given else {}
    try:
        dm = instantiate(data_cfg, base_dir=str(base_dir), num_workers=0, **extra)
        pairs = dm.test_files(cfg.split)
    except (DatasetError, FileExistsError) as err:
        raise EvalError(f"split={cfg.split} of data.base_dir={base_dir}: {err}") from err
    if not pairs:
        raise EvalError(f"split={cfg.split} of data.base_dir={base_dir} holds no files")
    items = [Item(src=p.noisy_source, ref=p.clean_source,
                  rel=Path(p.name + p.noisy_source.suffix)) for p in pairs]
    out = Path(str(cfg.output)).expanduser() if cfg.get("output") else _default_output(cfg, cfg.split)
    _check_output(out, [Path(base_dir) / cfg.split / role for role in ("noisy", "clean")])
    return items, out


def _check_output(out: Path, protected: list[Path]) -> None:
    if out.exists() and not out.is_dir():
        raise EvalError(f"output={out} is a file; give a folder")
    for p in protected:
        if out.resolve() == p.resolve():
            raise EvalError(f"output={out} is the input folder ({p}): choose another so no input "
                            "is overwritten")


# ------------------------------------------------------------------------------ writing
def write_atomic(path: Path, wav: torch.Tensor, sr: int, *, format: str = "WAV",
                 subtype: str | None = None) -> None:
    """Write ``wav [C, L]`` to a temp file beside ``path``, then rename: never a half-written
    file. ``format``/``subtype`` as soundfile names them (the input's, so the output matches)."""
    if not sf.check_format(format, subtype):
        subtype = None  # soundfile's default for the format
    data = wav.T.numpy()
    if subtype is not None and (subtype.startswith("PCM") or subtype in ("ULAW", "ALAW")):
        data = data.clip(-1.0, 1.0)  # integer formats: clip rather than wrap around
    with atomic_path(path) as tmp:
        sf.write(tmp, data, sr, format=format, subtype=subtype)


def read_info(item: Item) -> None:
    if item.src.suffix.lower() in UNSUPPORTED_EXTS:
        raise AudioError(f"{item.src}: {item.src.suffix} cannot be read by libsndfile; convert it "
                         "to WAV or FLAC (e.g. `ffmpeg -i in.m4a out.wav`)")
    info = audio_info(item.src)
    item.frames, item.sr, item.channels = int(info.frames), int(info.samplerate), int(info.channels)
    item.format, item.subtype = info.format, info.subtype


# ------------------------------------------------------------------------------ enhancing
def to_rate(wav: torch.Tensor, sr: int, target: int) -> torch.Tensor:
    return torchaudio.functional.resample(wav, sr, target) if sr != target else wav


def fit_length(wav: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last axis to ``length`` (resampling may be off by a sample)."""
    if wav.shape[-1] == length:
        return wav
    return torch.nn.functional.pad(wav, (0, max(0, length - wav.shape[-1])))[..., :length]


def enhance_group(enhancer: Enhancer, items: list[Item], noisy: list[torch.Tensor]
                  ) -> tuple[list[torch.Tensor], float]:
    """Enhance a batch of loaded files ``[C, L]`` at their own rates; returns the outputs (same
    rate, length, channels) and the enhancement wall time."""
    sr = enhancer.sample_rate
    with M.Stopwatch(enhancer.device) as sw:
        outs = enhancer.enhance_many([to_rate(w, it.sr, sr) for it, w in zip(items, noisy)])
        outs = [fit_length(to_rate(o, sr, it.sr), w.shape[-1]) for o, it, w in zip(outs, items, noisy)]
    return outs, sw.seconds


def group_items(items: list[Item], enhancer: Enhancer) -> list[list[Item]]:
    """Files of the same padded size at the model rate, up to ``batch_size`` channels a group;
    a file longer than a chunk goes alone (its chunks make its batches)."""
    hop, m, sr = enhancer.spec.hop_length, enhancer.frame_multiple, enhancer.sample_rate
    key = lambda it: padded_frames(math.ceil(it.frames * sr / it.sr), hop=hop, multiple=m)
    groups: list[list[Item]] = []
    for it in sorted(items, key=lambda it: (key(it), str(it.rel))):
        long = it.frames * sr / it.sr > enhancer.chunk
        g = groups[-1] if groups else None
        if (g is None or long or g[0].frames * sr / g[0].sr > enhancer.chunk or key(g[0]) != key(it)
                or sum(x.channels for x in g) + it.channels > enhancer.batch_size):
            groups.append([it])
        else:
            g.append(it)
    return groups


# ------------------------------------------------------------------------------ measuring
def measure(ref_path: Path | None, noisy: torch.Tensor, enhanced: torch.Tensor, sr: int, *,
            with_dnsmos: bool, with_speaker: bool) -> dict[str, Any]:
    """Metrics of the enhanced and the noisy signal (channel mean, cropped to the reference),
    as ``key`` and ``noisy_key``; each metric that fails is NaN plus an ``error_key`` entry."""
    ref = None
    if ref_path is not None:
        ref = load_audio(ref_path, target_sr=sr, mono=True)[0]
        n = min(ref.shape[-1], enhanced.shape[-1])
        ref, noisy, enhanced = ref[:n], noisy[..., :n], enhanced[..., :n]
    row: dict[str, Any] = {}
    for prefix, sig in (("", enhanced), ("noisy_", noisy)):
        res = M.compute_all(None if ref is None else ref.numpy(), sig.mean(0).numpy(), sr,
                            with_dnsmos=with_dnsmos, with_speaker=with_speaker and ref is not None)
        row.update({prefix + k: v for k, v in res.items() if k != "errors"})
        row.update({f"{prefix}error_{k}": v for k, v in res["errors"].items()})
    return row


def _speaker_on(cfg: DictConfig) -> bool:
    choice = cfg.get("speaker", "auto")
    if choice == "auto":
        return M.speaker_similarity_available()
    if choice and not M.speaker_similarity_available():
        raise EvalError("speaker=true but speaker similarity is unavailable: "
                        "`pip install --no-deps resemblyzer==0.1.4` (it ships the encoder weights)")
    return bool(choice)


# ------------------------------------------------------------------------------ the run
def load_enhancer(cfg: DictConfig) -> Enhancer:
    s = cfg.get("sampler") or {}
    try:
        return Enhancer.from_checkpoint(
            cfg.ckpt_path, use_ema=cfg.use_ema, device=cfg.device, sampler=s.get("name"),
            nfe=s.get("nfe"), t_end=s.get("t_end"), seed=cfg.seed, chunk_s=cfg.chunk_s,
            overlap_s=cfg.overlap_s, batch_size=cfg.batch_size, precision=cfg.precision,
            channels_last=None if cfg.channels_last == "auto" else bool(cfg.channels_last))
    except CheckpointError:
        raise
    except ValueError as err:  # chunk_s/overlap_s/sampler settings the enhancer refuses
        raise EvalError(str(err)) from err


SETTINGS_FILE = "eval_settings.json"


def run_settings(cfg: DictConfig, enhancer: Enhancer) -> dict[str, Any]:
    """What decides the enhanced audio (not batch size, layout or device: batching is exact, the
    others change round-off only)."""
    ckpt = Path(str(cfg.ckpt_path)).resolve()
    st = ckpt.stat()
    return {"checkpoint": str(ckpt), "checkpoint_size": st.st_size,
            "checkpoint_mtime_ns": st.st_mtime_ns, "use_ema": bool(cfg.use_ema),
            "sampler": enhancer.sampler_name, "nfe": enhancer.steps, "t_end": enhancer.t_end,
            "precision": enhancer.precision, "seed": int(cfg.seed), "chunk_s": float(cfg.chunk_s),
            "overlap_s": float(cfg.overlap_s)}


def check_settings(out_dir: Path, settings: dict[str, Any], *, overwrite: bool) -> None:
    """Refuse to resume into a folder whose files another checkpoint or setting made; then
    record this run's settings there (before any file is written, so a resume matches)."""
    path = out_dir / SETTINGS_FILE
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        before = None  # a new folder, or one written before settings were recorded
    if before is not None and before != settings and not overwrite:
        changed = sorted(k for k in settings.keys() | before.keys() if before.get(k) != settings.get(k))
        raise EvalError(f"output={out_dir} holds files made with other settings ({', '.join(changed)} "
                        f"differ; see {path}); pass overwrite=true to redo them, or another output=")
    write_text_atomic(path, json.dumps(settings, indent=2) + "\n", suffix=".tmp")


def triage(items: list[Item], out_dir: Path, *, overwrite: bool
           ) -> tuple[list[Item], list[Item], list[Item]]:
    """``(todo, done, failed)``: files to enhance, files whose output exists (measured, not
    redone, unless ``overwrite``), unreadable files. Refuses any output that is an input."""
    inputs = {p.resolve() for it in items for p in (it.src, it.ref) if p is not None}
    todo, done, failures = [], [], []
    for it in items:
        dst = out_dir / it.rel
        it.row = {"file": it.rel.as_posix()}
        if dst.resolve() in inputs:
            raise EvalError(f"output={out_dir} would overwrite the input {dst}; choose another folder")
        try:
            read_info(it)
        except FILE_ERRORS as err:
            _fail(it, err, failures)
            continue
        (done if dst.exists() and not overwrite else todo).append(it)
    if done:
        log.info("%d of %d outputs exist in %s; measured, not redone (overwrite=true redoes them)",
                 len(done), len(items), out_dir)
    return todo, done, failures


def evaluate(cfg: DictConfig, *, enhancer: Enhancer | None = None) -> dict[str, Any]:
    """Enhance and measure what `cfg` names (see the module docstring); returns the summary.

    ``enhancer``: one already loaded from ``cfg.ckpt_path`` (benchmarks time the run without
    the model load); by default it is loaded here."""
    check_args(cfg)
    plots = None
    if cfg.get("plots"):
        try:
            plots = importlib.import_module("meanflowse.plots")
        except ImportError as err:
            raise EvalError(f"plots=true needs matplotlib ({err}); `pip install matplotlib` "
                            "or run without plots") from err
    with_speaker = bool(cfg.metrics) and _speaker_on(cfg)
    enhancer = enhancer or load_enhancer(cfg)
    items, out_dir = split_items(cfg, enhancer.config) if cfg.get("split") is not None else input_items(cfg)
    if cfg.get("limit_files") is not None:
        items = items[:int(cfg.limit_files)]
    console = Console()
    todo, done, failures = triage(items, out_dir, overwrite=cfg.overwrite)  # refuses out == in
    check_settings(out_dir, run_settings(cfg, enhancer), overwrite=cfg.overwrite)

    def finish(it: Item, noisy: torch.Tensor, enhanced: torch.Tensor) -> None:
        it.row.update(duration_s=round(it.duration, 4), sample_rate=it.sr, channels=it.channels)
        if cfg.metrics:
            it.row.update(measure(it.ref, noisy, enhanced, it.sr, with_dnsmos=cfg.dnsmos,
                                  with_speaker=with_speaker))
        if plots is not None:
            clean = load_audio(it.ref, target_sr=it.sr)[0] if it.ref is not None else None
            plots.spectrogram_figure(out_dir / "plots" / it.rel.with_suffix(".png"), noisy=noisy.mean(0),
                                     enhanced=enhanced.mean(0), clean=clean, sr=it.sr,
                                     title=it.rel.as_posix())

    def ship(it: Item, noisy: torch.Tensor, enhanced: torch.Tensor, sec: float
             ) -> tuple[float, float]:
        """Write, read back, measure; returns what the RTF counts: (enhancement s, audio s)."""
        try:
            dst = out_dir / it.rel
            write_atomic(dst, enhanced, it.sr, format=it.format, subtype=it.subtype)
            if cfg.metrics:  # measure what was shipped (quantised to the input's format),
                enhanced = load_audio(dst, mono=False)[0]  # as a resume does
            it.row.update(status="enhanced", rtf=M.rtf(sec, it.frames, it.sr))
            finish(it, noisy, enhanced)
            return sec, it.duration
        except FILE_ERRORS as err:
            _fail(it, err, failures)
            return 0.0, 0.0

    if todo:  # warm-up, so the RTF is steady-state (lazy init, allocator, kernel selection)
        enhancer.enhance(torch.zeros(1, enhancer.sample_rate // 4))
    overlap = auto_flag(cfg.overlap_io, "overlap_io", auto=enhancer.device.type == "cuda")
    columns = (TextColumn("[bold]enhancing"), BarColumn(), TextColumn("{task.fields[files]} files"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not cfg.progress) as bar, \
            Background(enabled=overlap) as worker:
        task = bar.add_task("enhance", total=sum(it.duration for it in todo) + len(done), files=0)

        counting = threading.Lock()  # the worker's callbacks and this thread both advance

        def advance(job: Future | None, it: Item) -> None:
            with counting:
                bar.update(task, advance=it.duration, files=bar.tasks[0].fields["files"] + 1)

        for group in group_items(todo, enhancer):
            shipped = set()
            for it, noisy, enhanced, sec in _enhance_robustly(enhancer, group, failures):
                shipped.add(id(it))
                worker.submit(ship, it, noisy, enhanced, sec, then=advance)
            for it in group:
                if id(it) not in shipped:  # failed to load or to enhance: no job to advance
                    advance(None, it)
        timings = worker.results()
        seconds, duration = sum(t[0] for t in timings), sum(t[1] for t in timings)
        for it in done:
            try:
                noisy = load_audio(it.src, mono=False)[0]
                enhanced = load_audio(out_dir / it.rel, mono=False)[0]
                it.row.update(status="resumed")
                finish(it, noisy, enhanced)
            except FILE_ERRORS as err:
                _fail(it, err, failures)
            bar.update(task, advance=1, files=bar.tasks[0].fields["files"] + 1)
    ok = [it.row for it in items if it not in failures and it.row.get("status")]
    summary = summarize(ok, len(failures), nfe=enhancer.steps,
                        rtf=seconds / duration if duration else math.nan, with_speaker=with_speaker)
    rows = sorted((it.row for it in items), key=lambda r: r["file"])
    write_reports(out_dir, rows, summary)
    if plots is not None and ok:
        plots.summary_figure(out_dir / "plots" / "summary.png", ok, keys=summary_keys(with_speaker))
    title = (f"{enhancer.sampler_name}, NFE {enhancer.steps}: {len(ok)} files"
             + (f", {len(failures)} failed" if failures else "") + f" -> {out_dir}")
    console.print(results_table(ok, summary, title=title, keys=summary_keys(with_speaker)))
    for it in failures:
        console.print(f"[red]failed[/red] {it.row['file']}: {it.row['error']}")
    return summary


def _fail(item: Item, err: Exception, failures: list[Item]) -> None:
    item.row.update(status="failed", error=f"{type(err).__name__}: {err}")
    if item not in failures:
        failures.append(item)
    log.error("%s: %s", item.src, err)


def _enhance_robustly(enhancer: Enhancer, group: list[Item], failures: list[Item]):
    """Yield ``(item, noisy, enhanced, seconds)``; a file that fails to load or enhance is
    recorded and skipped, and a failing batch is retried file by file so the others go on."""
    loaded = []
    for it in group:
        try:
            loaded.append((it, load_audio(it.src, mono=False)[0]))
        except FILE_ERRORS as err:
            _fail(it, err, failures)
    if not loaded:
        return
    try:
        outs, sec = enhance_group(enhancer, [it for it, _ in loaded], [w for _, w in loaded])
    except FILE_ERRORS as err:
        if len(loaded) == 1:
            _fail(loaded[0][0], err, failures)
            return
        for it, _ in loaded:
            yield from _enhance_robustly(enhancer, [it], failures)
        return
    total = sum(it.duration for it, _ in loaded)
    for (it, noisy), out in zip(loaded, outs):  # a batch's time, shared by duration
        yield it, noisy, out, sec * it.duration / total
