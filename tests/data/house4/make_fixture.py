"""How ``last.ckpt`` and ``initial_state.pt`` beside this file were made, with main at caf9b0e
(the last commit before the model graph, "House 5"); it runs against that commit only.

``last.ckpt``: the tests' tiny NCSN++ trained two steps with the MeanFlow objective switched on
from the start (``mf.weight_final=0.5``, no warm-up), validated once: config, weights, EMA,
validation state, loader position and schedule as train.py wrote them then.
``initial_state.pt``: the seeded (``seed_everything(0)``) initial ``state_dict`` of that config,
which today's build must reproduce.

Run from the repository root at caf9b0e: ``python tests/data/house4/make_fixture.py``.
"""

import shutil
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, "tests")
from helpers import SHORT_TRAIN, compose_cfg  # noqa: E402
from meanflowse.training.fit import build_module, train  # noqa: E402

OUT = Path("/tmp/oldck/run")
OVERRIDES = [
    *SHORT_TRAIN,
    "mf.weight_final=0.5",
    "curriculum.mf_warmup_frac=0.0",
    "callbacks.val_metrics.every_n_epochs=1",
]

if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    cfg = compose_cfg("train", OVERRIDES, OUT)
    L.seed_everything(0, workers=True)
    torch.save(dict(build_module(cfg).state_dict()), "/tmp/oldck/initial_state.pt")
    train(cfg)  # -> /tmp/oldck/run/checkpoints/last.ckpt
