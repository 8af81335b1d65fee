"""The one measured path: enhance items with a model and its sampler settings, score them with
the registry's metrics, and summarise (means, 95% half-widths, counts, the noisy input's means).

eval.py, validation, the sweep (through eval.py) and the study all call
:func:`enhance_and_score`. Where they legitimately differ is an argument, not a loop of their own:

* ``output``: eval.py writes each enhanced file in its input's format and scores what it wrote,
  read back (quantised as shipped, as a resume reads it); without one (validation, the study)
  the float output is scored in memory. On float WAV inputs the two give the same numbers.
* ``metrics``: which registry metrics (the summary's keys); ``score=False`` enhances only
  (eval.py's ``metrics=false``: the summary's means are NaN over no file); ``score_noisy``: also
  score the noisy input, as ``noisy_<key>``.
* ``resumed``: items whose output an earlier run wrote: read back and scored, not redone.

Only a bad input file (:class:`AudioError`: unreadable, corrupt, empty) is a "failed" row; an
error in enhancing or writing (out of memory, a bug, a full disk) stops the run. RTF =
enhancement wall time (normalisation, STFT, sampler, inverse STFT, resampling; no disk I/O and
no metrics) / audio duration, after a warm-up call and with device synchronisation.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import torch

from meanflowse.data.audio import AudioError, load_audio
from meanflowse.inference.background import Background
from meanflowse.inference.enhancer import Enhancer, padded_frames
from meanflowse.inference.inputs import Item
from meanflowse.inference.reports import summarize
from meanflowse.metrics import registry
from meanflowse.metrics import scores as M
from meanflowse.metrics.file_metric import FileMetric

log = logging.getLogger(__name__)
# what one bad input file raises (the audio loader's own error, naming the file)
FILE_ERRORS = (AudioError,)


class Output(Protocol):
    """Where enhanced files go (eval.py's folder); absent, outputs stay in memory."""

    def write(self, item: Item, enhanced: torch.Tensor) -> None: ...

    def read(self, item: Item) -> torch.Tensor: ...


@dataclass
class Measured:
    """Rows of every item (failed ones included, by name) and the summary over the others."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    scorer: Scorer
    failures: list[Item] = field(default_factory=list)

    @property
    def ok(self) -> list[dict[str, Any]]:
        """The rows of the items enhanced or resumed (what the summary is over), by name."""
        return [r for r in self.rows if scored(r)]


def scored(row: dict[str, Any]) -> bool:
    """An item that was enhanced now or resumed, not one that failed."""
    return row.get("status") in ("enhanced", "resumed")


def memory_item(name: str, noisy: torch.Tensor, sr: int, clean: torch.Tensor | None = None) -> Item:
    """An item held in memory: ``noisy [C, L]`` (or ``[L]``), ``clean [L]`` at the same rate."""
    noisy = noisy[None] if noisy.dim() == 1 else noisy
    return Item(
        src=None,
        rel=Path(name),
        frames=int(noisy.shape[-1]),
        sr=int(sr),
        channels=int(noisy.shape[0]),
        audio=noisy,
        clean=clean,
    )


# ------------------------------------------------------------------------------ scoring
def reference(item: Item) -> torch.Tensor | None:
    """The clean reference, mono at the item's rate (None when it has none)."""
    if item.clean is not None:
        return item.clean
    if item.ref is None:
        return None
    return load_audio(item.ref, target_sr=item.sr, mono=True)[0]


def noisy_audio(item: Item) -> torch.Tensor:
    return item.audio if item.audio is not None else load_audio(item.src, mono=False)[0]


class Scorer:
    """A run's metric states: one :class:`FileMetric` per metric for the enhanced signal (and,
    with ``score_noisy``, for the noisy input), on ``device`` so DDP can gather them."""

    def __init__(
        self, metrics: Sequence[registry.Metric], *, score_noisy: bool = True, device: Any = "cpu"
    ) -> None:
        self.metrics = tuple(metrics)
        roles = ("", "noisy_") if score_noisy else ("",)
        self.states = {role: [FileMetric(m).to(device) for m in self.metrics] for role in roles}

    def row(self, ref: torch.Tensor | None, noisy: torch.Tensor, enhanced: torch.Tensor, sr: int) -> dict:
        """Scores of the enhanced (and the noisy) signal, channel mean, cropped to the reference,
        as ``key`` (``noisy_key``); each metric that fails is NaN plus an ``error_<metric>`` entry."""
        if ref is not None:
            n = min(ref.shape[-1], enhanced.shape[-1])
            ref, noisy, enhanced = ref[:n], noisy[..., :n], enhanced[..., :n]
        target = None if ref is None else ref.numpy()
        row: dict[str, Any] = {}
        for prefix, states in self.states.items():
            signal = (enhanced if prefix == "" else noisy).mean(0).numpy()
            for state in states:
                if state.metric.needs_reference and target is None:
                    continue
                state.update(signal, target, sr)
                row.update({prefix + k: v for k, v in state.last.items() if k != "errors"})
                row.update({f"{prefix}error_{k}": v for k, v in state.last["errors"].items()})
        return row

    def means(self) -> dict[str, float]:
        """The enhanced signal's mean per key over every file scored, on every rank (under DDP
        a collective: each rank must call it)."""
        out: dict[str, float] = {}
        with warnings.catch_warnings():  # a rank with no file of its own still takes part
            warnings.filterwarnings("ignore", message=".*called before the ``update`` method")
            for state in self.states[""]:
                out.update({k: float(v) for k, v in state.compute().items()})
        return out


# ------------------------------------------------------------------------------ enhancing
def enhance_group(
    enhancer: Enhancer, items: list[Item], noisy: list[torch.Tensor], on_batch=None
) -> tuple[list[torch.Tensor], float]:
    """Enhance a batch of loaded files ``[C, L]`` at their own rates; returns the outputs (same
    rate, length, channels) and the enhancement wall time. ``on_batch``: see ``enhance_many``."""
    with M.Stopwatch(enhancer.device) as sw:
        outs = enhancer.enhance_many(noisy, sample_rates=[it.sr for it in items], on_batch=on_batch)
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


def fail(item: Item, err: Exception, failures: list[Item]) -> None:
    item.row.update(status="failed", error=f"{type(err).__name__}: {err}")
    if item not in failures:
        failures.append(item)
    log.error("%s: %s", item.src or item.rel, err)


def _load_and_enhance(enhancer: Enhancer, group: list[Item], failures: list[Item], on_batch=None):
    """Yield ``(item, noisy, enhanced, seconds)``; a file that fails to load is recorded and
    left out. An error in enhancing is no input's fault (out of memory, a bug): it propagates."""
    loaded = []
    for it in group:
        try:
            loaded.append((it, noisy_audio(it)))
        except FILE_ERRORS as err:
            fail(it, err, failures)
    if not loaded:
        return
    outs, sec = enhance_group(enhancer, [it for it, _ in loaded], [w for _, w in loaded], on_batch)
    total = sum(it.duration for it, _ in loaded)
    for (it, noisy), out in zip(loaded, outs):  # a batch's time, shared by duration
        yield it, noisy, out, sec * it.duration / total


# ------------------------------------------------------------------------------ the path
def enhance_and_score(
    enhancer: Enhancer,
    items: Sequence[Item],
    *,
    metrics: Sequence[registry.Metric],
    score: bool = True,
    score_noisy: bool = True,
    output: Output | None = None,
    resumed: Iterable[Item] = (),
    failed: Iterable[Item] = (),
    warm_up: bool = True,
    overlap: bool = False,
    on_item: Callable[[Item, torch.Tensor, torch.Tensor], None] | None = None,
    on_done: Callable[[Item], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    device: Any = "cpu",
) -> Measured:
    """Enhance ``items``, score them (see the module docstring) and summarise.

    ``failed``: items that failed before (their rows are kept and counted). ``overlap``: write,
    score and ``on_item`` run on a worker thread while the device enhances the next group.
    ``on_item(item, noisy, enhanced)`` after an item is scored (plots, media); ``on_done(item)``
    once per item, also a failed one (progress); ``on_batch(done, total)`` per network call of
    a file enhanced alone (a long file's pieces). ``device``: where the metric states live
    (the module's, so DDP can gather them)."""
    resumed, failures = list(resumed), list(failed)
    if resumed and output is None:
        raise ValueError("resumed items are read from an output folder: pass output")
    done_hook = (lambda job, it: on_done(it)) if on_done else None
    scorer = Scorer(metrics, score_noisy=score_noisy, device=device)

    def finish(it: Item, noisy: torch.Tensor, enhanced: torch.Tensor) -> None:
        it.row.update(duration_s=round(it.duration, 4), sample_rate=it.sr, channels=it.channels)
        if score:
            it.row.update(scorer.row(reference(it), noisy, enhanced, it.sr))
        if on_item is not None:
            on_item(it, noisy, enhanced)

    def ship(it: Item, noisy: torch.Tensor, enhanced: torch.Tensor, sec: float) -> tuple[float, float]:
        """Deliver and score one output; returns what the RTF counts: (enhancement s, audio s).
        A failed write stops the run; a bad reference fails this file only."""
        if output is not None:
            output.write(it, enhanced)
        try:
            if output is not None and score:  # score what was shipped
                enhanced = output.read(it)
            it.row.update(status="enhanced", rtf=M.rtf(sec, it.frames, it.sr))
            finish(it, noisy, enhanced)
            return sec, it.duration
        except FILE_ERRORS as err:
            fail(it, err, failures)
            return 0.0, 0.0

    for it in [*items, *resumed]:
        it.row.setdefault("file", it.rel.as_posix())
    if items and warm_up:  # so the RTF is steady-state (lazy init, allocator, kernel selection)
        enhancer.enhance(torch.zeros(1, enhancer.sample_rate // 4))
    with Background(enabled=overlap) as worker:
        for group in group_items(list(items), enhancer):
            shipped = set()
            long = on_batch if len(group) == 1 else None  # follow one long file, not a batch
            for it, noisy, enhanced, sec in _load_and_enhance(enhancer, group, failures, long):
                shipped.add(id(it))
                worker.submit(ship, it, noisy, enhanced, sec, then=done_hook)
            for it in group:
                if id(it) not in shipped and on_done:  # failed to load: no job to report
                    on_done(it)
        timings = worker.results()
    for it in resumed:
        try:
            noisy, enhanced = noisy_audio(it), output.read(it)
            it.row.update(status="resumed")
            finish(it, noisy, enhanced)
        except FILE_ERRORS as err:
            fail(it, err, failures)
        if on_done:
            on_done(it)
    seconds, duration = sum(t[0] for t in timings), sum(t[1] for t in timings)
    given = {id(it) for it in (*items, *resumed)}
    everything = [*items, *resumed, *(it for it in failures if id(it) not in given)]
    summary = summarize(
        [it.row for it in everything if scored(it.row)],
        len(failures),
        nfe=enhancer.steps,
        rtf=seconds / duration if duration else math.nan,
        keys=registry.keys(metrics),
    )
    rows = sorted((it.row for it in everything), key=lambda r: r["file"])
    return Measured(rows=rows, summary=summary, scorer=scorer, failures=failures)
