"""Enhance a file or folder with a trained checkpoint and measure it.

`python eval.py ckpt_path=... input=...` (or `split=test`); see meanflowse/inference/evaluation.py.
"""

import sys

import hydra
from omegaconf import DictConfig

import meanflowse  # noqa: F401  (registers the structured-config schemas)


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg: DictConfig) -> float:
    """Exit status 0 when something was scored; else 1 with a one-line reason on stderr."""
    # imported here, not at the top: `--help` and a mistyped key (answered by Hydra before this
    # runs) need not wait for the inference code's imports
    from meanflowse.inference.enhancer import CheckpointError
    from meanflowse.inference.evaluation import EvalError, evaluate
    from meanflowse.inference.reports import nothing_scored
    from meanflowse.runtime import apply_cpu_memory_setting

    try:
        apply_cpu_memory_setting(cfg.retain_cpu_memory)
        summary = evaluate(cfg)
    except (EvalError, CheckpointError, ValueError, OSError) as err:  # OSError: e.g. a failed write
        sys.exit(f"eval.py: {err}")
    problem = nothing_scored(summary, metrics=bool(cfg.metrics))
    if problem:
        sys.exit(f"eval.py: {problem}")
    return summary["pesq"]


if __name__ == "__main__":
    main()
