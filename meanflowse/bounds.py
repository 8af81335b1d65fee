"""The allowed values of one numeric setting, checked the same way wherever a number comes in.

Kept free of the package's other modules (standard library only), so the data package can check
its own keys without importing :mod:`meanflowse.config`, which registers the Hydra schemas and
pulls in the method modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bound:
    """The allowed values of one numeric key; ``None`` bounds are open-ended."""

    key: str
    integer: bool = False
    low: float | None = None
    low_open: bool = False  # value > low rather than >= low
    high: float | None = None
    high_open: bool = False  # value < high rather than <= high
    nullable: bool = True  # null means "not set" (the default or the checkpoint's)

    def holds(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not isinstance(value, int):  # 2.0 would reach range() and seeds as a float
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def allowed(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        low = f"{'>' if self.low_open else '>='} {self.low}" if self.low is not None else ""
        high = f"{'<' if self.high_open else '<='} {self.high}" if self.high is not None else ""
        return " ".join(x for x in (kind, low, "and" if low and high else "", high) if x)

    def problem(self, value: Any) -> str:
        """The one-line message for a value that does not hold: the key, the value, what is allowed."""
        return f"{self.key}={value!r}: must be {self.allowed()}"


# +-40 dB already spans 80 dB of SNR: more is a typo, and overflows float32. train.py checks it at
# start (meanflowse.config.TRAIN_NUMBERS); the data module checks it again for direct callers.
SNR_JITTER = Bound("data.train_snr_jitter_db", low=0.0, high=40.0, nullable=False)
