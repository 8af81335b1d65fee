"""Where a run resumes from, and checkpoint files that are never half-written."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from meanflowse.atomic import atomic_path
from meanflowse.checkpoint_contents import config_of
from meanflowse.config import dotted_leaves, target_of
from meanflowse.inference.checkpoint import checkpoint_problem
from meanflowse.legacy_config import migrate_config
from meanflowse.method.objective import ObjectiveConfig
from meanflowse.method.objectives import CFMObjective

LAST = "last.ckpt"
log = logging.getLogger(__name__)


class ResumeError(ValueError):
    """A ``ckpt_path`` that names nothing to resume from, or a run trained with another model or
    objective; the message says what to pass."""


def _last_in(folder: Path) -> Path | None:
    for candidate in (folder / "checkpoints" / LAST, folder / LAST):
        if candidate.is_file():
            return candidate
    return None


def last_checkpoints(run_dir: str | os.PathLike | None) -> list[Path]:
    """The ``last.ckpt`` of this run's folder and of its siblings (the other runs of the task),
    newest first; a ``ResumeError`` when there is none."""
    if run_dir is None:
        raise ResumeError(
            "ckpt_path=last needs Hydra's run folder; pass a run folder or a checkpoint file instead"
        )
    run = Path(run_dir)
    folders = [run, *(d for d in sorted(run.parent.glob("*")) if d.is_dir() and d != run)]
    found = [p for p in map(_last_in, folders) if p is not None]
    if not found:
        raise ResumeError(
            f"ckpt_path=last: no {LAST} in {run} or beside it in {run.parent}; "
            "pass ckpt_path=<run folder> or a checkpoint file"
        )
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def resolve_ckpt_path(
    value: str | os.PathLike | None, *, run_dir: str | os.PathLike | None = None
) -> Path | None:
    """The checkpoint file ``ckpt_path`` means, whatever config it was trained with.

    ``None`` -> no resume. ``last`` -> the newest ``checkpoints/last.ckpt`` among this run's
    folder and its siblings (the other runs of the task). A folder -> its
    ``checkpoints/last.ckpt`` (or ``last.ckpt``). A file -> itself.
    """
    if value is None or str(value) == "":
        return None
    if str(value) == "last":
        return last_checkpoints(run_dir)[0]
    path = Path(str(value)).expanduser()
    if path.is_dir():
        last = _last_in(path)
        if last is None:
            raise ResumeError(f"ckpt_path={path}: a folder without checkpoints/{LAST}")
        return last
    if not path.is_file():
        raise ResumeError(f"ckpt_path={path}: no such checkpoint file or run folder")
    return path


def run_dir_of(ckpt: Path) -> Path | None:
    """The run folder a checkpoint lives in (``<run>/checkpoints/x.ckpt``), else None."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None


# -- which run a new config may resume ---------------------------------------------------------
# The keys that say what a checkpoint's weights ARE: the network (backbone), the probability
# path (path), the training objective (mf) and the spectrogram front-end the network reads
# (data.sample_rate, data.spec). Resuming with any of them changed would train another model on
# in the old run's folder, over its checkpoints. Left out, so a resume may change them: the
# schedule (trainer, curriculum, optim: e.g. more steps), the data source and crops, the
# sampler (an inference choice), and the mf keys below, which change how the objective is
# computed, not what it is (nan_policy=skip is what one sets to get past a NaN stop).
RESUME_KEYS = ("backbone", "path", "mf", "data.sample_rate", "data.spec")
RESUME_FREE_KEYS = frozenset(
    {"mf.jvp_impl", "mf.jvp_eps", "mf.jvp_chunk", "mf.jvp_reuse_primal", "mf.nan_policy"}
)
MISSING = "(absent)"


def _select(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]`` for a dotted key as plain values (a DictConfig is resolved first)."""
    if isinstance(config, DictConfig):
        node = OmegaConf.select(config, key, default=MISSING)
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    node: Any = config
    for part in key.split("."):
        node = node.get(part, MISSING) if isinstance(node, Mapping) else MISSING
    return node


def _canonical_objective(mf: Any) -> Any:
    """``mf`` of an objective whose span weight ``weight_final`` is 0 as CFM's keys: it never
    draws ``r < t``, so it trains the flow-matching term alone, which is CFM. Runs from before
    the CFM class (``mf_objective=cfm`` was MeanFlow at weight 0) resume under today's
    ``mf_objective=cfm``, and the other way round."""
    if not isinstance(mf, Mapping) or mf.get("weight_final", None) != 0:
        return mf
    shared = {f.name for f in dataclasses.fields(ObjectiveConfig)}
    return {"_target_": target_of(CFMObjective), **{k: v for k, v in mf.items() if k in shared}}


def _model_node(config: Mapping[str, Any], key: str) -> Any:
    node = _select(config, key)
    return _canonical_objective(node) if key == "mf" else node


def model_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`RESUME_KEYS` leaves of a config, e.g. ``{"mf.first_order_coef": 0.5, ...}``."""
    leaves = {k: v for key in RESUME_KEYS for k, v in dotted_leaves(_model_node(config, key), key).items()}
    return {k: v for k, v in leaves.items() if k not in RESUME_FREE_KEYS}


def config_differences(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: <stored> in the run, <new> now"`` for every model key on which the configs differ."""
    old, cur = model_keys(stored), model_keys(new)
    return [
        f"{k}: {old.get(k, MISSING)} in the run, {cur.get(k, MISSING)} now"
        for k in sorted(old.keys() | cur.keys())
        if old.get(k, MISSING) != cur.get(k, MISSING)
    ]


def stored_config(ckpt: Path, *, this_run: str | os.PathLike | None = None) -> Any:
    """The config a checkpoint was trained with: the one train.py stores in it, else its run's
    ``.hydra/config.yaml`` (not for this run's own folder: Hydra has already written the new
    config there). None when neither is readable."""
    try:  # mmap: only the pickled metadata is read, not the weights
        data = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any unreadable file is "no stored config" here
        data = None
    config = config_of(data) if isinstance(data, dict) else None
    if config is not None:
        return migrate_config(config)
    run = run_dir_of(ckpt)
    saved = run / ".hydra" / "config.yaml" if run is not None else None
    if saved is not None and saved.is_file() and (this_run is None or run != Path(this_run)):
        return migrate_config(OmegaConf.load(saved))
    return None


def _mismatch(ckpt: Path, config: Mapping[str, Any], this_run: str | os.PathLike | None) -> list[str]:
    stored = stored_config(ckpt, this_run=this_run)
    if stored is None:
        return ["no stored config (neither in the checkpoint nor in .hydra/config.yaml)"]
    return config_differences(stored, config)


def _run_name(ckpt: Path) -> str:
    return str(run_dir_of(ckpt) or ckpt)


def resume_checkpoint(
    value: str | os.PathLike | None,
    *,
    config: Mapping[str, Any],
    run_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> tuple[Path | None, list[str]]:
    """The checkpoint ``ckpt_path`` resumes, and the model keys it differs in from ``config``.

    Only a run trained with the same :data:`RESUME_KEYS` is resumed: ``last`` takes the newest
    such run among this run's folder and its siblings; a named folder or file that differs is
    refused. ``force`` (``resume_force=true``) resumes anyway: ``last`` then takes the newest
    run, and the differences are returned for the caller to report.
    """
    if str(value) != "last":
        ckpt = resolve_ckpt_path(value, run_dir=run_dir)
        if ckpt is None:
            return None, []
        problem = checkpoint_problem(ckpt)
        if problem:
            raise ResumeError(f"ckpt_path={value}: {ckpt} is {problem}; pass another checkpoint")
        diffs = _mismatch(ckpt, config, run_dir)
        if diffs and not force:
            raise ResumeError(
                f"ckpt_path={value}: {_run_name(ckpt)} was trained with another model or "
                f"objective ({'; '.join(diffs)}). Resuming would train it on with this config, "
                "over its checkpoints; start a new run (no ckpt_path), or set resume_force=true "
                "to resume it anyway"
            )
        return ckpt, diffs
    mismatched, readable = [], []  # every candidate not resumed; those of them that are whole
    for ckpt in last_checkpoints(run_dir):  # newest first: the newest matching run wins
        diffs = _mismatch(ckpt, config, run_dir)  # the metadata only (mmap): cheap
        problem = None if diffs and not force else checkpoint_problem(ckpt)  # reads it all
        if problem:  # reported and passed over, never resumed
            log.warning("ckpt_path=last: skipping %s: %s", ckpt, problem)
            mismatched.append((ckpt, [problem]))
            continue
        if not diffs:
            return ckpt, []
        mismatched.append((ckpt, diffs))
        readable.append((ckpt, diffs))
    if force and readable:  # none matches: the newest readable run, whatever it was trained with
        return readable[0]
    reasons = [f"  {_run_name(ckpt)}: {'; '.join(diffs)}" for ckpt, diffs in mismatched]
    raise ResumeError(
        f"ckpt_path=last: no run beside {run_dir} was trained with this model and objective "
        f"(keys compared: {', '.join(RESUME_KEYS)}); the runs considered, newest first:\n"
        + "\n".join(reasons)
        + "\nStart a new run (no ckpt_path), pass ckpt_path=<run folder> "
        "of the run to continue, or set resume_force=true to resume the newest one anyway"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint through :func:`meanflowse.atomic.atomic_path` with ``fsync``, so a
    run killed (or a node reset) while saving leaves the previous ``last.ckpt`` intact."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        if "://" in str(path):  # a remote store (s3://...): no rename semantics to rely on
            return super().save_checkpoint(checkpoint, path)
        # .tmp: ModelCheckpoint's scans for *.ckpt never see a temp file left by a kill
        with atomic_path(path, suffix=".tmp", fsync=True) as tmp:
            torch.save(checkpoint, tmp)


class FiniteModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that never ranks a non-finite value.

    Validation logs NaN for a metric it could not measure yet (a placeholder number such as -1
    would be ranked as a real score and could be kept as "best"); a NaN here saves nothing, so
    the best checkpoint is always one whose metric was measured.
    """

    def check_monitor_top_k(self, trainer: Any, current: torch.Tensor | None = None) -> bool:
        if current is not None and not bool(torch.isfinite(torch.as_tensor(current)).all()):
            return False
        return super().check_monitor_top_k(trainer, current)


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is always written at the end of training.

    Lightning 2.6's ``on_train_end`` writes ``last.ckpt`` only if the callback never wrote one
    during the run. So a run that saved at step 1000 (``every_n_train_steps``) and validated at
    step 1440 kept the step-1440 weights in ``last.ckpt`` when it ended at step 1800, and
    evaluation scored a model 360 steps short (experiments/real_voices R36). Here the end of
    training always writes it, unless this callback already did at that step.
    """

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
