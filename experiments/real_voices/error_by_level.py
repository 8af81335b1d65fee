"""How precise is a model where the speech is loud, and where it is quiet? The clean recording's
STFT bins are grouped by their level below the file's loudest bin; in each group this prints the
output's level against the clean one, and the error of the output and of the noisy input, both
relative to the clean energy of that group (dB). A model that only removes noise has a smaller
error than its input in every group; one whose own error floor sits above the noise loses there.

    python experiments/real_voices/error_by_level.py MIX_DIR ENHANCED_DIR [--snr 20]

MIX_DIR and ENHANCED_DIR as for estoi_bands.py (check.py's mixes, and a tag's outputs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import stft

GROUPS_DB = [(-20, 0), (-30, -20), (-40, -30), (-50, -40), (-60, -50)]  # clean bin level re peak


def _spec(x: np.ndarray, fs: int) -> np.ndarray:
    return stft(x, fs, nperseg=512, noverlap=384)[2]


def level_table(clean: np.ndarray, noisy: np.ndarray, enhanced: np.ndarray, fs: int) -> np.ndarray:
    """Rows per group of ``GROUPS_DB``: output level re clean, output error, input error (dB)."""
    c, y, e = (_spec(s, fs) for s in (clean, noisy, enhanced))
    power = np.abs(c) ** 2
    level = 10 * np.log10(power / power.max() + 1e-20)
    rows = []
    for low, high in GROUPS_DB:
        group = (level >= low) & (level < high)
        energy = power[group].sum()
        rows.append(
            [
                10 * np.log10(np.sum(np.abs(s[group] - ref) ** 2) / energy)
                for s, ref in ((e, 0), (e, c[group]), (y, c[group]))
            ]
        )
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mix_dir", type=Path)
    parser.add_argument("enhanced_dir", type=Path)
    parser.add_argument("--snr", type=int, default=20)
    args = parser.parse_args()

    files = sorted(args.enhanced_dir.glob(f"snr{args.snr:02d}_*.wav"))
    if not files:
        raise SystemExit(f"error_by_level.py: no snr{args.snr:02d}_*.wav in {args.enhanced_dir}")
    tables = []
    for path in files:
        clean, fs = sf.read(args.mix_dir / "clean" / path.name)
        noisy, _ = sf.read(args.mix_dir / "noisy" / path.name)
        enhanced, _ = sf.read(path)
        n = min(len(clean), len(enhanced))
        tables.append(level_table(clean[:n], noisy[:n], enhanced[:n], fs))
    mean = np.mean(tables, axis=0)  # per-file dB values, averaged over the files
    print(f"{len(files)} files at {args.snr} dB; dB relative to the clean energy of each group")
    print("| clean bin level re peak (dB) | output level | output error | noisy input error |")
    print("|---|---|---|---|")
    for (low, high), (out_level, out_err, in_err) in zip(GROUPS_DB, mean):
        print(f"| {low} to {high} | {out_level:+.2f} | {out_err:+.2f} | {in_err:+.2f} |")


if __name__ == "__main__":
    main()
