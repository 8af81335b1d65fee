"""Where does a model lose against its noisy input, at one SNR of check.py's real-voice mixes?

1. ESTOI by band. ESTOI is a sum over its 15 one-third-octave bands (centred from 150 Hz to 3.8 kHz):
   after the row and column normalisation of each 384 ms segment the score is the mean over
   segments of the summed products, so each band's share of the products is its part of the score;
   the parts add up to pystoi's ESTOI exactly. Printed for the noisy mixes and the outputs, and the
   two scores per noise kind.
2. Error by level. The clean recording's STFT bins are grouped by their level below the file's
   loudest bin; per group, the output's level against the clean one, and the error of the output
   and of the noisy input, both relative to the clean energy of the group (dB). A model that only
   removes noise has a smaller error than its input in every group; one whose own error floor
   sits above the noise loses there.

    python experiments/real_voices/where_it_loses.py MIX_DIR ENHANCED_DIR [--snr 20]

MIX_DIR: check.py's mixes (clean/ and noisy/ with the same names, outputs/real_voices/mixes);
ENHANCED_DIR: a check.py tag's folder (outputs/real_voices/TAG), whose snrNN_* files are the
model's outputs.
"""

from __future__ import annotations

import argparse
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
from pystoi import utils

# pystoi's own constants, so the parts add up to what meanflowse.metrics.scores.estoi reports
from pystoi.stoi import DYN_RANGE, FS, N_FRAME, NFFT, OBM, N
from scipy.signal import stft

from meanflowse.data.real_mixes import mix_name
from meanflowse.data.signals import NOISE_KINDS

BAND_HZ = 150.0 * 2.0 ** (np.arange(OBM.shape[0]) / 3.0)  # the ESTOI bands' centre frequencies
GROUPS_DB = [(-20, 0), (-30, -20), (-40, -30), (-50, -40), (-60, -50)]  # clean bin level re peak


def band_parts(clean: np.ndarray, est: np.ndarray, fs: int) -> np.ndarray:
    """Each one-third-octave band's part of ESTOI(clean, est); they sum to the score."""
    x, y = utils.resample_oct(clean, FS, fs), utils.resample_oct(est, FS, fs)
    x, y = utils.remove_silent_frames(x, y, DYN_RANGE, N_FRAME, N_FRAME // 2)
    if len(x) < N_FRAME * (N + 1) // 2:  # pystoi returns 1e-5 for fewer than N frames of speech
        raise ValueError(f"too little speech for ESTOI's {N}-frame segments after silent-frame removal")
    envelopes = []
    for s in (x, y):
        spec = utils.stft(s, N_FRAME, NFFT, overlap=2).transpose()
        bands = np.sqrt(OBM @ np.abs(spec) ** 2)
        segments = np.array([bands[:, m - N : m] for m in range(N, bands.shape[1] + 1)])
        envelopes.append(utils.row_col_normalize(segments))
    products = envelopes[0] * envelopes[1]  # (segments, bands, frames)
    return products.sum(axis=(0, 2)) / (N * products.shape[0])


def _spec(x: np.ndarray, fs: int) -> np.ndarray:
    return stft(x, fs, nperseg=512, noverlap=384)[2]


def level_table(clean: np.ndarray, noisy: np.ndarray, enhanced: np.ndarray, fs: int) -> np.ndarray:
    """Rows per group of ``GROUPS_DB``: output level re clean, output error, input error (dB)."""
    c, y, e = (_spec(s, fs) for s in (clean, noisy, enhanced))
    power = np.abs(c) ** 2
    level = 10 * np.log10(power / power.max() + 1e-20)
    rows = []
    for low, high in GROUPS_DB:
        group = (level >= low) & ((level < high) if high < 0 else (level <= high))  # 0 dB: the peak bin
        energy = power[group].sum()
        if energy == 0:
            rows.append([np.nan] * 3)
            continue
        rows.append(
            [
                10 * np.log10(np.sum(np.abs(s[group] - ref) ** 2) / energy)
                for s, ref in ((e, 0), (e, c[group]), (y, c[group]))
            ]
        )
    return np.array(rows)


def average_levels(levels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the mean of the files' ``level_table`` rows over the files that have bins in it
    (a file whose clean speech never reaches a level has a NaN row there), and that count."""
    stacked = np.array(levels)  # [files, groups, 3]
    with warnings.catch_warnings():  # a group no file reaches stays NaN ("Mean of empty slice")
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(stacked, axis=0)
    return means, (~np.isnan(stacked[:, :, 0])).sum(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mix_dir", type=Path)
    parser.add_argument("enhanced_dir", type=Path)
    parser.add_argument("--snr", type=int, default=20)
    args = parser.parse_args()

    files = {kind: sorted(args.enhanced_dir.glob(mix_name(args.snr, kind, "*"))) for kind in NOISE_KINDS}
    if not any(files.values()):
        raise SystemExit(f"where_it_loses.py: no {mix_name(args.snr, '*', '*')} in {args.enhanced_dir}")
    parts, levels, by_kind = {"noisy": [], "enhanced": []}, [], defaultdict(list)
    for kind, path in ((kind, path) for kind, paths in files.items() for path in paths):
        clean, fs = sf.read(args.mix_dir / "clean" / path.name)
        noisy, _ = sf.read(args.mix_dir / "noisy" / path.name)
        enhanced, _ = sf.read(path)
        n = min(len(clean), len(enhanced))  # eval.py's output has the input's length; be safe
        clean, noisy, enhanced = clean[:n], noisy[:n], enhanced[:n]
        parts["noisy"].append(band_parts(clean, noisy, fs))
        parts["enhanced"].append(band_parts(clean, enhanced, fs))
        by_kind[kind].append((parts["noisy"][-1].sum(), parts["enhanced"][-1].sum()))
        levels.append(level_table(clean, noisy, enhanced, fs))

    noisy, enhanced = np.mean(parts["noisy"], axis=0), np.mean(parts["enhanced"], axis=0)
    print(f"ESTOI by band at {args.snr} dB, {len(levels)} files (band parts sum to the score)")
    print("| band (Hz) | " + " | ".join(f"{f:.0f}" for f in BAND_HZ) + " | ESTOI |")
    print("|---" * (len(BAND_HZ) + 2) + "|")
    for name, row in (("noisy", noisy), ("enhanced", enhanced), ("change", enhanced - noisy)):
        fmt = "{:+.4f}" if name == "change" else "{:.4f}"
        print(f"| {name} | " + " | ".join(fmt.format(v) for v in row) + " | " + fmt.format(row.sum()) + " |")
    print("\n| noise | noisy ESTOI | enhanced ESTOI |\n|---|---|---|")
    for kind, pairs in sorted(by_kind.items()):
        pairs = np.array(pairs)
        print(f"| {kind} | {pairs[:, 0].mean():.3f} | {pairs[:, 1].mean():.3f} |")
    print("\nError by level (dB relative to the clean energy of each group; per-file values averaged)")
    print("| clean bin level re peak (dB) | output level | output error | noisy input error | files |")
    print("|---|---|---|---|---|")
    means, counts = average_levels(levels)
    for (low, high), (out_level, out_err, in_err), count in zip(GROUPS_DB, means, counts):
        print(f"| {low} to {high} | {out_level:+.2f} | {out_err:+.2f} | {in_err:+.2f} | {count} |")


if __name__ == "__main__":
    main()
