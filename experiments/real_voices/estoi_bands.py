"""Where does a model lose ESTOI? ESTOI is a sum over its 15 one-third-octave bands (150 Hz to
4.3 kHz at 10 kHz): after the row and column normalisation of each 384 ms segment, the score is
the mean over segments of the summed products, so each band's share of the products is its part
of the score, and the parts add up to pystoi's ESTOI exactly. This prints each band's part for the
noisy mixes and for a model's outputs at one SNR, and the two scores per noise kind.

    python experiments/real_voices/estoi_bands.py MIX_DIR ENHANCED_DIR [--snr 20]

MIX_DIR: check.py's mixes (clean/ and noisy/ with the same names); ENHANCED_DIR: a check.py tag's
folder (outputs/real_voices/TAG), whose snrNN_* files are the model's outputs.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
from pystoi import utils

# pystoi's own constants, so the parts add up to what meanflowse.metrics.scores.estoi reports
from pystoi.stoi import DYN_RANGE, FS, N_FRAME, NFFT, OBM, N

BAND_HZ = 150.0 * 2.0 ** (np.arange(OBM.shape[0]) / 3.0)  # the bands' centre frequencies


def band_parts(clean: np.ndarray, est: np.ndarray, fs: int) -> np.ndarray:
    """Each one-third-octave band's part of ESTOI(clean, est); they sum to the score."""
    x, y = utils.resample_oct(clean, FS, fs), utils.resample_oct(est, FS, fs)
    x, y = utils.remove_silent_frames(x, y, DYN_RANGE, N_FRAME, N_FRAME // 2)
    envelopes = []
    for s in (x, y):
        spec = utils.stft(s, N_FRAME, NFFT, overlap=2).transpose()
        bands = np.sqrt(OBM @ np.abs(spec) ** 2)
        segments = np.array([bands[:, m - N : m] for m in range(N, bands.shape[1] + 1)])
        envelopes.append(utils.row_col_normalize(segments))
    products = envelopes[0] * envelopes[1]  # (segments, bands, frames)
    return products.sum(axis=(0, 2)) / (N * products.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mix_dir", type=Path)
    parser.add_argument("enhanced_dir", type=Path)
    parser.add_argument("--snr", type=int, default=20)
    args = parser.parse_args()

    files = sorted(args.enhanced_dir.glob(f"snr{args.snr:02d}_*.wav"))
    if not files:
        raise SystemExit(f"estoi_bands.py: no snr{args.snr:02d}_*.wav in {args.enhanced_dir}")
    parts = {"noisy": [], "enhanced": []}
    by_kind = defaultdict(list)
    for path in files:
        clean, fs = sf.read(args.mix_dir / "clean" / path.name)
        noisy, _ = sf.read(args.mix_dir / "noisy" / path.name)
        enhanced, _ = sf.read(path)
        n = min(len(clean), len(enhanced))  # eval.py's output has the input's length; be safe
        noisy_parts, enhanced_parts = (
            band_parts(clean[:n], noisy[:n], fs),
            band_parts(clean[:n], enhanced[:n], fs),
        )
        parts["noisy"].append(noisy_parts)
        parts["enhanced"].append(enhanced_parts)
        by_kind[path.stem.split("_")[1]].append((noisy_parts.sum(), enhanced_parts.sum()))

    noisy, enhanced = np.mean(parts["noisy"], axis=0), np.mean(parts["enhanced"], axis=0)
    print(f"ESTOI by band at {args.snr} dB, {len(files)} files (band parts sum to the score)")
    print("| band (Hz) | " + " | ".join(f"{f:.0f}" for f in BAND_HZ) + " | ESTOI |")
    print("|---" * (len(BAND_HZ) + 2) + "|")
    for name, row in (("noisy", noisy), ("enhanced", enhanced), ("change", enhanced - noisy)):
        fmt = "{:+.4f}" if name == "change" else "{:.4f}"
        print(f"| {name} | " + " | ".join(fmt.format(v) for v in row) + " | " + fmt.format(row.sum()) + " |")
    print("\n| noise | noisy ESTOI | enhanced ESTOI |\n|---|---|---|")
    for kind, pairs in sorted(by_kind.items()):
        pairs = np.array(pairs)
        print(f"| {kind} | {pairs[:, 0].mean():.3f} | {pairs[:, 1].mean():.3f} |")


if __name__ == "__main__":
    main()
