"""Sweep MeanFlowSE: `python sweep.py -m [experiment=sweep_cpu]`.

Each job trains one grid point (c x mf.jvp_impl by default) and evaluates it at every NFE of
`sweep.eval_nfe`; when the multirun ends its jobs are gathered into one table, a CSV and plots
(`python -m meanflowse.sweep gather DIR` redoes that). A failed job is recorded and the others
go on; a single run (no -m) re-raises its error.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import meanflowse.config  # noqa: F401  (registers the structured-config schemas)
from meanflowse.runtime import apply_cpu_memory_setting
from meanflowse.sweep.job import run_job  # registers the `sweep` schema


@hydra.main(version_base="1.3", config_path="configs", config_name="sweep")
def main(cfg: DictConfig) -> float:
    apply_cpu_memory_setting(cfg.retain_cpu_memory)
    return run_job(cfg, reraise=HydraConfig.get().mode == RunMode.RUN)


if __name__ == "__main__":
    main()
