"""Enhance a file or folder with a trained checkpoint and measure it: `python eval.py ckpt_path=... input=...`."""
import sys

import hydra
from omegaconf import DictConfig

from meanflowse.enhance import CheckpointError
from meanflowse.evaluation import EvalError, evaluate
from meanflowse.runtime import apply_cpu_memory_setting


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> float:
    try:
        apply_cpu_memory_setting(cfg.retain_cpu_memory)
        return evaluate(cfg)["pesq"]
    except (EvalError, CheckpointError, ValueError) as err:
        sys.exit(f"eval.py: {err}")


if __name__ == "__main__":
    main()
