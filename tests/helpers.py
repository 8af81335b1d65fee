"""Compose the real configs, shrunk to CPU-test size, each run writing into ``tmp_path``."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import meanflowse.config  # noqa: F401  (schemas)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def load_script(relative_path: str, name: str):
    """A script of the repository (train.py, an experiment's tool) imported as a module ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bounded(
    cmd: list[str], timeout: float, *, env: dict[str, str] | None = None, logs: Callable[[], str] = str
) -> tuple[int, str]:
    """Run ``cmd`` from the repository root (tests/ importable, ``env`` added) in a process group
    of its own; past ``timeout`` (a hung all-reduce) the whole group, any rank processes it started
    included, is killed and the test fails. Returns the exit status and stdout + stderr together
    (Hydra logs to stdout) followed by ``logs()``, e.g. the tails of log files the run wrote."""
    import pytest

    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"), **(env or {}))
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{cmd[1]} hung for {timeout} s:\n{out[-3000:]}{logs()}")
    return proc.returncode, out + logs()


# The smallest NCSN++ the class accepts, short crops, a handful of generated files.
TINY = [
    "backbone=ncsnpp_tiny",
    "backbone.nf=8",
    "backbone.ch_mult=[1,2]",
    "backbone.num_res_blocks=1",
    "backbone.attn_resolutions=[]",
    "trainer=cpu",
    "logger=none",
    "data.num_frames=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.synthetic.num_train=4",
    "data.synthetic.num_valid=2",
    "data.synthetic.num_test=2",
    "data.synthetic.duration_s=[1.0,1.5]",
]


# TINY trained for two steps, validated once with metrics and no media, quietly
SHORT_TRAIN = [
    *TINY,
    "trainer.max_steps=2",
    "trainer.max_epochs=-1",
    "trainer.num_sanity_val_steps=0",
    "callbacks.progress=null",
    "callbacks.val_metrics.num_media=0",
]


def compose_cfg(
    name: str,
    overrides: list[str],
    tmp_path: Path,
    *,
    shared_data: Path | None = None,
    config_dir: Path = CONFIGS,
) -> DictConfig:
    """Compose ``<config_dir>/<name>.yaml`` (the project's ``configs/``) as Hydra would, with
    outputs under ``tmp_path``."""
    GlobalHydra.instance().clear()
    data_dir = shared_data or tmp_path / "data"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(
            name,
            overrides=[
                f"paths.root_dir={ROOT}",
                f"paths.data_dir={data_dir}",
                f"paths.output_dir={tmp_path}",
                *overrides,
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
