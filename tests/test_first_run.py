"""First-run mistakes end in one line that says what to change, not in a traceback (issue 13)."""

import subprocess
import sys

import pytest
import torch

from helpers import ROOT, TINY, compose_cfg
from train_cli import load_train_cli

# TINY without its generator keys, for data sources other than the synthetic one
TINY_ANY_DATA = [o for o in TINY if not o.startswith("data.synthetic")]


def _message(tmp_path, overrides) -> str:
    """What train.py prints for ``overrides``, checked to be one line."""
    cli = load_train_cli()
    with pytest.raises(SystemExit) as stop:
        cli.run(compose_cfg("train", overrides, tmp_path))
    message = str(stop.value.code)
    assert message.startswith("train.py: ") and "\n" not in message, message
    return message


def test_folder_data_without_base_dir(tmp_path):
    message = _message(tmp_path, [*TINY_ANY_DATA, "data=folder"])
    assert "data.base_dir is required" in message and "data.base_dir=/path/to/dataset" in message


def test_a_base_dir_that_does_not_exist(tmp_path):
    message = _message(tmp_path, [*TINY_ANY_DATA, "data=folder", f"data.base_dir={tmp_path}/nope"])
    assert f"data.base_dir={tmp_path}/nope: no such folder" in message


@pytest.mark.parametrize("override", ["trainer.max_steps=0", "trainer.max_steps=-5"])
def test_no_steps_to_train(tmp_path, override):
    message = _message(tmp_path, [*TINY, override])
    assert f"{override}: nothing would be trained" in message


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("data.batch_size=0", "an integer >= 1"),
        ("data.batch_size=-1", "an integer >= 1"),
        ("sampler.nfe=0", "an integer >= 1"),
        ("sampler.nfe=-1", "an integer >= 1"),
        ("data.num_workers=-2", "an integer >= 0"),
        ("optim.lr=0", "a finite number > 0.0"),
        ("optim.lr=inf", "a finite number > 0.0"),
        ("seed=-1", "an integer >= 0"),
        ("data.num_frames=0", "an integer >= 2"),
        ("trainer.max_steps=null", "an integer"),
        ("data.train_snr_jitter_db=41", "a finite number >= 0.0 and <= 40.0"),
    ],
)
def test_a_number_out_of_range_is_refused_before_any_data_is_made(tmp_path, override, allowed):
    message = _message(tmp_path, [*TINY, override])
    key, value = override.split("=")
    shown = {"null": "None", "inf": "inf"}.get(value, value)
    assert f"{key}={shown}: must be {allowed}" in message or f"{key}={value}" in message, message
    assert f"must be {allowed}" in message
    assert not (tmp_path / "data").exists()  # refused before the corpus is generated


def test_no_epochs_to_train(tmp_path):
    message = _message(tmp_path, [*TINY, "trainer.max_epochs=0", "trainer.max_steps=-1"])
    assert "trainer.max_epochs=0" in message


def test_an_unknown_mf_choice(tmp_path):
    assert "mf.nan_policy='maybe'" in _message(tmp_path, [*TINY, "mf.nan_policy=maybe"])


def test_a_sampler_choice_refused_at_start(tmp_path):
    assert "sampler.nfe=3: heun evaluates the network 2" in _message(
        tmp_path, [*TINY, "sampler=heun", "sampler.nfe=3"]
    )
    assert "sampler.name='rk4'" in _message(tmp_path, [*TINY, "sampler.name=rk4"])
    heun = [*TINY, "sampler=heun", "sampler.nfe=2"]
    extra = _message(tmp_path, [*heun, "callbacks.val_metrics.nfe_extra=[3]"])
    assert "callbacks.val_metrics.nfe_extra: sampler.nfe=3: heun evaluates the network 2" in extra
    assert not (tmp_path / "data").exists()  # before the corpus is generated


def test_resume_last_with_nothing_to_resume(tmp_path):
    message = _message(tmp_path, [*TINY, "ckpt_path=last", f"paths.output_dir={tmp_path}/runs/x"])
    assert "ckpt_path=last: no last.ckpt" in message


def test_a_gpu_trainer_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert "gpu" in _message(tmp_path, [*TINY, "trainer=gpu"]).lower()


def test_the_command_line_prints_no_traceback(tmp_path):
    """The same through Hydra's wrapper, and an unknown group option (Hydra's own message)."""
    run = lambda *a: subprocess.run(
        [sys.executable, "train.py", *a, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    missing = run("data=folder", "logger=none")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr[-3000:]
    assert "data.base_dir is required" in missing.stderr
    unknown = run("backbone=ncsnp")
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr, unknown.stderr[-3000:]
    assert "Could not find 'backbone/ncsnp'" in unknown.stderr and "ncsnpp_tiny" in unknown.stderr
