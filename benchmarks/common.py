"""Shared helpers for the benchmarks: timing with warm-up, machine description, markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch

# train.py overrides that leave training alone in a timed run: no validation, progress bar,
# best-checkpoint ranking or W&B (bench_train, bench_quality).
TRAINING_ONLY = [
    "logger=csv",
    "callbacks.progress=null",
    "trainer.enable_progress_bar=false",
    "callbacks.val_metrics=null",
    "callbacks.model_checkpoint=null",
    "callbacks.best_si_sdr=null",
    "trainer.check_val_every_n_epoch=100000",
    "trainer.num_sanity_val_steps=0",
    "trainer.max_epochs=-1",
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}"


def time_call(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of ``fn`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
