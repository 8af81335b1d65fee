"""Train MeanFlowSE: `python train.py [backbone=ncsnpp] [mf.first_order_coef=0.5] ...`."""
import hydra
from omegaconf import DictConfig

import meanflowse.config  # noqa: F401  (registers the structured-config schemas)
from meanflowse.data.folder import DatasetError
from meanflowse.runtime import apply_cpu_memory_setting
from meanflowse.training import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        apply_cpu_memory_setting(cfg.retain_cpu_memory)
    except ValueError as err:
        raise SystemExit(f"train.py: {err}") from None
    try:
        metrics, _ = train(cfg)
    except DatasetError as err:  # a bad dataset: its list of problems, not a traceback
        raise SystemExit(str(err)) from None
    return metrics.get(cfg.get("optimized_metric", "val/one_step_mse"))


if __name__ == "__main__":
    main()
