"""Which run made each enhanced file, so a resume can prove an output is this run's.

``<output>/eval_provenance.jsonl`` gets one JSON line per written output, appended and flushed
just before the output is renamed into place::

    {"file": "sub/a.wav", "settings": {...run_settings...},
     "source": {"size": ..., "mtime_ns": ...}, "reference": {...} | null,
     "output": {"size": ..., "mtime_ns": ...}}

and an ``overwrite=true`` run first appends ``{"claim": {...its settings...}}``: from then on
the folder's other files are that run's to replace, so resuming it after an interruption
redoes them instead of refusing. The latest line per file counts; a line torn by a killed run
does not parse and is ignored. See :func:`verdict` for what a run does with each output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from meanflowse.atomic import write_error
from meanflowse.inference.inputs import EvalError, Item

PROVENANCE_FILE = "eval_provenance.jsonl"


def identity(path: Path | None) -> dict[str, int] | None:
    """Size and modification time: what tells a file apart from a replaced or edited one
    (None for no file; a missing reference is reported when it is loaded)."""
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_settings(cfg: DictConfig, enhancer) -> dict[str, Any]:
    """What decides the enhanced audio (not batch size, layout or device: batching is exact, the
    others change round-off only), as it reads back from JSON so records compare equal."""
    ckpt = Path(str(cfg.ckpt_path)).resolve()
    st = ckpt.stat()
    settings = {
        "checkpoint": str(ckpt),
        "checkpoint_size": st.st_size,
        "checkpoint_mtime_ns": st.st_mtime_ns,
        "use_ema": bool(cfg.use_ema),
        "sampler": enhancer.sampler_name,
        "nfe": enhancer.steps,
        "t_end": enhancer.t_end,
        "precision": enhancer.precision,
        "seed": int(cfg.seed),
        "chunk_s": float(cfg.chunk_s),
        "overlap_s": float(cfg.overlap_s),
    }
    if enhancer.sampler_params:  # only a sampler with parameters adds them (older records compare)
        settings["sampler_params"] = enhancer.sampler_params
    return json.loads(json.dumps(settings))


@dataclass
class History:
    """What an output folder's provenance file says."""

    records: dict[str, dict] = field(default_factory=dict)  # latest record per output file
    claimed_by: dict | None = None  # settings of the last overwrite=true run started here


def read_history(out_dir: Path) -> History:
    history = History()
    try:
        text = (out_dir / PROVENANCE_FILE).read_text()
    except FileNotFoundError:
        return history
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # torn by a killed run: that output has no record and is handled as such
        if isinstance(rec, dict) and isinstance(rec.get("claim"), dict):
            history.claimed_by = rec["claim"]
        elif isinstance(rec, dict) and isinstance(rec.get("file"), str):
            history.records[rec["file"]] = rec
    return history


def verdict(item: Item, dst: Path, settings: dict, history: History) -> str:
    """What to do with ``item``'s output ``dst``: ``new`` (none yet), ``resume`` (this run made
    it from this source and it is unchanged since), ``redo`` (this run's, but the source, the
    reference or the output changed since; or an overwrite=true run with these settings claimed
    the folder) or ``foreign`` (no record, or other settings: not this run's to use or replace)."""
    if not dst.exists():
        return "new"
    rec = history.records.get(item.rel.as_posix())
    if rec is not None and rec.get("settings") == settings:
        same = (rec.get("source"), rec.get("reference"), rec.get("output")) == (
            item.source_id,
            item.ref_id,
            identity(dst),
        )
        return "resume" if same else "redo"
    return "redo" if history.claimed_by == settings else "foreign"


def foreign_error(out_dir: Path, foreign: list[Item], settings: dict, history: History) -> EvalError:
    """The refusal for outputs this run did not make: how many, one example, which settings differ."""
    differ: set[str] = set()
    unrecorded = 0
    for it in foreign:
        rec = history.records.get(it.rel.as_posix())
        if rec is None or not isinstance(rec.get("settings"), dict):
            unrecorded += 1
        else:
            old = rec["settings"]
            differ |= {k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k)}
    why = []
    if len(foreign) > unrecorded:
        why.append(
            f"{len(foreign) - unrecorded} made with other settings ({', '.join(sorted(differ))} "
            f"differ; see {out_dir / PROVENANCE_FILE})"
        )
    if unrecorded:
        why.append(f"{unrecorded} with no record in {PROVENANCE_FILE} (another run's or tool's)")
    n = len(foreign)
    return EvalError(
        f"output={out_dir} holds {n} file{'s' if n > 1 else ''} this run did not make "
        f"(e.g. {foreign[0].rel.as_posix()}): {'; '.join(why)}. Pass overwrite=true "
        "to redo them, or give another output="
    )


class ProvenanceLog:
    """Appends records to ``out_dir/eval_provenance.jsonl``, flushed one by one, so a killed run
    loses at most the line it was writing. Used from one thread at a time (eval's writer)."""

    def __init__(self, out_dir: Path, settings: dict) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / PROVENANCE_FILE
        torn = path.is_file() and path.stat().st_size > 0 and not _ends_with_newline(path)
        self.settings = settings
        self.path = path
        self.fh = open(path, "a", encoding="utf-8")
        if torn:  # end the torn line, or the next record would be glued onto it and lost too
            self._append(None)

    def claim(self) -> None:
        """An overwrite=true run: the folder's files not made by these settings will be redone."""
        self._append({"claim": self.settings})

    def record(self, item: Item, written: Path) -> None:
        """``item``'s output, as written at ``written`` (the temp file, before its rename:
        renaming keeps size and modification time)."""
        self._append(
            {
                "file": item.rel.as_posix(),
                "settings": self.settings,
                "source": item.source_id,
                "reference": item.ref_id,
                "output": identity(written),
            }
        )

    def _append(self, record: dict | None) -> None:
        try:
            self.fh.write(("" if record is None else json.dumps(record)) + "\n")
            self.fh.flush()
        except OSError as err:  # a full disk: say which file
            raise write_error(self.path, err) from None

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> ProvenanceLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"
