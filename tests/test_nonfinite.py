"""Issue 3, point 6: a NaN in the loss or the JVP never goes on silently through training."""

import pytest
import torch

from helpers import TINY, compose_cfg
from meanflowse.method.objective import NonFiniteError
from meanflowse.training.lit_module import MeanFlowSEModule

QUIET = [
    *TINY,
    "trainer.max_steps=2",
    "trainer.max_epochs=-1",
    "callbacks.progress=null",
    "callbacks.val_metrics=null",
    "callbacks.model_checkpoint=null",
    "callbacks.best_si_sdr=null",
    "callbacks.last_checkpoint=null",
    "trainer.num_sanity_val_steps=0",
    "trainer.limit_val_batches=0",
    "curriculum.mf_warmup_frac=0",
    "curriculum.mf_skip_below=0",
]


@pytest.fixture
def poisoned(monkeypatch):
    """Every network output becomes NaN (and so does its JVP)."""
    clean = MeanFlowSEModule.net_fn
    monkeypatch.setattr(MeanFlowSEModule, "net_fn", lambda self, *a: clean(self, *a) * float("nan"))


@pytest.mark.parametrize("weight, term", [("1.0", "JVP"), ("0.0", "loss")])
def test_nan_stops_training_naming_step_and_term(tmp_path, poisoned, weight, term):
    from meanflowse.training.fit import train

    cfg = compose_cfg("train", [*QUIET, f"mf.weight_final={weight}"], tmp_path, shared_data=tmp_path / "data")
    with pytest.raises(NonFiniteError) as err:
        train(cfg)
    message = str(err.value)
    assert "step 0" in message and term in message and "nan_policy=skip" in message, message


def test_nan_policy_skip_skips_the_step(tmp_path, poisoned):
    from meanflowse.training.fit import train

    cfg = compose_cfg(
        "train",
        [*QUIET, "mf.weight_final=1.0", "mf.nan_policy=skip"],
        tmp_path,
        shared_data=tmp_path / "data",
    )
    metrics, objs = train(cfg)
    assert metrics["train/skipped_nonfinite"] == 1.0
    assert not objs["trainer"].optimizers[0].state  # Adam never stepped: no NaN reached a weight
    assert all(torch.isfinite(p).all() for p in objs["module"].parameters())
