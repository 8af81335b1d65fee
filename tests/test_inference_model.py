"""Inference without Lightning: a checkpoint enhances through the plain InferenceModel, with the
same weights (EMA or raw) and the same output as through the LightningModule that wrote it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eval_helpers import SR, signal, write_tiny_checkpoint
from helpers import ROOT
from meanflowse.config import spec_config
from meanflowse.inference.checkpoint import CheckpointError, load_model, load_module
from meanflowse.inference.enhancer import Enhancer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_enhancing_a_file_from_a_checkpoint_never_imports_lightning(ckpt, tmp_path):
    import soundfile as sf

    wav = tmp_path / "in.wav"
    sf.write(wav, signal(0.5)[0].numpy(), SR)
    code = f"""
import sys
from meanflowse.data.audio import load_audio
from meanflowse.inference.enhancer import Enhancer
enhancer = Enhancer.from_checkpoint({str(ckpt)!r})
noisy, sr = load_audio({str(wav)!r}, mono=False)
out = enhancer.enhance(noisy)
assert out.shape == noisy.shape and bool(out.isfinite().all())
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning"))
print(loaded[:5])
sys.exit(1 if loaded else 0)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


@pytest.mark.parametrize("use_ema", [True, False])
def test_old_and_new_loaders_give_equal_weights_and_outputs(ckpt, use_ema):
    model, cfg = load_model(ckpt, use_ema=use_ema)
    module, _ = load_module(ckpt, use_ema=use_ema)  # the LightningModule, as before this change
    new = dict(model.named_parameters())
    old = dict(module.named_parameters())
    assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)
    x = signal(1.2, channels=2, seed=3)
    through_model = Enhancer.from_checkpoint(ckpt, use_ema=use_ema, seed=5).enhance(x)
    through_module = Enhancer(
        module=module.inference,
        spec=spec_config(cfg),
        sample_rate=int(cfg.data.sample_rate),
        seed=5,
        channels_last=True,  # as from_checkpoint sets it on a CPU
    ).enhance(x)
    assert torch.equal(through_model, through_module)


def test_ema_and_raw_weights_differ(ckpt):
    ema, _ = load_model(ckpt)
    raw, _ = load_model(ckpt, use_ema=False)
    a, b = dict(ema.named_parameters()), dict(raw.named_parameters())
    assert all(torch.allclose(a[k], b[k] + 0.01) for k in a)  # the fixture's shadow is raw + 0.01


def test_weights_of_another_model_are_named(ckpt, tmp_path):
    bad = torch.load(ckpt, weights_only=True)
    bad["state_dict"] = {"backbone.nope": torch.zeros(1), **bad["state_dict"]}
    path = tmp_path / "bad.ckpt"
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match="weights that do not fit"):
        load_model(path)
    bad["state_dict"] = {"not_backbone.x": torch.zeros(1)}
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match="weights that do not fit"):
        load_model(path)


def test_the_readme_python_example_runs(ckpt, tmp_path, monkeypatch):
    """The README's Python block, on a 44.1 kHz stereo file and the tiny checkpoint."""
    import re

    import soundfile as sf

    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- python-api.*?-->\n```python\n(.*?)```", text, re.S).group(1)
    assert "load_enhancer" in block and "sample_rate=sr" in block
    x = signal(0.7, channels=2, seed=1).T.numpy() * 0.3
    sf.write(tmp_path / "noisy.wav", x, 44100, subtype="FLOAT")
    monkeypatch.chdir(tmp_path)
    exec(block.replace("outputs/demo/checkpoints/last.ckpt", str(ckpt)), {})
    out, sr = sf.read(tmp_path / "enhanced.wav", always_2d=True)
    assert sr == 44100 and out.shape == x.shape and np.isfinite(out).all()


def test_enhance_resamples_in_and_out():
    """With the identity model (one step returns its input), a 48 kHz stereo tone below the
    model's 8 kHz band comes back at 48 kHz, same shape, unchanged but for the resampling."""
    from test_eval import Identity, _enhancer

    enhancer = _enhancer(Identity())
    t = torch.arange(48000 * 3 // 4) / 48000
    x = torch.stack([0.3 * torch.sin(2 * torch.pi * 440 * t), 0.2 * torch.sin(2 * torch.pi * 1000 * t)])
    out = enhancer.enhance(x, sample_rate=48000)
    assert out.shape == x.shape
    inner = slice(2400, -2400)  # the resampling filters' edges aside
    assert torch.allclose(out[:, inner], x[:, inner], atol=2e-3)
    # a 12 kHz tone is above what a 16 kHz model hears: resampled in, it is gone
    high = 0.3 * torch.sin(2 * torch.pi * 12000 * t)[None]
    assert float(enhancer.enhance(high, sample_rate=48000)[:, inner].abs().max()) < 1e-2
    assert torch.allclose(enhancer.enhance(high), high, atol=1e-4)  # taken at the model's rate
    with pytest.raises(ValueError, match="sample_rate=0"):
        enhancer.enhance(x, sample_rate=0)


def test_enhance_cli_attenuation_limit_mixes_the_input_back_in(ckpt, tmp_path, capsys):
    """``meanflowse-enhance --atten-lim-db L`` writes (1 - g) enhanced + g noisy, g = 10^(-L/20),
    and refuses a limit that is not above 0 dB, naming the option."""
    import soundfile as sf

    from meanflowse.enhance import main

    x = signal(0.5, seed=6)[0].numpy() * 0.3
    sf.write(tmp_path / "in.wav", x, SR, subtype="FLOAT")  # float in and out: no rounding in the way
    assert main([str(tmp_path / "in.wav"), str(tmp_path / "plain.wav"), "--ckpt", str(ckpt)]) == 0
    assert (
        main(
            [str(tmp_path / "in.wav"), str(tmp_path / "lim.wav"), "--ckpt", str(ckpt), "--atten-lim-db", "12"]
        )
        == 0
    )
    plain, limited = sf.read(tmp_path / "plain.wav")[0], sf.read(tmp_path / "lim.wav")[0]
    g = 10 ** (-12 / 20)
    np.testing.assert_allclose(limited, (1 - g) * plain + g * x, atol=1e-6)
    assert not np.allclose(plain, x, atol=1e-3)  # the model changed the input, so the check means something
    assert "attenuation limit 12 dB" in capsys.readouterr().out
    assert (
        main([str(tmp_path / "in.wav"), str(tmp_path / "z.wav"), "--ckpt", str(ckpt), "--atten-lim-db", "0"])
        == 2
    )
    assert "--atten-lim-db" in capsys.readouterr().err and not (tmp_path / "z.wav").exists()


def test_the_console_entry_point_enhances_from_outside_the_repository(ckpt, tmp_path):
    """``meanflowse-enhance`` (installed by ``make install``: ``pip install -e .`` creates it) and
    ``python -m meanflowse.enhance`` run in a folder that is not the repository: a 22.05 kHz
    stereo 24-bit FLAC comes back at its rate, length, channels and sample format."""
    import shutil

    import soundfile as sf

    work = tmp_path / "elsewhere"
    work.mkdir()
    x = signal(0.6, channels=2, seed=4).T.numpy() * 0.3
    sf.write(work / "take.flac", x, 22050, subtype="PCM_24")
    script = shutil.which("meanflowse-enhance", path=str(Path(sys.executable).parent))
    assert script is not None, "meanflowse-enhance is missing: run `make install` (pyproject changed)"
    for cmd, out in (
        ([script, "take.flac", "--ckpt", str(ckpt)], work / "take_enhanced.flac"),
        (
            [sys.executable, "-m", "meanflowse.enhance", "take.flac", "b.flac", "--ckpt", str(ckpt)],
            work / "b.flac",
        ),
    ):
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        info = sf.info(str(out))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (22050, len(x), 2, "PCM_24")
    bad = subprocess.run(
        [script, "nope.wav", "--ckpt", str(ckpt)], cwd=work, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and bad.stderr.startswith("meanflowse-enhance: ") and "nope.wav" in bad.stderr
