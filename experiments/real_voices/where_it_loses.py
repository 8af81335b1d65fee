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
3. Gain by frame level. The clean recording's frames are classed by their level below the file's
   loudest frame (loud, mid, quiet); per class and band, the median over frames of the output's
   band energy against the clean one (dB), and the noisy input's, over all mixes and per noise
   kind for the mid frames. A model that gates weak speech shows it here, even for a noise kind
   that leaves the band clean.
4. What would fix it: ESTOI with the output's band energy set to the clean one's in each frame of
   one class (an oracle; the phase and the bins' shape within a band stay the output's).

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
FRAME_CLASSES = {"loud": (-10, 0), "mid": (-25, -10), "quiet": (-np.inf, -25)}  # frame level re loudest
FRAME_BANDS_HZ = (0, 300, 800, 1500, 2500, 4300)  # 4.3 kHz: ESTOI's top band edge


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


STFT_ARGS = {"nperseg": 512, "noverlap": 384}  # every STFT here, and the oracle's inverse


def _spec(x: np.ndarray, fs: int) -> np.ndarray:
    return stft(x, fs, **STFT_ARGS)[2]


def _in_range(level: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low <= level < high``, with the top (0 dB, the loudest bin or frame) included."""
    return (level >= low) & ((level < high) if high < 0 else (level <= high))


def level_table(clean: np.ndarray, noisy: np.ndarray, enhanced: np.ndarray, fs: int) -> np.ndarray:
    """Rows per group of ``GROUPS_DB``: output level re clean, output error, input error (dB)."""
    c, y, e = (_spec(s, fs) for s in (clean, noisy, enhanced))
    power = np.abs(c) ** 2
    level = 10 * np.log10(power / power.max() + 1e-20)
    rows = []
    for low, high in GROUPS_DB:
        group = _in_range(level, low, high)
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


def _frame_classes(c: np.ndarray) -> dict[str, np.ndarray]:
    """Each class of ``FRAME_CLASSES`` as a mask over the frames of the clean STFT ``c``."""
    level = 10 * np.log10(np.sum(np.abs(c) ** 2, axis=0) + 1e-20)
    level -= level.max()
    return {name: _in_range(level, low, high) for name, (low, high) in FRAME_CLASSES.items()}


def _band_energy(s: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """[bands, frames] energy of STFT ``s`` in the bands of ``FRAME_BANDS_HZ``."""
    edges = FRAME_BANDS_HZ
    return np.array(
        [np.sum(np.abs(s[(freqs >= a) & (freqs < b)]) ** 2, axis=0) for a, b in zip(edges[:-1], edges[1:])]
    )


def frame_gains(clean: np.ndarray, est: np.ndarray, fs: int) -> dict[str, np.ndarray]:
    """Per frame class, ``[frames, bands]``: ``est``'s band energy against ``clean``'s (dB)."""
    freqs, _, c = stft(clean, fs, **STFT_ARGS)
    ratio = _band_energy(_spec(est, fs), freqs) / (_band_energy(c, freqs) + 1e-20)
    gain = 10 * np.log10(ratio + 1e-20).T
    return {name: gain[mask] for name, mask in _frame_classes(c).items()}


ORACLE_SETS = ("none", *FRAME_CLASSES, "all")  # the frames set right, one ESTOI each


def oracle_estoi(clean: np.ndarray, est: np.ndarray, fs: int) -> dict[str, float]:
    """Per set of ``ORACLE_SETS``: ESTOI of ``est`` with its band energy set to the clean one's in
    every frame of that set ("none": ``est`` through an STFT round trip; "all": every frame)."""
    from pystoi import stoi
    from scipy.signal import istft

    freqs, _, c = stft(clean, fs, **STFT_ARGS)
    e = _spec(est, fs)
    gain = np.sqrt((_band_energy(c, freqs) + 1e-20) / (_band_energy(e, freqs) + 1e-20))  # [bands, frames]
    frame_sets = {"none": np.zeros(c.shape[1], bool), **_frame_classes(c), "all": np.ones(c.shape[1], bool)}
    edges = FRAME_BANDS_HZ
    scores = {}
    for name, frames in frame_sets.items():
        fixed = e.copy()
        for band, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            rows = (freqs >= a) & (freqs < b)
            fixed[np.ix_(rows, frames)] *= gain[band, frames]
        wav = istft(fixed, fs, **STFT_ARGS)[1][: len(clean)]
        scores[name] = float(stoi(clean, wav, fs, extended=True))
    return scores


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
    gains = defaultdict(list)  # (signal, class, kind) -> [frames, bands] arrays
    oracle = defaultdict(list)  # set of ORACLE_SETS -> ESTOI per file
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
        for signal, est in (("noisy", noisy), ("enhanced", enhanced)):
            for name, rows in frame_gains(clean, est, fs).items():
                gains[signal, name, kind].append(rows)
        for name, score in oracle_estoi(clean, enhanced, fs).items():
            oracle[name].append(score)

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
    print_frame_gains(gains, sorted(by_kind))
    print("\nESTOI if the output's band energy were the clean one's in the frames of one class (oracle)")
    print("| frames set right | " + " | ".join(ORACLE_SETS) + " | noisy input |")
    print("|---" * (len(ORACLE_SETS) + 2) + "|")
    noisy_estoi = np.mean([pair[0] for pairs in by_kind.values() for pair in pairs])
    cells = [np.mean(oracle[name]) for name in ORACLE_SETS] + [noisy_estoi]
    print("| ESTOI | " + " | ".join(f"{v:.4f}" for v in cells) + " |")


def print_frame_gains(gains: dict, kinds: list[str]) -> None:
    """Median gain (dB re clean) per frame class and band, then per noise kind for mid frames."""
    bands = [f"{a}-{b}" for a, b in zip(FRAME_BANDS_HZ[:-1], FRAME_BANDS_HZ[1:])]

    def median(signal: str, name: str, kind_list: list[str]) -> list[float]:
        """Over every frame of the class in those kinds' files; NaN where there is none."""
        rows = [np.empty((0, len(bands)))] + [r for k in kind_list for r in gains[signal, name, k]]
        stacked = np.concatenate(rows)
        return list(np.median(stacked, axis=0)) if len(stacked) else [np.nan] * len(bands)

    print("\nGain by frame level: median over frames of the band energy re clean (dB), noisy -> enhanced")
    print("| frames (level re loudest) | " + " | ".join(bands) + " |")
    print("|---" * (len(bands) + 1) + "|")
    for name, (low, high) in FRAME_CLASSES.items():
        pairs = zip(median("noisy", name, kinds), median("enhanced", name, kinds))
        print(
            f"| {name} ({low} to {high} dB) | " + " | ".join(f"{a:+.1f} -> {b:+.1f}" for a, b in pairs) + " |"
        )
    print("\n| mid frames, noise | " + " | ".join(bands) + " |")
    print("|---" * (len(bands) + 1) + "|")
    for kind in kinds:
        pairs = zip(median("noisy", "mid", [kind]), median("enhanced", "mid", [kind]))
        print(f"| {kind} | " + " | ".join(f"{a:+.1f} -> {b:+.1f}" for a, b in pairs) + " |")


if __name__ == "__main__":
    main()
