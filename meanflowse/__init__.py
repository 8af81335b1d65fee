"""MeanFlowSE: one-step generative speech enhancement with MeanFlow (average-velocity flow)."""

__version__ = "0.1.0"
