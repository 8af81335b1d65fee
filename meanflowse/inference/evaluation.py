"""``evaluate(cfg)``: enhance a file, a folder or a dataset split; write wavs atomically; measure.

Inputs (exactly one of ``input`` and ``split``):

* ``input=FILE``; ``input=DIR`` (every audio file below it, recursively); ``input=DIR`` holding
  ``noisy/`` (enhanced) and ``clean/`` (the references, same relative names);
* ``split=test`` (or train/valid): that split of the dataset the checkpoint was trained on, at
  ``data.base_dir`` when given, else the ``data.base_dir`` stored in the checkpoint's config;
  the checkpoint's data module finds (and, for the built-in corpus, generates) the files.

Inputs and the default output folder: :mod:`meanflowse.inference.inputs`. Outputs, under ``output``
(default ``<run>/enhanced/<name>-<hash of the input path>``, or ``<run>/enhanced/<split>``): the
enhanced files with the inputs' relative paths, rate, length, channels, format and sample
format; ``metrics.csv`` (a row per file, failures included, with their error); ``summary.json``
(means over files: :data:`meanflowse.inference.reports.SUMMARY_KEYS` plus ``rtf, nfe, num_files,
num_failed``, ``ci95`` (95% half-widths), ``counts`` (files per mean),
``files_with_metric_errors`` and the noisy input's means under ``noisy``); ``plots/`` with
``plots=true``. With ``metrics=false`` the two reports are ``unscored_metrics.csv`` and
``unscored_summary.json``, so an earlier run's measured numbers in the folder are never replaced.

Resume, file by file (:mod:`meanflowse.inference.provenance`): each written output gets a record of the
run settings, its source's (and reference's) size and mtime and its own. An existing output is
read back and measured, not redone, only when its record matches this run and the files on disk;
one this run made from a since-changed source (or changed since) is redone; one with no record or
another run's settings is refused (EvalError), unless ``overwrite=true``, which redoes it. So a
retrained checkpoint is never reported with a previous model's outputs.

Only a bad input file (:class:`AudioError`: unreadable, corrupt, empty, unsupported) is a
"failed" row; an error in enhancing or writing (out of memory, a bug, a full disk) stops the run.
RTF = enhancement wall time (normalisation, STFT, sampler, inverse STFT, resampling; no disk
I/O and no metrics) / audio duration, after a warm-up call and with device synchronisation.

Overlap (``overlap_io``, default on a GPU): writing, reading back, measuring and plotting file k
run on one worker thread while the device enhances file k+1, so disk I/O and the CPU-bound
metrics stop adding to the GPU's time; at most ``MAX_PENDING`` files wait for the worker,
which bounds memory (:class:`meanflowse.inference.background.Background`). Off on a CPU: there the worker
would compete for the cores with torch's own threads.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from meanflowse.data.audio import AudioError, load_audio
from meanflowse.inference.audio_io import fit_length, to_rate, write_atomic
from meanflowse.inference.background import Background
from meanflowse.inference.enhancer import CheckpointError, Enhancer, padded_frames

# re-exported: inputs' and provenance's names were this module's (tests, benchmarks)
from meanflowse.inference.inputs import (
    EvalError,
    Item,
    check_args,
    input_items,
    read_info,
    resolved,
    split_items,
)
from meanflowse.inference.provenance import (
    ProvenanceLog,
    foreign_error,
    identity,
    read_history,
    run_settings,
    verdict,
)
from meanflowse.inference.reports import results_table, summarize, summary_keys, write_reports
from meanflowse.metrics import scores as M
from meanflowse.runtime import auto_flag

log = logging.getLogger(__name__)
# what one bad input file raises (the audio loader's own error, naming the file); anything
# else (out of memory, a bug, a failed write) stops the run with its message
FILE_ERRORS = (AudioError,)
PIECES_BAR_FROM = 4  # files of more pieces than this get a progress bar of their own


# ------------------------------------------------------------------------------ enhancing
def enhance_group(
    enhancer: Enhancer, items: list[Item], noisy: list[torch.Tensor], on_batch=None
) -> tuple[list[torch.Tensor], float]:
    """Enhance a batch of loaded files ``[C, L]`` at their own rates; returns the outputs (same
    rate, length, channels) and the enhancement wall time. ``on_batch``: see ``enhance_many``."""
    sr = enhancer.sample_rate
    with M.Stopwatch(enhancer.device) as sw:
        outs = enhancer.enhance_many(
            [to_rate(w, it.sr, sr) for it, w in zip(items, noisy)], on_batch=on_batch
        )
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
        if (
            g is None
            or long
            or g[0].frames * sr / g[0].sr > enhancer.chunk
            or key(g[0]) != key(it)
            or sum(x.channels for x in g) + it.channels > enhancer.batch_size
        ):
            groups.append([it])
        else:
            g.append(it)
    return groups


# ------------------------------------------------------------------------------ measuring
def measure(
    ref_path: Path | None,
    noisy: torch.Tensor,
    enhanced: torch.Tensor,
    sr: int,
    *,
    with_dnsmos: bool,
    with_speaker: bool,
) -> dict[str, Any]:
    """Metrics of the enhanced and the noisy signal (channel mean, cropped to the reference),
    as ``key`` and ``noisy_key``; each metric that fails is NaN plus an ``error_key`` entry."""
    ref = None
    if ref_path is not None:
        ref = load_audio(ref_path, target_sr=sr, mono=True)[0]
        n = min(ref.shape[-1], enhanced.shape[-1])
        ref, noisy, enhanced = ref[:n], noisy[..., :n], enhanced[..., :n]
    row: dict[str, Any] = {}
    for prefix, sig in (("", enhanced), ("noisy_", noisy)):
        res = M.compute_all(
            None if ref is None else ref.numpy(),
            sig.mean(0).numpy(),
            sr,
            with_dnsmos=with_dnsmos,
            with_speaker=with_speaker and ref is not None,
        )
        row.update({prefix + k: v for k, v in res.items() if k != "errors"})
        row.update({f"{prefix}error_{k}": v for k, v in res["errors"].items()})
    return row


def _speaker_on(cfg: DictConfig) -> bool:
    choice = cfg.get("speaker", "auto")
    if choice == "auto":
        return M.speaker_similarity_available()
    if choice and not M.speaker_similarity_available():
        raise EvalError(
            "speaker=true but speaker similarity is unavailable: "
            "`pip install --no-deps resemblyzer==0.1.4` (it ships the encoder weights)"
        )
    return bool(choice)


# ------------------------------------------------------------------------------ the run
def load_enhancer(cfg: DictConfig) -> Enhancer:
    s = cfg.get("sampler") or {}
    try:
        return Enhancer.from_checkpoint(
            cfg.ckpt_path,
            use_ema=cfg.use_ema,
            device=cfg.device,
            sampler=s.get("name"),
            nfe=s.get("nfe"),
            t_end=s.get("t_end"),
            seed=cfg.seed,
            chunk_s=cfg.chunk_s,
            overlap_s=cfg.overlap_s,
            batch_size=cfg.batch_size,
            precision=cfg.precision,
            channels_last=None if cfg.channels_last == "auto" else bool(cfg.channels_last),
        )
    except CheckpointError:
        raise
    except ValueError as err:  # chunk_s/overlap_s/sampler settings the enhancer refuses
        raise EvalError(str(err)) from err


def triage(
    items: list[Item], out_dir: Path, settings: dict[str, Any], *, overwrite: bool
) -> tuple[list[Item], list[Item], list[Item]]:
    """``(todo, done, failed)``: files to enhance, files whose output this run made and may
    resume (measured, not redone; see :func:`meanflowse.inference.provenance.verdict`), unreadable files.
    Refuses, before anything is written, an output that is an input and (unless ``overwrite``)
    outputs this run did not make."""
    inputs = {resolved(p) for it in items for p in (it.src, it.ref) if p is not None}
    history = read_history(out_dir)
    todo, done, failures, foreign = [], [], [], []
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
        it.source_id, it.ref_id = identity(it.src), identity(it.ref)
        found = verdict(it, dst, settings, history)
        if overwrite or found in ("new", "redo"):
            todo.append(it)
        else:
            (done if found == "resume" else foreign).append(it)
    if foreign:
        raise foreign_error(out_dir, foreign, settings, history)
    if done:
        log.info(
            "%d of %d outputs exist in %s; measured, not redone (overwrite=true redoes them)",
            len(done),
            len(items),
            out_dir,
        )
    return todo, done, failures


def evaluate(cfg: DictConfig, *, enhancer: Enhancer | None = None) -> dict[str, Any]:
    """Enhance and measure what `cfg` names (see the module docstring); returns the summary.

    ``enhancer``: one already loaded from ``cfg.ckpt_path`` (benchmarks time the run without
    the model load); by default it is loaded here."""
    check_args(cfg)
    plots = None
    if cfg.get("plots"):
        try:
            plots = importlib.import_module("meanflowse.inference.plots")
        except ImportError as err:
            raise EvalError(
                f"plots=true needs matplotlib ({err}); `pip install matplotlib` or run without plots"
            ) from err
    with_speaker = bool(cfg.metrics) and _speaker_on(cfg)
    enhancer = enhancer or load_enhancer(cfg)
    items, out_dir = split_items(cfg, enhancer.config) if cfg.get("split") is not None else input_items(cfg)
    if cfg.get("limit_files") is not None:
        items = items[: int(cfg.limit_files)]
    console = Console()
    settings = run_settings(cfg, enhancer)
    todo, done, failures = triage(items, out_dir, settings, overwrite=cfg.overwrite)

    def finish(it: Item, noisy: torch.Tensor, enhanced: torch.Tensor) -> None:
        it.row.update(duration_s=round(it.duration, 4), sample_rate=it.sr, channels=it.channels)
        if cfg.metrics:
            it.row.update(
                measure(it.ref, noisy, enhanced, it.sr, with_dnsmos=cfg.dnsmos, with_speaker=with_speaker)
            )
        if plots is not None:
            clean = load_audio(it.ref, target_sr=it.sr)[0] if it.ref is not None else None
            plots.spectrogram_figure(
                out_dir / "plots" / it.rel.with_suffix(".png"),
                noisy=noisy.mean(0),
                enhanced=enhanced.mean(0),
                clean=clean,
                sr=it.sr,
                title=it.rel.as_posix(),
            )

    def ship(it: Item, noisy: torch.Tensor, enhanced: torch.Tensor, sec: float) -> tuple[float, float]:
        """Write, read back, measure; returns what the RTF counts: (enhancement s, audio s).
        A failed write stops the run; a bad reference fails this file only."""
        dst = out_dir / it.rel
        write_atomic(
            dst,
            enhanced,
            it.sr,
            format=it.format,
            subtype=it.subtype,
            before_rename=lambda tmp: prov.record(it, tmp),
        )
        try:
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
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]} {task.fields[unit]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    # the log closes last: the worker, which appends to it, is joined first
    with (
        ProvenanceLog(out_dir, settings) as prov,
        Progress(*columns, console=console, disable=not cfg.progress) as bar,
        Background(enabled=overlap) as worker,
    ):
        if cfg.overwrite:
            prov.claim()
        work = sum(it.duration for it in todo) + len(done)  # seconds of audio, and 1 per resumed file
        task = bar.add_task("enhancing", total=work, files=0, unit="files")

        counting = threading.Lock()  # the worker's callbacks and this thread both advance

        def advance(job: Future | None, it: Item) -> None:
            with counting:
                bar.update(task, advance=it.duration, files=bar.tasks[0].fields["files"] + 1)

        # a long file is many network calls: a second bar follows its pieces (chunks x channels)
        pieces = bar.add_task("  long file", total=None, visible=False, files=0, unit="pieces")

        def on_batch(finished: int, count: int) -> None:
            if count > PIECES_BAR_FROM:
                bar.update(
                    pieces,
                    completed=finished,
                    total=count,
                    visible=True,
                    files=f"{finished}/{count}",
                )

        for group in group_items(todo, enhancer):
            shipped = set()
            long = on_batch if len(group) == 1 else None  # the bar follows one long file, not a batch
            for it, noisy, enhanced, sec in _load_and_enhance(enhancer, group, failures, long):
                shipped.add(id(it))
                worker.submit(ship, it, noisy, enhanced, sec, then=advance)
            for it in group:
                if id(it) not in shipped:  # failed to load: no job to advance
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
    summary = summarize(
        ok,
        len(failures),
        nfe=enhancer.steps,
        rtf=seconds / duration if duration else math.nan,
        with_speaker=with_speaker,
    )
    rows = sorted((it.row for it in items), key=lambda r: r["file"])
    write_reports(out_dir, rows, summary, scored=bool(cfg.metrics))
    if plots is not None and ok:
        plots.summary_figure(out_dir / "plots" / "summary.png", ok, keys=summary_keys(with_speaker))
    title = (
        f"{enhancer.sampler_name}, NFE {enhancer.steps}: {len(ok)} files"
        + (f", {len(failures)} failed" if failures else "")
        + f" -> {out_dir}"
    )
    console.print(results_table(ok, summary, title=title, keys=summary_keys(with_speaker)))
    for it in failures:
        console.print(f"[red]failed[/red] {it.row['file']}: {it.row['error']}")
    return summary


def _fail(item: Item, err: Exception, failures: list[Item]) -> None:
    item.row.update(status="failed", error=f"{type(err).__name__}: {err}")
    if item not in failures:
        failures.append(item)
    log.error("%s: %s", item.src, err)


def _load_and_enhance(enhancer: Enhancer, group: list[Item], failures: list[Item], on_batch=None):
    """Yield ``(item, noisy, enhanced, seconds)``; a file that fails to load is recorded and
    left out. An error in enhancing is no input's fault (out of memory, a bug): it propagates."""
    loaded = []
    for it in group:
        try:
            loaded.append((it, load_audio(it.src, mono=False)[0]))
        except FILE_ERRORS as err:
            _fail(it, err, failures)
    if not loaded:
        return
    outs, sec = enhance_group(enhancer, [it for it, _ in loaded], [w for _, w in loaded], on_batch)
    total = sum(it.duration for it, _ in loaded)
    for (it, noisy), out in zip(loaded, outs):  # a batch's time, shared by duration
        yield it, noisy, out, sec * it.duration / total
