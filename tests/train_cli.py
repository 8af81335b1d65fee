"""train.py as a module, so tests call its ``run(cfg)`` (train.py without Hydra's wrapper)."""

from helpers import load_script


def load_train_cli():
    return load_script("train.py", "train_cli")
