"""Stored configs of older checkpoints, mapped to today's: :func:`migrate_config`.

A checkpoint stores the config it was trained with. Two changes made old ones stale:
- the package layout of December 2026 moved modules into subpackages, so stored ``_target_``
  strings (``meanflowse.validation.ValidationMetrics``, ``meanflowse.ema.EMA``, ...) name modules
  that are gone (:func:`migrate_targets`);
- the model graph ("House 5") gave the path, objective, curriculum and sampler nodes a
  ``_target_``; before it, ``mf`` was always the MeanFlow objective (CFM was ``weight_final=0``
  of it, which is what such a run trained with, so that is what it maps to).
Every reader of a stored config (eval's loader, resume's check) goes through
:func:`migrate_config`, so every checkpoint written before still evaluates and resumes. Today's
configs pass through unchanged, but for the defaults of keys they lack.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

MOVED_MODULES = {  # old module -> new module
    "meanflowse.stft": "meanflowse.method.stft",
    "meanflowse.path": "meanflowse.method.path",
    "meanflowse.jvp": "meanflowse.method.jvp",
    "meanflowse.objective": "meanflowse.method.objective",
    "meanflowse.curriculum": "meanflowse.method.curriculum",
    "meanflowse.samplers": "meanflowse.method.samplers",
    "meanflowse.parametrization": "meanflowse.method.parametrization",
    "meanflowse.lit_module": "meanflowse.training.lit_module",
    "meanflowse.training": "meanflowse.training.fit",
    "meanflowse.checkpointing": "meanflowse.training.checkpointing",
    "meanflowse.ema": "meanflowse.training.ema",
    "meanflowse.validation": "meanflowse.training.validation",
    "meanflowse.enhance": "meanflowse.inference.enhancer",
    "meanflowse.evaluation": "meanflowse.inference.evaluation",
    "meanflowse.eval_inputs": "meanflowse.inference.inputs",
    "meanflowse.eval_reports": "meanflowse.inference.reports",
    "meanflowse.provenance": "meanflowse.inference.provenance",
    "meanflowse.plots": "meanflowse.inference.plots",
    "meanflowse.background": "meanflowse.inference.background",
    "meanflowse.metrics": "meanflowse.metrics.scores",
    "meanflowse.metric_base": "meanflowse.metrics.base",
    "meanflowse.dnsmos": "meanflowse.metrics.dnsmos",
    "meanflowse.speaker": "meanflowse.metrics.speaker",
    "meanflowse.sweep_gather": "meanflowse.sweep.gather",
    "meanflowse.sweep": "meanflowse.sweep.job",
}
MOVED_NAMES = {  # old dotted name -> new, where a name left its module
    "meanflowse.sweep.StepTimer": "meanflowse.sweep.step_timer.StepTimer",
    "meanflowse.sweep.GatherCallback": "meanflowse.sweep.gather.GatherCallback",
    "meanflowse.evaluation.write_atomic": "meanflowse.inference.audio_io.write_atomic",
    "meanflowse.evaluation.to_rate": "meanflowse.inference.audio_io.to_rate",
    "meanflowse.evaluation.fit_length": "meanflowse.inference.audio_io.fit_length",
    "meanflowse.data.folder.cache_path": "meanflowse.data.folder_cache.cache_path",
    "meanflowse.data.folder.prepare_split": "meanflowse.data.folder_cache.prepare_split",
    "meanflowse.data.folder.prepare_dataset": "meanflowse.data.folder_cache.prepare_dataset",
}


def new_path(target: str) -> str:
    """Today's path of a dotted name (``module.attr``) written before the move."""
    if target in MOVED_NAMES:
        return MOVED_NAMES[target]
    module, _, name = target.rpartition(".")
    return f"{MOVED_MODULES[module]}.{name}" if module in MOVED_MODULES else target


def migrate_targets(config: Any) -> Any:
    """A copy of a stored config (plain containers or OmegaConf) with every ``_target_`` at
    today's path; everything else is left as it is."""
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.create(migrate_targets(OmegaConf.to_container(config, resolve=False)))
    if isinstance(config, dict):
        return {
            k: new_path(v) if k == "_target_" and isinstance(v, str) else migrate_targets(v)
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [migrate_targets(v) for v in config]
    return config


# the class every config before the model graph meant at these keys
GRAPH_TARGETS = {
    "path": "meanflowse.method.path.PathConfig",
    "mf": "meanflowse.method.objectives.MeanFlowObjective",
    "curriculum": "meanflowse.method.curriculum.CurriculumConfig",
    "sampler": "meanflowse.method.samplers.SamplerConfig",
}


def migrate_config(config: Any) -> DictConfig:
    """A stored config as today's graph: targets at today's paths, a ``_target_`` on each model
    part that lacks one, and the class's default for each key a dataclass part lacks (a key
    added after the run; its default is what the run trained with)."""
    from hydra.utils import get_class

    from meanflowse.config import node_schema

    plain = migrate_targets(OmegaConf.to_container(config) if OmegaConf.is_config(config) else config)
    for key, target in GRAPH_TARGETS.items():
        node = plain.get(key)
        if isinstance(node, dict):
            node.setdefault("_target_", target)
            try:
                schema = OmegaConf.structured(node_schema(get_class(node["_target_"])))
                plain[key] = OmegaConf.to_container(OmegaConf.merge(schema, node))
            except Exception:  # noqa: BLE001 - left as stored: building it names what is wrong
                pass
    return OmegaConf.create(plain)
