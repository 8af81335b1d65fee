"""Structured-config schemas, registered with Hydra's ConfigStore, and the model's parts.

The model config is a graph of ``_target_`` nodes (:data:`MODEL_PARTS`): the backbone, the path,
the objective (at ``mf``), the curriculum and the sampler. Each dataclass part's YAML lists its
schema first in its defaults, so Hydra merges the YAML into a typed dataclass that carries the
``_target_``: a mistyped key (``mf.first_order_cof``) or a wrong type fails at start, naming the
key. The same dataclasses are what the pure functions take, so there is one definition of every
key; :func:`build_part` builds a part from its node (a stored config too, defaults filled in).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from meanflowse.bounds import SNR_JITTER, Bound
from meanflowse.method.curriculum import CurriculumConfig
from meanflowse.method.objectives import OBJECTIVES
from meanflowse.method.path import PathConfig
from meanflowse.method.samplers import SamplerConfig
from meanflowse.method.stft import SpecConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # the YAML groups, beside the package

# The model's graph: the LightningModule's argument -> the config key of its `_target_` node, in
# the order they are built (the backbone first: its weights are the seeded random draw).
MODEL_PARTS = {
    "backbone": "backbone",
    "path": "path",
    "objective": "mf",
    "curriculum": "curriculum",
    "sampler": "sampler",
}

FIXED_SCHEMAS = {"path": PathConfig, "curriculum": CurriculumConfig, "sampler": SamplerConfig}


def schemas() -> dict[str, type]:
    """Schema name -> dataclass, stored as ``schema/<name>`` (out of sight of --help): the fixed
    parts, and ``objective/<name>`` for each entry of :data:`OBJECTIVES` as it is now."""
    return {**FIXED_SCHEMAS, **{f"objective/{name}": cls for name, cls in OBJECTIVES.items()}}


class ConfigError(ValueError):
    """A config that cannot train: the message names the key and the value to pass instead, so
    the entry points print it as one line rather than a traceback."""


def target_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def dotted_leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping's leaves under dotted keys, ``{"mf": {"c": 0.5}}`` -> ``{"mf.c": 0.5}``
    (under ``prefix`` when given). An empty mapping and a list are leaves, so they are logged and
    compared as values rather than dropped."""
    if isinstance(node, Mapping) and node:
        return {
            key: value
            for name, sub in node.items()
            for key, value in dotted_leaves(sub, f"{prefix}.{name}" if prefix else str(name)).items()
        }
    return {prefix: node}


def node_schema(cls: type) -> type:
    """``cls``'s fields plus ``_target_`` naming it: the schema a YAML node of ``cls`` merges into."""
    return dataclasses.make_dataclass(
        f"{cls.__name__}Node", [("_target_", str, dataclasses.field(default=target_of(cls)))], bases=(cls,)
    )


def register_schemas() -> None:
    cs = ConfigStore.instance()
    for name, cls in schemas().items():
        group, _, leaf = f"schema/{name}".rpartition("/")
        cs.store(group=group, name=leaf, node=node_schema(cls))


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


def config_file_text(name: str) -> str:
    """``configs/<name>.yaml`` as written, comments included, without its ``defaults:`` list and
    ``hydra:`` block (the keys an entry point's ``--help`` shows: Hydra's dump drops comments)."""
    path = CONFIG_DIR / f"{name}.yaml"
    lines, skipping = [], False
    for line in path.read_text().splitlines():
        if line.startswith(("defaults:", "hydra:")):
            skipping = True
            continue
        if skipping and (line.startswith((" ", "-", "#")) or not line.strip()):
            continue
        skipping = False
        lines.append(line)
    return "\n".join(lines)


if not OmegaConf.has_resolver("meanflowse.help_groups"):
    OmegaConf.register_new_resolver("meanflowse.help_groups", help_groups)
if not OmegaConf.has_resolver("meanflowse.config_file"):
    OmegaConf.register_new_resolver("meanflowse.config_file", config_file_text)


# -- numbers a user can get wrong, checked before any data or model is built -------------------
SAMPLER_NUMBERS = [
    Bound("sampler.nfe", integer=True, low=1),
    Bound("sampler.t_end", low=0.0, high=1.0, high_open=True),
]
TRAIN_NUMBERS = [
    Bound("seed", integer=True, low=0, nullable=False),
    Bound("trainer.max_steps", integer=True, nullable=False),  # its range: check_config says why
    Bound("data.batch_size", integer=True, low=1, nullable=False),
    Bound("data.num_workers", integer=True, low=0, nullable=False),
    Bound("data.num_frames", integer=True, low=2, nullable=False),
    Bound("data.limit_files", integer=True, low=1),
    Bound("optim.lr", low=0.0, low_open=True, nullable=False),
    SNR_JITTER,
    *SAMPLER_NUMBERS,
]
EVAL_NUMBERS = [
    Bound("batch_size", integer=True, low=1, nullable=False),
    Bound("limit_files", integer=True, low=1),
    Bound("chunk_s", low=0.0, low_open=True, nullable=False),
    Bound("overlap_s", low=0.0, nullable=False),
    Bound("seed", integer=True, low=0, nullable=False),
    *SAMPLER_NUMBERS,
]


_ABSENT = object()


def check_numbers(cfg: DictConfig, bounds: list[Bound]) -> None:
    """A one-line ConfigError naming the key, its value and the allowed range, for the first key
    of ``bounds`` that is out of range; absent keys are skipped, null only where ``nullable``."""
    for bound in bounds:
        value = OmegaConf.select(cfg, bound.key, default=_ABSENT)  # a null key is None, not absent
        if value is not _ABSENT and not bound.holds(value):
            raise ConfigError(bound.problem(value))


def build_part(cfg: DictConfig, key: str) -> Any:
    """The part ``cfg[key]`` describes, built from its ``_target_``. A dataclass part is merged
    into its class first, so a hand-built or stored config is type-checked too and a key it lacks
    (stored before the option existed) takes the class's default."""
    values = OmegaConf.to_container(cfg[key], resolve=True)  # resolve in the full config first
    target = values.pop("_target_", None)
    if target is None:
        raise ConfigError(f"{key}: no _target_ naming the class to build (a config from before the graph?)")
    cls = get_class(target)
    if not dataclasses.is_dataclass(cls):
        return instantiate(cfg[key])
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))


def spec_config(cfg: DictConfig) -> SpecConfig:
    return SpecConfig(**OmegaConf.to_container(cfg.data.spec, resolve=True))


register_schemas()
