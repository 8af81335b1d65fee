"""What a train.py checkpoint holds, where, who writes it and who reads it: the one place that
names the keys. Readers go through the functions here, never ``ckpt["callbacks"]["EMA"]``.

Each part: where it sits in the checkpoint dict; who writes it; who reads it.

- **config**: ``hyper_parameters["config"]``, the composed config, resolved; written by
  ``MeanFlowSEModule.save_hyperparameters``; read by eval.py and ``load_model`` (the model to
  build, through ``legacy_config.migrate_config``) and by resume's same-model check.
- **weights**: ``state_dict`` (``backbone.*``); Lightning; read by ``load_model`` and by Lightning
  on resume.
- **EMA weights**: ``callbacks["EMA"]`` (``shadow``, ``num_updates``, ``decay``);
  ``training.ema.EMA.state_dict``; read by ``load_model`` (``shadow``, by default) and by
  ``EMA.load_state_dict`` on resume.
- **validation state**: ``callbacks["ValidationMetrics"]`` (``last``: the values logged again
  between measurements); ``ValidationMetrics.state_dict``; read by its ``load_state_dict``.
- **loader position**: ``loops["fit_loop"]["state_dict"]["combined_loader"]``; Lightning, from
  ``ResumableLoader.state_dict``; read by Lightning on resume, into ``load_state_dict``.
- **schedule position**: ``global_step``, ``epoch``, ``lr_schedulers``, ``optimizer_states``;
  Lightning; read by Lightning on resume (the curriculum's progress is step / total steps).

Lightning names a callback's entry by its ``state_key``; :data:`EMA_KEY` and
:data:`VALIDATION_KEY` are those keys, so renaming a callback class cannot orphan the entries
of checkpoints already written.
"""

from __future__ import annotations

from typing import Any

EMA_KEY = "EMA"  # training.ema.EMA.state_key
VALIDATION_KEY = "ValidationMetrics"  # training.validation.ValidationMetrics.state_key
LOADER_POSITION = ("loops", "fit_loop", "state_dict", "combined_loader")
SCHEDULE_KEYS = ("global_step", "epoch", "lr_schedulers", "optimizer_states")


def _at(ckpt: dict, *keys: str) -> Any:
    node: Any = ckpt
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def config_of(ckpt: dict) -> Any:
    """The composed config the run trained with, as stored (None if absent)."""
    return _at(ckpt, "hyper_parameters", "config")


def weights_of(ckpt: dict) -> dict | None:
    """The training weights under the LightningModule's names (None if absent)."""
    weights = ckpt.get("state_dict")
    return weights if isinstance(weights, dict) else None


def ema_state_of(ckpt: dict) -> dict | None:
    """The EMA callback's state (``shadow``: the averaged weights by parameter name)."""
    return _at(ckpt, "callbacks", EMA_KEY)


def validation_state_of(ckpt: dict) -> dict | None:
    return _at(ckpt, "callbacks", VALIDATION_KEY)


def loader_position_of(ckpt: dict) -> Any:
    return _at(ckpt, *LOADER_POSITION)


def present(ckpt: dict) -> dict[str, bool]:
    """Which parts a checkpoint holds (an inference-only file has config and weights alone)."""
    return {
        "config": config_of(ckpt) is not None,
        "weights": weights_of(ckpt) is not None,
        "ema": ema_state_of(ckpt) is not None,
        "validation": validation_state_of(ckpt) is not None,
        "loader_position": loader_position_of(ckpt) is not None,
        "schedule": all(key in ckpt for key in SCHEDULE_KEYS),
    }


def inference_checkpoint(config: dict, weights: dict) -> dict:
    """A checkpoint with the two parts evaluation needs (config and weights), for tools that make
    one without training (benchmarks, tests); it evaluates but cannot resume."""
    return {"state_dict": weights, "hyper_parameters": {"config": config}}
