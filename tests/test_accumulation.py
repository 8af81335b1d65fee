"""data.global_batch_size: the batch of one optimizer step over every device, reached by
accumulating micro-batches of data.batch_size (issue 15: the reference's global batch 8 on one GPU)."""

import logging

import pytest
import torch

from helpers import TINY, compose_cfg
from meanflowse.config import ConfigError
from meanflowse.training.fit import accumulation


def test_accumulation_counts_micro_batches_and_says_so():
    assert accumulation(None, 2, 1) == (1, "global batch 2: 2 per device x 1 device")
    assert accumulation(None, 2, 4)[0] == 1  # the reference: 4 GPUs x 2, nothing to accumulate
    assert accumulation(8, 2, 4) == (1, "global batch 8: 2 per device x 4 devices")
    assert accumulation(8, 2, 1) == (
        4,
        "global batch 8: 2 per device x 1 device x 4 micro-batches accumulated (data.global_batch_size)",
    )
    assert accumulation(8, 2, 2)[0] == 2
    assert accumulation(None, 2, 1, accumulate=3)[1].endswith(
        "x 3 accumulated (trainer.accumulate_grad_batches)"
    )


@pytest.mark.parametrize(
    "args, words",
    [
        ((8, 3, 1), "not a multiple of data.batch_size x devices (3 per device x 1 device = 3)"),
        ((4, 4, 2), "not a multiple"),  # smaller than one pass over the devices
        ((8, 2, 1, 2), "set one of them"),  # and trainer.accumulate_grad_batches too
    ],
)
def test_a_global_batch_that_cannot_be_reached_is_refused(args, words):
    with pytest.raises(ConfigError, match="data.global_batch_size") as err:
        accumulation(*args)
    assert words in str(err.value)


def test_train_accumulates_and_a_non_finite_micro_batch_skips_its_whole_step(tmp_path, caplog):
    """Global batch 4 from micro-batches of 2 on one process: one optimizer step (and one EMA
    update) per two batches; a NaN in the first micro-batch of a window skips that window's
    step, not only its own gradient (a skipped step counts toward max_steps, as without
    accumulation)."""
    from meanflowse.training.fit import train

    cfg = compose_cfg(
        "train",
        [
            *TINY,
            "data.batch_size=2",
            "data.global_batch_size=4",
            "trainer.max_steps=2",
            "trainer.max_epochs=-1",
            "trainer.num_sanity_val_steps=0",
            "trainer.limit_val_batches=0",
            "callbacks.progress=null",
            "callbacks.val_metrics=null",
            "callbacks.model_checkpoint=null",
            "callbacks.best_si_sdr=null",
            "callbacks.last_checkpoint=null",
            "mf.nan_policy=skip",
            "+callbacks.nan._target_=test_ddp.NanOnOneRank",
            "+callbacks.nan.rank=0",
            "+callbacks.nan.batch=0",
            f"+callbacks.nan.out_dir={tmp_path}",
        ],
        tmp_path,
        shared_data=tmp_path / "data",
    )
    with caplog.at_level(logging.INFO, logger="meanflowse.training.fit"):
        _, objs = train(cfg)
    trainer = objs["trainer"]
    assert trainer.accumulate_grad_batches == 2 and trainer.global_step == 2
    assert "global batch 4: 2 per device x 1 device x 2 micro-batches accumulated" in caplog.text
    report = torch.load(tmp_path / "nan_rank0.pt", weights_only=True)
    # window 1 (NaN in its first micro-batch): no step at all; window 2: a step at its end
    assert report["changed"] == [False, False, False, True], report["changed"]
    ema = next(c for c in trainer.callbacks if type(c).__name__ == "EMA")
    assert ema.num_updates == 2
    assert all(torch.isfinite(w).all() for w in report["weights"].values())
