"""Structured-config schemas, registered with Hydra's ConfigStore.

Each group's YAML lists its schema first in its defaults, so Hydra merges the YAML into a typed
dataclass: a mistyped key (``mf.first_order_cof``) or a wrong type fails at start, naming the key.
The same dataclasses are what the pure functions take, so there is one definition of every key.
"""
from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from meanflowse.curriculum import CurriculumConfig
from meanflowse.objective import MeanFlowConfig
from meanflowse.path import PathConfig
from meanflowse.samplers import SamplerConfig
from meanflowse.stft import SpecConfig

SCHEMAS = {  # config key -> (group, schema name, dataclass)
    "path": ("path", "path_schema", PathConfig),
    "mf": ("mf_objective", "mf_schema", MeanFlowConfig),
    "curriculum": ("curriculum", "curriculum_schema", CurriculumConfig),
    "sampler": ("sampler", "sampler_schema", SamplerConfig),
}


def register_schemas() -> None:
    cs = ConfigStore.instance()
    for group, name, node in SCHEMAS.values():
        cs.store(group=group, name=name, node=node)


def to_dataclass(cfg: DictConfig, key: str) -> Any:
    """``cfg[key]`` as its frozen dataclass (validated again, so a hand-built config is checked too)."""
    cls = SCHEMAS[key][2]
    merged = OmegaConf.merge(OmegaConf.structured(cls), cfg[key])
    return cls(**OmegaConf.to_container(merged, resolve=True))


def spec_config(cfg: DictConfig) -> SpecConfig:
    return SpecConfig(**OmegaConf.to_container(cfg.data.spec, resolve=True))


register_schemas()
