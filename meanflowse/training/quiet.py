"""Known noise of every training run, silenced where it starts (and nothing else).

* Lightning 2.6 builds ``torch.utils._pytree.LeafSpec`` objects, which torch 2.11 deprecates:
  a FutureWarning about Lightning's code, printed on every run, that no user can act on.
* Lightning's Trainer logs a tip advertising its cloud logger on every run without one.

Each is matched by its exact text, so any other warning or log line still shows.
"""

from __future__ import annotations

import logging
import warnings

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
