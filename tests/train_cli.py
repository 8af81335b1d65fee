"""train.py as a module, so tests call its ``run(cfg)`` (train.py without Hydra's wrapper)."""

import importlib.util

from helpers import ROOT


def load_train_cli():
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli
