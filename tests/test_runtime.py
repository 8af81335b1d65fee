"""The CPU memory setting of train.py / eval.py (meanflowse.runtime)."""
import subprocess
import sys

import pytest

from meanflowse.runtime import apply_cpu_memory_setting

# A child process: 64 MiB blocks allocated and freed in a loop. With glibc's defaults each one is
# a fresh mapping (page-faulted again every time); retained, the heap serves them after the first.
CHILD = """
import resource, sys, torch
from meanflowse.runtime import apply_cpu_memory_setting
done = apply_cpu_memory_setting({"true": True, "false": False}[sys.argv[1]])
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    torch.ones(16 * 2**20).sum()
print(done, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, setting], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_retained_memory_stops_page_faulting_every_allocation():
    done, retained = _faults("true")
    if not done:
        pytest.skip("not glibc: the setting does nothing here")
    _, default = _faults("false")
    # 40 x 64 MiB = 655,360 pages faulted afresh by default; retained, a few blocks' worth
    assert default > 400_000
    assert retained < default / 5


def test_bad_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="retain_cpu_memory=maybe"):
        apply_cpu_memory_setting("maybe")
