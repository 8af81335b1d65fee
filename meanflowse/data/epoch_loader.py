"""Training loaders whose shuffle and crops are functions of ``(seed, epoch)``, and that resume
mid-epoch (the data module's train loader; tests in ``tests/test_resume.py`` and
``tests/test_data_distributed.py``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler


class EpochRandomSampler(RandomSampler):
    """A shuffle that is a function of ``(seed, epoch)`` only.

    A plain ``RandomSampler`` carries its generator state from epoch to epoch, and how far that
    state advances depends on whether the last partial pass was consumed (it is with workers,
    not without). Under DDP (``use_distributed_sampler``, Lightning's default) Lightning sees a
    ``RandomSampler`` and replaces it with a shuffling ``DistributedSampler`` seeded by the run
    seed, inside an :class:`EpochDataLoader` of the same settings; ``set_epoch`` reaches that
    sampler from the fit loop and from the loader, so every rank shuffles alike and each rank
    reads its own share (tested in ``tests/test_data_distributed.py``).
    """

    def __init__(self, data_source, *, seed: int = 0):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        state = np.random.SeedSequence([self.seed, int(epoch)]).generate_state(1)[0]
        self.generator.manual_seed(int(state))


class EpochDataLoader(DataLoader):
    """A DataLoader that tells its dataset and sampler which epoch starts (for crop seeds and
    the shuffle).

    ``epoch_fn`` returns the current epoch (the trainer's) or None; then the loader counts its
    own passes.
    """

    def __init__(self, *args, epoch_fn: Callable[[], int | None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_fn = epoch_fn
        self._passes = 0
        self._position = {"epoch": -1, "batches": 0}  # batches handed out in the current pass
        self._resume_at: dict[str, int] = {}

    def __iter__(self):
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        epoch = self._passes if epoch is None else epoch
        self._passes += 1
        for obj in (self.dataset, self.sampler):
            if callable(getattr(obj, "set_epoch", None)):
                obj.set_epoch(epoch)
        resume, self._resume_at = self._resume_at, {}
        skip = resume.get("batches", 0) if resume.get("epoch") == epoch else 0
        skip = skip if 0 < skip < len(self) else 0
        self._position = {"epoch": epoch, "batches": skip}
        return self._counted(super().__iter__(), skip)

    def _counted(self, batches, skip: int):
        # The epoch's order is a function of (seed, epoch), so skipping the batches a killed run
        # already trained on continues it exactly (the skipped batches are loaded, not trained).
        for i, batch in enumerate(batches):
            if i >= skip:
                self._position["batches"] += 1
                yield batch

    # Lightning saves these with the fit loop (a loader with state_dict is "resumable"), so
    # ckpt_path=... continues mid-epoch from the next batch instead of the epoch's first
    # (the "loader position" of meanflowse.checkpoint_contents).
    def state_dict(self) -> dict[str, int]:
        return dict(self._position)

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume_at = {k: int(v) for k, v in state_dict.items()}
