"""The training loader under Lightning's distributed samplers, with a faked two-rank DDP trainer.

Nothing is launched: the trainer is built for ``strategy="ddp", devices=2`` on CPU and its rank
set by hand, then the loader goes through the same two steps Lightning applies before fitting
(``_request_dataloader`` records the loader's arguments, ``_prepare_dataloader`` swaps in the
``DistributedSampler`` and rebuilds the loader). These are Lightning internals: if a Lightning
upgrade moves them, this test fails loudly rather than passing vacuously.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.trainer.connectors.data_connector import _DataLoaderSource, _request_dataloader
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from torch.utils.data import DistributedSampler

from meanflowse.data.datamodule import PairedSpecDataModule
from meanflowse.data.epoch_loader import EpochDataLoader

SYN = dict(num_train=6, num_valid=2, num_test=0, duration_s=[0.5, 1.0], snr_db=[0.0, 10.0])


@pytest.fixture(autouse=True)
def restore_rank_zero():
    """Faking rank 1 sets Lightning's process-wide ``rank_zero_only.rank``; left at 1, every later
    test in this process would silently skip its rank-zero-only work (loggers write nothing)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    before = getattr(rank_zero_only, "rank", 0)
    yield
    rank_zero_only.rank = before


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp") / "syn"
    PairedSpecDataModule(base_dir=str(root), synthetic=SYN, num_frames=32).prepare_data()
    return root


def rank_loader(base_dir: Path, rank: int, world: int = 2):
    """A fresh data module and the train loader Lightning would give rank ``rank``."""
    dm = PairedSpecDataModule(base_dir=str(base_dir), batch_size=3, num_workers=0, num_frames=32, seed=5)
    strategy = "ddp" if world > 1 else "auto"
    trainer = L.Trainer(
        accelerator="cpu",
        strategy=strategy,
        devices=world,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if world > 1:
        trainer.strategy.cluster_environment.set_global_rank(rank)
    trainer.state.fn = TrainerFn.FITTING
    trainer.datamodule, dm.trainer = dm, trainer
    dm.setup("fit")
    loader = _request_dataloader(_DataLoaderSource(dm, "train_dataloader"))
    return trainer, trainer._data_connector._prepare_dataloader(
        loader, shuffle=True, mode=RunningStage.TRAINING
    )


def run_epoch(trainer, loader, epoch: int) -> dict[str, torch.Tensor]:
    """Names -> noisy crops of one epoch, the epoch set the way the fit loop sets it."""
    trainer.fit_loop.epoch_progress.current.completed = epoch  # trainer.current_epoch
    loader.sampler.set_epoch(epoch)
    return {name: noisy for batch in loader for name, noisy in zip(batch["name"], batch["noisy"])}


def test_ranks_share_the_data_and_reshuffle_each_epoch(syn_dir, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "5")  # what seed_everything(cfg.seed) leaves for Lightning
    seen = {}
    for rank in (0, 1):
        trainer, loader = rank_loader(syn_dir, rank)
        assert isinstance(loader, EpochDataLoader) and loader.epoch_fn is not None
        assert isinstance(loader.sampler, DistributedSampler)
        assert (
            loader.sampler.num_replicas,
            loader.sampler.rank,
            loader.sampler.shuffle,
            loader.sampler.seed,
        ) == (2, rank, True, 5)
        seen[rank] = [run_epoch(trainer, loader, e) for e in range(3)]
    for e in range(3):  # each rank its own half, together the whole split
        assert not set(seen[0][e]) & set(seen[1][e])
        assert set(seen[0][e]) | set(seen[1][e]) == {f"train_{i:05d}" for i in range(6)}
    orders = {tuple(seen[0][e]) + tuple(seen[1][e]) for e in range(3)}
    assert len(orders) > 1  # set_epoch reached the distributed sampler: the shuffle changes

    trainer, again = rank_loader(syn_dir, 1)  # a restarted run gives the same batches
    for e in range(3):
        batches = run_epoch(trainer, again, e)
        assert list(batches) == list(seen[1][e])
        for name, noisy in batches.items():
            torch.testing.assert_close(noisy, seen[1][e][name], rtol=0, atol=0)


def test_crops_do_not_depend_on_the_number_of_devices(syn_dir, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    trainer, single = rank_loader(syn_dir, 0, world=1)
    assert not isinstance(single.sampler, DistributedSampler)  # one device: our own sampler
    alone = [run_epoch(trainer, single, e) for e in range(2)]
    for rank in (0, 1):
        trainer, loader = rank_loader(syn_dir, rank)
        for e in range(2):
            for name, noisy in run_epoch(trainer, loader, e).items():
                torch.testing.assert_close(noisy, alone[e][name], rtol=0, atol=0)
    assert any(not torch.equal(alone[0][n], alone[1][n]) for n in alone[0])  # crops move
