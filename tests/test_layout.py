"""The package layout: every configured ``_target_`` resolves, checkpoints written before the
modules moved into subpackages still load, and no module grows past 400 lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import soundfile as sf
import torch
from hydra.utils import get_object
from omegaconf import OmegaConf

from eval_helpers import SR, signal, write_tiny_checkpoint
from meanflowse.inference.enhancer import load_module
from meanflowse.legacy_config import MOVED_MODULES, MOVED_NAMES, migrate_targets, new_path
from meanflowse.training.checkpointing import stored_config

ROOT = Path(__file__).resolve().parents[1]


def targets(node) -> list[str]:
    """Every ``_target_`` string in a plain config tree."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "_target_" and isinstance(v, str)]
        return found + [t for v in node.values() for t in targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in targets(v)]
    return []


def yaml_targets() -> dict[str, list[str]]:
    found = {}
    for folder in ("configs", "experiments"):
        for path in sorted((ROOT / folder).rglob("*.yaml")):
            tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            if targets(tree):
                found[str(path.relative_to(ROOT))] = targets(tree)
    return found


def test_every_target_in_configs_and_experiments_resolves():
    found = yaml_targets()
    assert "configs/callbacks/default.yaml" in found and "experiments/cpu_sweep/multirun.yaml" in found
    for where, names in found.items():
        for name in names:
            assert get_object(name) is not None, f"{where}: {name}"
            assert new_path(name) == name, f"{where}: {name} is an old path"  # all are today's


def test_every_old_path_maps_to_an_importable_one():
    for old, new in MOVED_NAMES.items():
        assert get_object(new) is not None, old
    for old, new in MOVED_MODULES.items():
        assert get_object(new) is not None, old
    assert new_path("meanflowse.ema.EMA") == "meanflowse.training.ema.EMA"
    assert new_path("meanflowse.sweep.StepTimer") == "meanflowse.sweep.step_timer.StepTimer"
    assert new_path("meanflowse.training.ema.EMA") == "meanflowse.training.ema.EMA"  # today's stays
    assert new_path("torch.optim.Adam") == "torch.optim.Adam"


def _old(name: str) -> str:
    """The pre-move path of today's ``name`` (the inverse of the table)."""
    for old, new in MOVED_NAMES.items():
        if new == name:
            return old
    module, _, attr = name.rpartition(".")
    olds = [o for o, n in MOVED_MODULES.items() if n == module]
    return f"{olds[0]}.{attr}" if olds else name


def _with_old_paths(node):
    if isinstance(node, dict):
        return {k: _old(v) if k == "_target_" else _with_old_paths(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_old_paths(v) for v in node]
    return node


def test_a_checkpoint_with_old_paths_evaluates_through_eval_py(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path)
    data = torch.load(ckpt, weights_only=True)
    old_config = _with_old_paths(data["hyper_parameters"]["config"])
    old_targets = set(targets(old_config))
    assert {"meanflowse.ema.EMA", "meanflowse.validation.ValidationMetrics"} <= old_targets
    old_ckpt = tmp_path / "old" / "checkpoints" / "last.ckpt"
    old_ckpt.parent.mkdir(parents=True)
    torch.save({**data, "hyper_parameters": {"config": old_config}}, old_ckpt)

    # what eval and resume read: today's paths, each one importable
    module, cfg = load_module(old_ckpt)
    for name in targets(OmegaConf.to_container(cfg)) + targets(module.hparams["config"]):
        assert get_object(name) is not None, name
    stored = OmegaConf.to_container(stored_config(old_ckpt))
    assert targets(stored) == targets(data["hyper_parameters"]["config"])
    assert migrate_targets(old_config) == data["hyper_parameters"]["config"]

    sf.write(tmp_path / "noisy.wav", signal(1.0)[0].numpy(), SR)
    outputs = {}
    for name, path in (("new", ckpt), ("old", old_ckpt)):
        out = tmp_path / f"out_{name}"
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "eval.py"),
                f"ckpt_path={path}",
                f"input={tmp_path / 'noisy.wav'}",
                f"output={out}",
                "progress=false",
                "metrics=false",
                f"hydra.run.dir={tmp_path / ('hydra_' + name)}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[name] = (out / "noisy.wav").read_bytes()
    assert outputs["old"] == outputs["new"]


def test_no_module_is_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "meanflowse").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}
