import os

import pytest
import torch
from torch import nn

# Under pytest-xdist (`make test` runs two workers on the 2-core machine) each worker, and every
# process a test starts, gets one thread: two processes that each spin two OpenMP threads on two
# cores run many times slower than one.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


class TinyNet(nn.Module):
    """A small smooth stand-in backbone with the real contract: (x_t, y, t, d) -> [B,2,F,T]."""

    frame_multiple = 1

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.inp = nn.Conv2d(4, hidden, 3, padding=1)
        self.emb_t = nn.Linear(2, hidden)
        self.emb_d = nn.Linear(2, hidden)
        self.out = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x_t, y, t, d):
        def feats(s):
            s = s.to(x_t.dtype)[:, None]
            return torch.cat([torch.sin(3 * s), torch.cos(2 * s)], dim=1)

        h = self.inp(torch.cat([x_t, y], dim=1))
        h = h + (self.emb_t(feats(t)) + self.emb_d(feats(torch.log1p(d))))[:, :, None, None]
        return self.out(torch.nn.functional.silu(h))


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return TinyNet()
