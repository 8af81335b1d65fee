"""DNSMOS reference values from speechmos's own implementation, without librosa.

``speechmos.dnsmos`` imports librosa (not a requirement of this project) only to build the mel
features of the P.808 model; the SIG / BAK / OVRL scores come from ``sig_bak_ovr.onnx`` on the
raw waveform and never touch librosa. This module runs speechmos's ``DNSMOS.__call__`` (its
tiling, 9.01 s windows every 1 s, calibration polynomials and mean) with a stand-in ``librosa``
module and the P.808 branch disabled, so :func:`meanflowse.metrics.dnsmos.dnsmos` can be compared with
the upstream code on any signal, and the pinned values in tests/test_metrics.py can be
regenerated:

    .venv/bin/python tests/speechmos_reference.py   # prints the values for the real pair
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


class _NoP808:
    """Stands in for the P.808 session: its score is not one of SIG / BAK / OVRL."""

    def run(self, outputs, feeds):
        return [np.full((1, 1), np.nan, dtype=np.float32)]


def _speechmos_dnsmos_module():
    """``speechmos.dnsmos``, imported with an empty ``librosa`` if the real one is absent."""
    if "speechmos.dnsmos" in sys.modules:
        return sys.modules["speechmos.dnsmos"]
    stub = None
    if importlib.util.find_spec("librosa") is None:
        stub = sys.modules.setdefault("librosa", types.ModuleType("librosa"))
    try:
        return importlib.import_module("speechmos.dnsmos")
    finally:
        if stub is not None and sys.modules.get("librosa") is stub:
            del sys.modules["librosa"]


def speechmos_dnsmos(audio: np.ndarray, sr: int = 16000) -> dict[str, float]:
    """``{"sig", "bak", "ovrl"}`` as speechmos's ``DNSMOS.__call__`` computes them for float
    audio in [-1, 1] at 16 kHz (its own checks apply)."""
    import onnxruntime as ort

    mod = _speechmos_dnsmos_module()
    path = Path(mod.__file__).parent / "dnsmos_models" / "sig_bak_ovr.onnx"
    scorer = mod.DNSMOS.__new__(mod.DNSMOS)  # no P.808 session (its features need librosa)
    scorer.primary_model_path = str(path)
    scorer.onnx_sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scorer.p808_onnx_sess = _NoP808()
    scorer.audio_melspec = lambda audio, **kw: np.zeros((1, 120), dtype=np.float32)
    out = scorer(np.asarray(audio), sr, False)
    return {"sig": float(out["sig_mos"]), "bak": float(out["bak_mos"]), "ovrl": float(out["ovrl_mos"])}


def real_pair_reference() -> dict[str, dict[str, float]]:
    from scipy.io import wavfile

    out = {}
    for name, file in (("clean", "speech.wav"), ("noisy", "speech_bab_0dB.wav")):
        sr, x = wavfile.read(REAL_DIR / file)
        out[name] = speechmos_dnsmos(x / 32768.0, sr)
    return out


if __name__ == "__main__":
    import onnxruntime

    print(f"# speechmos.dnsmos.DNSMOS.__call__ (P.808 off), onnxruntime {onnxruntime.__version__}")
    for name, scores in real_pair_reference().items():
        print(f"DNSMOS_SPEECHMOS_{name.upper()} = {scores!r}")
