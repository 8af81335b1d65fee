"""MeanFlowSE: one-step generative speech enhancement with MeanFlow (average-velocity flow)."""

__version__ = "0.1.0"

# The YAML groups name typed schemas (`schema/<key>` in Hydra's ConfigStore); registering them
# on import means `import meanflowse` is all a notebook needs before `hydra.compose("train")`.
from meanflowse import config as _config  # noqa: E402,F401  (imported for its registration)
