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
(means over files of the metrics measured, as the registry :mod:`meanflowse.metrics.registry`
names them, plus ``rtf, nfe, num_files, num_failed``, ``ci95`` (95% half-widths), ``counts`` (files per mean),
``files_with_metric_errors`` and the noisy input's means under ``noisy``); ``plots/`` with
``plots=true``. With ``metrics=false`` the two reports are ``unscored_metrics.csv`` and
``unscored_summary.json``, so an earlier run's measured numbers in the folder are never replaced.

Resume, file by file (:mod:`meanflowse.inference.provenance`): each written output gets a record of the
run settings, its source's (and reference's) size and mtime and its own. An existing output is
read back and measured, not redone, only when its record matches this run and the files on disk;
one this run made from a since-changed source (or changed since) is redone; one with no record or
another run's settings is refused (EvalError), unless ``overwrite=true``, which redoes it. So a
retrained checkpoint is never reported with a previous model's outputs.

Enhancing, scoring and summarising is the package's one measured path,
:func:`meanflowse.inference.measured.enhance_and_score`, with this module's :class:`FileOutput`:
it says which errors fail a file and which stop the run, and what the RTF counts.

Overlap (``overlap_io``, default on a GPU): writing, reading back, measuring and plotting file k
run on one worker thread while the device enhances file k+1, so disk I/O and the CPU-bound
metrics stop adding to the GPU's time; at most ``MAX_PENDING`` files wait for the worker,
which bounds memory (:class:`meanflowse.inference.background.Background`). Off on a CPU: there the worker
would compete for the cores with torch's own threads.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from meanflowse.data.audio import load_audio
from meanflowse.inference.audio_io import write_atomic
from meanflowse.inference.enhancer import CheckpointError, Enhancer

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
from meanflowse.inference.measured import FILE_ERRORS, enhance_and_score, fail
from meanflowse.inference.provenance import (
    ProvenanceLog,
    foreign_error,
    identity,
    read_history,
    run_settings,
    verdict,
)
from meanflowse.inference.reports import results_table, write_reports
from meanflowse.metrics import registry
from meanflowse.metrics import scores as M
from meanflowse.runtime import auto_flag

log = logging.getLogger(__name__)
PIECES_BAR_FROM = 4  # files of more pieces than this get a progress bar of their own


# ------------------------------------------------------------------------------ output
@dataclass
class FileOutput:
    """eval.py's output folder: each file in its input's format, with its provenance record
    written before it is in place; what is scored is the file as written, read back."""

    out_dir: Path
    prov: ProvenanceLog

    def write(self, item: Item, enhanced: torch.Tensor) -> None:
        write_atomic(
            self.out_dir / item.rel,
            enhanced,
            item.sr,
            format=item.format,
            subtype=item.subtype,
            before_rename=lambda tmp: self.prov.record(item, tmp),
        )

    def read(self, item: Item) -> torch.Tensor:
        return load_audio(self.out_dir / item.rel, mono=False)[0]


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
            sampler_params=None if s.get("params") is None else OmegaConf.to_container(s.params),
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
            fail(it, err, failures)
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

    def draw(it: Item, noisy: torch.Tensor, enhanced: torch.Tensor) -> None:
        clean = load_audio(it.ref, target_sr=it.sr)[0] if it.ref is not None else None
        plots.spectrogram_figure(
            out_dir / "plots" / it.rel.with_suffix(".png"),
            noisy=noisy.mean(0),
            enhanced=enhanced.mean(0),
            clean=clean,
            sr=it.sr,
            title=it.rel.as_posix(),
        )

    overlap = auto_flag(cfg.overlap_io, "overlap_io", auto=enhancer.device.type == "cuda")
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]} {task.fields[unit]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    # the log closes last: the worker, which appends to it, is joined inside enhance_and_score
    with (
        ProvenanceLog(out_dir, settings) as prov,
        Progress(*columns, console=console, disable=not cfg.progress) as bar,
    ):
        if cfg.overwrite:
            prov.claim()
        work = sum(it.duration for it in todo) + len(done)  # seconds of audio, and 1 per resumed file
        task = bar.add_task("enhancing", total=work, files=0, unit="files")
        counting = threading.Lock()  # the worker's callbacks and this thread both advance

        def advance(it: Item) -> None:
            step = 1 if it.row.get("status") == "resumed" else it.duration
            with counting:
                bar.update(task, advance=step, files=bar.tasks[0].fields["files"] + 1)

        # a long file is many network calls: a second bar follows its pieces (chunks x channels)
        pieces = bar.add_task("  long file", total=None, visible=False, files=0, unit="pieces")

        def on_batch(finished: int, count: int) -> None:
            if count > PIECES_BAR_FROM:
                bar.update(pieces, completed=finished, total=count, visible=True, files=f"{finished}/{count}")

        selected = registry.selected(dnsmos=bool(cfg.dnsmos), speaker=with_speaker)
        result = enhance_and_score(
            enhancer,
            todo,
            metrics=selected,
            score=bool(cfg.metrics),
            output=FileOutput(out_dir, prov),
            resumed=done,
            failed=failures,
            overlap=overlap,
            on_item=draw if plots is not None else None,
            on_done=advance,
            on_batch=on_batch,
        )
    summary, failures = result.summary, result.failures
    ok = result.ok
    keys = registry.keys(selected)
    write_reports(out_dir, result.rows, summary, scored=bool(cfg.metrics))
    if plots is not None and ok:
        plots.summary_figure(out_dir / "plots" / "summary.png", ok, keys=keys)
    title = (
        f"{enhancer.sampler_name}, NFE {enhancer.steps}: {len(ok)} files"
        + (f", {len(failures)} failed" if failures else "")
        + f" -> {out_dir}"
    )
    console.print(results_table(ok, summary, title=title, keys=keys))
    for it in failures:
        console.print(f"[red]failed[/red] {it.row['file']}: {it.row['error']}")
    log_record(cfg.ckpt_path, title, summary, keys, failures)
    return summary


def log_record(ckpt: Any, title: str, summary: dict[str, Any], keys: list[str], failures: list) -> None:
    """What the run did, through logging, so Hydra's ``eval.log`` in the run folder keeps it (the
    table above goes to the terminal only)."""
    log.info("%s: %s", ckpt, title)
    noisy = summary.get("noisy") or {}
    means = [
        f"{registry.label(k)} {summary[k]:.4g}"
        + (f" (noisy {noisy[k]:.4g})" if registry.is_finite(noisy.get(k)) else "")
        for k in keys
        if isinstance(summary.get(k), float) and registry.is_finite(summary[k])
    ]
    if means:
        log.info("means: %s", ", ".join(means))
    for it in failures:
        log.warning("failed %s: %s", it.row["file"], it.row["error"])
