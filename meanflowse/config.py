"""Structured-config schemas, registered with Hydra's ConfigStore.

Each group's YAML lists its schema first in its defaults, so Hydra merges the YAML into a typed
dataclass: a mistyped key (``mf.first_order_cof``) or a wrong type fails at start, naming the key.
The same dataclasses are what the pure functions take, so there is one definition of every key.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from meanflowse.method.curriculum import CurriculumConfig
from meanflowse.method.objective import MeanFlowConfig
from meanflowse.method.path import PathConfig
from meanflowse.method.samplers import SamplerConfig
from meanflowse.method.stft import SpecConfig

SCHEMAS = {  # config key -> dataclass; stored as `schema/<key>` (out of sight of --help)
    "path": PathConfig,
    "mf": MeanFlowConfig,
    "curriculum": CurriculumConfig,
    "sampler": SamplerConfig,
}


class ConfigError(ValueError):
    """A config that cannot train: the message names the key and the value to pass instead, so
    the entry points print it as one line rather than a traceback."""


def register_schemas() -> None:
    cs = ConfigStore.instance()
    for key, node in SCHEMAS.items():
        cs.store(group="schema", name=key, node=node)


# -- --help: the user's groups only ---------------------------------------------------------------
# Hydra's own listing ($APP_CONFIG_GROUPS) shows every group but Hydra's, the `schema` group of
# the ConfigStore included, which holds internals no one chooses on the command line. The help
# template in configs/hydra/default.yaml calls this resolver instead.
HIDDEN_GROUPS = frozenset({"hydra", "schema"})


def help_groups() -> str:
    """``group: option, option`` for each config group a user chooses from, as Hydra lists them
    (the config folder and the ConfigStore), without :data:`HIDDEN_GROUPS`."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    lines = []
    for group in sorted(set(loader.list_groups("")) - HIDDEN_GROUPS):
        options = sorted(loader.get_group_options(group))
        if options:
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


if not OmegaConf.has_resolver("meanflowse.help_groups"):
    OmegaConf.register_new_resolver("meanflowse.help_groups", help_groups)


def to_dataclass(cfg: DictConfig, key: str) -> Any:
    """``cfg[key]`` as its dataclass (validated again, so a hand-built config is checked too)."""
    cls = SCHEMAS[key]
    values = OmegaConf.to_container(cfg[key], resolve=True)  # resolve in the full config first
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))


def spec_config(cfg: DictConfig) -> SpecConfig:
    return SpecConfig(**OmegaConf.to_container(cfg.data.spec, resolve=True))


register_schemas()
