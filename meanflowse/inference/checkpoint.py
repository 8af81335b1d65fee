"""Reading a train.py checkpoint for inference: checks in words, the stored config, the weights
(EMA by default). :func:`load_model` builds the Lightning-free :class:`InferenceModel`;
:func:`load_module` the LightningModule (for tools that want the training object; it imports
the training stack)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from meanflowse import checkpoint_contents as contents
from meanflowse.config import build_part
from meanflowse.inference.model import InferenceModel
from meanflowse.legacy_config import migrate_config


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def _first_line(err: Exception) -> str:
    """``Type: first line`` of an error whose own text may run to a page (torch, Hydra)."""
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why ``ckpt`` cannot be read as a whole, or None. A torch checkpoint is a zip archive whose
    members carry CRCs; reading every member finds a truncated or damaged file that the
    metadata alone would pass (and that ``torch.load`` reads silently)."""
    try:
        with zipfile.ZipFile(ckpt) as archive:
            bad = archive.testzip()
    # (a damaged central directory can also hold a member name that is not valid UTF-8)
    except (OSError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as err:
        return f"not a complete checkpoint ({_first_line(err)})"
    return f"damaged: member {bad} fails its CRC check" if bad is not None else None


def read_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass ckpt_path=<run>/checkpoints/last.ckpt")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes); pass the last.ckpt of a finished run")
    is_zip = zipfile.is_zipfile(path)
    if is_zip:  # torch.load does not check the members' CRCs: flipped bytes load
        problem = checkpoint_problem(path)
        if problem:
            raise CheckpointError(f"{path}: not a readable MeanFlowSE checkpoint: {problem}")
    try:  # Lightning checkpoints hold tensors and plain containers, so the safe loader suffices
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        what = "damaged" if is_zip else "not a torch checkpoint (no zip archive)"
        raise CheckpointError(
            f"{path}: not a readable MeanFlowSE checkpoint: {what} ({_first_line(err)})"
        ) from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not a train.py checkpoint")
    return ckpt


def _stored_config(path: Path, ckpt: dict) -> DictConfig:
    config = contents.config_of(ckpt)
    if config is None:
        raise CheckpointError(f"{path}: has no stored config; was it written by train.py?")
    return migrate_config(config)  # a checkpoint from before the layout move or the model graph


def _load_weights(path: Path, ckpt: dict, model: Any, *, use_ema: bool) -> None:
    """The checkpoint's weights into ``model`` (anything with ``load_state_dict`` and
    ``named_parameters`` under the LightningModule's names), then its EMA shadow."""
    weights = contents.weights_of(ckpt)
    if weights is None:
        raise CheckpointError(
            f"{path}: a stored config but no weights (state_dict); was it written by train.py?"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:  # missing, unexpected or misshapen tensors
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0])[:300]  # lines[0] is only a heading
        raise CheckpointError(
            f"{path}: weights that do not fit its stored config's model ({detail})"
        ) from None
    ema = contents.ema_state_of(ckpt)
    if use_ema and ema:
        params = dict(model.named_parameters())
        try:
            with torch.no_grad():
                for name, value in ema["shadow"].items():
                    params[name].copy_(value)
        except (KeyError, RuntimeError, TypeError) as err:
            raise CheckpointError(
                f"{path}: EMA weights that do not fit its model ({_first_line(err)})"
            ) from None
    model.eval()


def build_model(cfg: DictConfig) -> InferenceModel:
    """The inference model ``cfg`` describes (fresh weights), as the LightningModule builds it."""
    backbone = build_part(cfg, "backbone")
    objective = build_part(cfg, "mf")
    return InferenceModel(
        backbone=backbone,
        path=build_part(cfg, "path"),
        parametrization=objective.parametrization,
        sampler_cfg=build_part(cfg, "sampler"),
        trained_with_meanflow=objective.learns_average_velocity,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def _load(path: Path, build: Callable[[DictConfig], Any], *, use_ema: bool) -> tuple[Any, DictConfig]:
    ckpt = read_checkpoint(path)
    cfg = _stored_config(path, ckpt)
    try:
        model = build(cfg)
    except Exception as err:  # noqa: BLE001 - a stored config that builds no model, named
        raise CheckpointError(f"{path}: its stored config builds no model ({_first_line(err)})") from None
    _load_weights(path, ckpt, model, use_ema=use_ema)
    return model, cfg


def load_model(ckpt_path: str | Path, *, use_ema: bool = True) -> tuple[InferenceModel, DictConfig]:
    """The inference model of a checkpoint, with EMA weights by default; no Lightning import."""
    return _load(Path(ckpt_path), build_model, use_ema=use_ema)


def load_module(ckpt_path: str | Path, *, use_ema: bool = True) -> tuple[Any, DictConfig]:
    """The LightningModule of a checkpoint, with EMA weights by default (imports Lightning)."""
    from meanflowse.training.fit import build_module

    return _load(Path(ckpt_path), build_module, use_ema=use_ema)
