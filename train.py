"""Train MeanFlowSE: `python train.py [backbone=ncsnpp] [mf.first_order_coef=0.5] ...`."""

import hydra
from omegaconf import DictConfig

import meanflowse.config  # noqa: F401  (registers the structured-config schemas)


def run(cfg: DictConfig) -> float | None:
    """What ``train.py`` does with a composed config (tests call it without Hydra's wrapper)."""
    # Lightning and the training code are imported here, not at the top: `--help` and a mistyped
    # key are answered by Hydra before this runs, and need not wait for Lightning's import.
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from meanflowse.config import ConfigError
    from meanflowse.data.folder import DatasetError
    from meanflowse.runtime import apply_cpu_memory_setting
    from meanflowse.training.checkpointing import ResumeError
    from meanflowse.training.fit import train

    # Mistakes in the config, the data or ckpt_path: their message says what to change, and a
    # traceback would only bury it. (Lightning's MisconfigurationException is its own word for a
    # bad trainer setting, e.g. trainer=gpu without a GPU.) Anything else keeps its traceback.
    user_errors = (ConfigError, DatasetError, ResumeError, MisconfigurationException)
    try:
        # here and not in train(): the allocator is the process's, so only the command line
        # (not a library caller of train()) decides it
        apply_cpu_memory_setting(cfg.retain_cpu_memory)
        metrics, _ = train(cfg)
    except user_errors as err:
        raise SystemExit(f"train.py: {err}") from None
    return metrics.get(cfg.optimized_metric)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
