"""The CPU memory setting of train.py / eval.py (meanflowse.runtime): applied by the entry points,
in their own process only; never by the library."""

import subprocess
import sys

import pytest

import meanflowse.inference.evaluation  # noqa: F401  (the library side, imported as a user would)
import meanflowse.runtime as runtime
from eval_helpers import signal, write_tiny_checkpoint
from helpers import TINY, compose_cfg
from meanflowse.inference.enhancer import Enhancer
from meanflowse.runtime import RETAINED, apply_cpu_memory_setting
from train_cli import load_train_cli

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
    out = subprocess.run(
        [sys.executable, "-c", CHILD, setting], capture_output=True, text=True, check=True
    ).stdout.split()
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


# A child process that retains memory, then forks (as a DataLoader worker is started): the
# forked child must be back on glibc's defaults, the parent keep the setting.
FORKED = """
import os, resource, torch
from meanflowse.runtime import apply_cpu_memory_setting

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(40):
        torch.ones(16 * 2**20).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

done = apply_cpu_memory_setting(True)
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    torch.set_num_threads(1)  # as a DataLoader worker does: no thread pool across the fork
    os.write(write, str(faults()).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(done, faults(), os.read(read, 64).decode())
"""


def test_a_forked_worker_goes_back_to_glibc_defaults():
    out = subprocess.run(
        [sys.executable, "-c", FORKED], capture_output=True, text=True, check=True
    ).stdout.split()
    if out[0] != "True":
        pytest.skip("not glibc: the setting does nothing here")
    parent, child = int(out[1]), int(out[2])
    assert child > 400_000  # every 64 MiB block a fresh mapping again
    assert parent < child / 5  # while the process that asked still retains


@pytest.fixture
def mallopt_calls(monkeypatch):
    """Records the settings passed to glibc's mallopt instead of applying them."""
    calls = []
    monkeypatch.setattr(runtime, "_mallopt", lambda settings: calls.append(settings) or True)
    monkeypatch.setattr(runtime, "_retained", False)
    return calls


def test_the_enhancer_as_a_library_leaves_the_allocator_alone(tmp_path, mallopt_calls):
    enhancer = Enhancer.from_checkpoint(write_tiny_checkpoint(tmp_path), device="cpu")
    out = enhancer.enhance(signal(0.5)[0])
    assert out.shape == (8000,)
    assert mallopt_calls == []


@pytest.mark.parametrize("setting, applied", [("true", True), ("false", False)])
def test_train_py_still_applies_the_setting(tmp_path, monkeypatch, mallopt_calls, setting, applied):
    cli = load_train_cli()
    # the setting, not the training (run() imports train from its module on each call)
    monkeypatch.setattr("meanflowse.training.fit.train", lambda cfg: ({}, {}))
    cli.run(compose_cfg("train", [*TINY, f"retain_cpu_memory={setting}"], tmp_path))
    assert mallopt_calls == ([RETAINED] if applied else [])
