"""eval.py's inputs: argument checks, the files to enhance (``input=`` or ``split=``) and the
default output folder. Nothing here loads the model or writes a file."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from meanflowse.config import EVAL_NUMBERS, ConfigError, check_numbers
from meanflowse.data.audio import AudioError, audio_info
from meanflowse.data.folder import AUDIO_EXTS, SPLITS, UNSUPPORTED_EXTS, DatasetError
from meanflowse.runtime import auto_flag


class EvalError(ValueError):
    """A bad eval.py argument; the message names the key and what to do."""


@dataclass(eq=False)  # an item is itself: rows, failures and tensors are compared by identity
class Item:
    """One file to enhance: ``src`` -> ``output/rel``, measured against ``ref`` when given.

    An item held in memory (validation, the study) has ``audio`` ``[C, L]`` and ``clean``
    ``[L]`` instead of paths: :func:`meanflowse.inference.measured.memory_item`."""

    src: Path | None
    rel: Path
    ref: Path | None = None
    row: dict[str, Any] = field(default_factory=dict)
    frames: int = 0
    sr: int = 0
    channels: int = 0
    format: str = "WAV"
    subtype: str | None = None
    # size and mtime of src and ref when they were read (meanflowse.inference.provenance records them)
    source_id: dict[str, int] | None = None
    ref_id: dict[str, int] | None = None
    audio: Any = None  # torch.Tensor [C, L] at ``sr``, for an item in memory
    clean: Any = None  # torch.Tensor [L] at ``sr``

    @property
    def duration(self) -> float:
        return self.frames / self.sr if self.sr else 0.0


# ------------------------------------------------------------------------------ arguments
def check_args(cfg: DictConfig) -> None:
    """Argument combinations, checked before the checkpoint is loaded."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise EvalError(
            "no checkpoint given: pass ckpt_path=<run>/checkpoints/last.ckpt (a "
            "train.py run); `make demo` leaves its model at "
            "outputs/demo/checkpoints/last.ckpt"
        )
    has_input, split = cfg.get("input") is not None, cfg.get("split")
    base_dir = (cfg.get("data") or {}).get("base_dir")
    if has_input == (split is not None):
        raise EvalError(
            "give exactly one of input=PATH (a file or folder) and split=NAME "
            f"(a split of the checkpoint's dataset: {', '.join(SPLITS)})"
        )
    if split is not None and split not in SPLITS:
        raise EvalError(f"split={split}: use one of {', '.join(SPLITS)}")
    if split is not None and cfg.get("reference"):
        raise EvalError("reference= goes with input=; a split's references are its clean/ folder")
    if base_dir and split is None:
        raise EvalError("data.base_dir= goes with split=NAME; for a folder pass input=DIR")
    try:  # each number in its range (sampler.nfe=1.5, chunk_s=0, batch_size=-1 ...)
        check_numbers(cfg, EVAL_NUMBERS)
    except ConfigError as err:
        raise EvalError(str(err)) from None
    if cfg.get("chunk_s") is not None and float(cfg.overlap_s) >= float(cfg.chunk_s):
        raise EvalError(f"overlap_s={cfg.overlap_s} must be shorter than chunk_s={cfg.chunk_s}")
    for key in ("overlap_io", "channels_last"):
        try:
            auto_flag(cfg.get(key), key, auto=False)
        except ValueError as err:
            raise EvalError(str(err)) from None


# ------------------------------------------------------------------------------ output folder
def path_tag(path: Path) -> str:
    """8 hex digits naming the resolved ``path``: two inputs with the same folder name (``/a/noisy``,
    ``/b/noisy``) get different default outputs, and the same input always gets the same one."""
    return hashlib.sha1(str(Path(path).expanduser().resolve()).encode()).hexdigest()[:8]


def output_dir(cfg: DictConfig, default_name: str) -> Path:
    """``output=`` when given, else ``<run>/enhanced/<default_name>`` (``<run>``: the checkpoint's)."""
    if cfg.get("output"):
        return Path(str(cfg.output)).expanduser()
    return Path(str(cfg.ckpt_path)).resolve().parent.parent / "enhanced" / default_name


def _check_output(out: Path, protected: list[Path]) -> None:
    if out.exists() and not out.is_dir():
        raise EvalError(f"output={out} is a file; give a folder")
    for p in protected:
        if out.resolve() == p.resolve():
            raise EvalError(
                f"output={out} is the input folder ({p}): choose another so no input is overwritten"
            )


# ------------------------------------------------------------------------------ files
def resolved(path: Path) -> Path:
    """``path.resolve()``, or its absolute form where a symbolic link loops (resolve raises
    there): such a file is reported as a bad input when it is read, and never stops the run."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return path.absolute()


def _scan(folder: Path, skip: Path | None) -> list[Path]:
    """Audio files below ``folder`` (hidden ones and the ``skip`` folder left out), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (skip is None or resolved(here / d) != skip)
        )
        found += [
            here / f
            for f in sorted(filenames)
            if not f.startswith(".") and Path(f).suffix.lower() in AUDIO_EXTS | UNSUPPORTED_EXTS
        ]
    return found


def _reference(ref_dir: Path, rel: Path) -> Path | None:
    """The clean file for ``rel``: the same relative name, with any audio extension."""
    candidates = (ref_dir / rel, *sorted((ref_dir / rel.parent).glob(rel.stem + ".*")))
    return next((c for c in candidates if c.is_file() and c.suffix.lower() in AUDIO_EXTS), None)


def input_items(cfg: DictConfig) -> tuple[list[Item], Path]:
    """``(items, output_dir)`` for ``input=PATH``; the output may be neither the input folder
    nor the references' folder. Default output: ``<run>/enhanced/<name>-<path_tag(PATH)>``."""
    src = Path(str(cfg.input)).expanduser()
    if not src.exists():
        raise EvalError(f"input={src}: no such file or folder")
    ref_dir = Path(str(cfg.reference)).expanduser() if cfg.get("reference") else None
    ref_file = None
    if ref_dir is not None and ref_dir.is_file():
        if not src.is_file():
            raise EvalError(
                f"reference={ref_dir} is a file: it goes with a single input file; for input={src} "
                "pass a folder of clean files with the same relative names"
            )
        ref_file, ref_dir = ref_dir, None  # one clean file for the one noisy file
    elif ref_dir is not None and not ref_dir.is_dir():
        raise EvalError(f"reference={ref_dir}: no such file or folder")
    name = src.stem if src.is_file() else src.resolve().name
    out = output_dir(cfg, f"{name}-{path_tag(src)}")
    if src.is_dir() and (src / "noisy").is_dir():  # a split folder
        ref_dir = ref_dir or ((src / "clean") if (src / "clean").is_dir() else None)
        src = src / "noisy"
    root = src.parent if src.is_file() else src
    _check_output(out, [root] + ([ref_dir] if ref_dir is not None else []))
    if ref_file is not None:
        return [Item(src=src, rel=src.relative_to(root), ref=ref_file)], out
    files = [src] if src.is_file() else _scan(src, skip=out.resolve())
    if not files:
        raise EvalError(f"input={src}: no audio files ({', '.join(sorted(AUDIO_EXTS))}) in this folder")
    items = []
    for f in files:
        rel = f.relative_to(root)
        items.append(Item(src=f, rel=rel, ref=_reference(ref_dir, rel) if ref_dir is not None else None))
    return items, out


def split_items(cfg: DictConfig, train_cfg: DictConfig) -> tuple[list[Item], Path]:
    """Items of ``split`` of the checkpoint's dataset (see meanflowse.inference.evaluation's docstring).
    Default output: ``<run>/enhanced/<split>``, or ``<split>-<path_tag(base_dir)>`` when
    ``data.base_dir=`` names another dataset than the checkpoint's."""
    from hydra.utils import instantiate

    data_cfg = train_cfg.get("data")
    if data_cfg is None or "_target_" not in data_cfg:
        raise EvalError(f"{cfg.ckpt_path}: the checkpoint stores no data config; pass input=DIR")
    given, own = (cfg.get("data") or {}).get("base_dir"), data_cfg.get("base_dir")
    base_dir = given or own
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
    items = [
        Item(src=p.noisy_source, ref=p.clean_source, rel=Path(p.name + p.noisy_source.suffix)) for p in pairs
    ]
    other = given and not (own and path_tag(Path(str(given))) == path_tag(Path(str(own))))
    out = output_dir(cfg, f"{cfg.split}-{path_tag(Path(str(given)))}" if other else str(cfg.split))
    _check_output(out, [Path(base_dir) / cfg.split / role for role in ("noisy", "clean")])
    return items, out


def read_info(item: Item) -> None:
    """Fill in ``item``'s rate, length, channels and format; :class:`AudioError` if unusable."""
    if item.src.suffix.lower() in UNSUPPORTED_EXTS:
        raise AudioError(
            f"{item.src}: {item.src.suffix} cannot be read by libsndfile; convert it "
            "to WAV or FLAC (e.g. `ffmpeg -i in.m4a out.wav`)"
        )
    info = audio_info(item.src)
    item.frames, item.sr, item.channels = int(info.frames), int(info.samplerate), int(info.channels)
    item.format, item.subtype = info.format, info.subtype
