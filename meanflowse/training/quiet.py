"""Known noise of every training run, silenced where it starts (and nothing else).

* Lightning 2.6 builds ``torch.utils._pytree.LeafSpec`` objects, which torch 2.11 deprecates:
  a FutureWarning about Lightning's code, printed on every run, that no user can act on.
* Lightning's Trainer logs a tip advertising its cloud logger on every run without one.
* Lightning's ``WandbLogger`` always passes ``anonymous=None`` to ``wandb.init``, and wandb 0.31
  warns that the (deprecated) setting has no effect whenever it is passed at all:
  :class:`QuietWandbLogger` leaves it out unless it is asked for.

Each is matched by its exact text, so any other warning or log line still shows.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from lightning.pytorch.loggers import WandbLogger

LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
TIP_LOGGER = "lightning.pytorch.utilities.rank_zero"
TIP_TEXT = "💡 Tip: For seamless cloud logging"


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP_TEXT)


def silence_known_noise() -> None:
    """Install the two filters (idempotent)."""
    warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING, category=FutureWarning)
    tip_log = logging.getLogger(TIP_LOGGER)
    if not any(isinstance(f, _DropTip) for f in tip_log.filters):
        tip_log.addFilter(_DropTip())


class QuietWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` without the ``anonymous=None`` that makes wandb warn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
