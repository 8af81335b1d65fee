"""Would an attenuation limit meet the real voice's points? Mix some of the noisy input back in.

An attenuation limit (``meanflowse-enhance --atten-lim-db L``, as DeepFilterNet's ``--atten-lim``)
caps how far the input is taken down: ``out = (1 - g) * enhanced + g * noisy`` with
``g = 10^(-L/20)`` (:mod:`meanflowse.inference.attenuation`), so noise the model removed entirely
comes back L dB under where it was, and so does whatever the model took from the speech. This
scores that blend, for several L, on check.py's mixes at the given SNRs and on the
demo's test split, with the same scores as eval.py:

    python experiments/real_voices/blend.py MIX_DIR ENHANCED_DIR DATA_DIR/test TEST_ENHANCED_DIR \
        [--snr 15 20] [--limits 30 24 20 16 12]

MIX_DIR: check.py's mixes (clean/ and noisy/); ENHANCED_DIR: a check.py tag's folder
(outputs/real_voices/TAG); DATA_DIR/test: the corpus's test split (clean/ and noisy/);
TEST_ENHANCED_DIR: eval.py's outputs for it (run.sh's outputs/real_voices/runs/TAG/enhanced).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from meanflowse.data.real_mixes import mix_name
from meanflowse.inference.attenuation import limit_attenuation
from meanflowse.metrics.scores import estoi, pesq_wb, si_sdr


def scores(
    triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], fs: int, limit_db: float | None
) -> np.ndarray:
    """Mean PESQ, ESTOI and SI-SDR over ``(clean, noisy, enhanced)`` of the blend at ``limit_db``."""
    rows = []
    for clean, noisy, enhanced in triples:
        out = limit_attenuation(noisy, enhanced, limit_db)
        rows.append((pesq_wb(clean, out, fs), estoi(clean, out, fs), si_sdr(clean, out)))
    return np.mean(rows, axis=0)


def _triples(
    clean_dir: Path, noisy_dir: Path, outputs: list[Path]
) -> tuple[list[tuple[np.ndarray, ...]], int]:
    """``(clean, noisy, output)`` per output file, and their one sample rate."""
    if not outputs:
        raise SystemExit(f"blend.py: no outputs to score beside {noisy_dir}")
    triples, rates = [], set()
    for out in outputs:
        read = [sf.read(f, dtype="float64") for f in (clean_dir / out.name, noisy_dir / out.name, out)]
        triples.append(tuple(x for x, _ in read))
        rates |= {sr for _, sr in read}
    if len(rates) != 1:
        raise SystemExit(
            f"blend.py: {clean_dir}, {noisy_dir} and the outputs mix sample rates {sorted(rates)}"
        )
    return triples, rates.pop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mix_dir", type=Path)
    parser.add_argument("enhanced_dir", type=Path)
    parser.add_argument("test_dir", type=Path)
    parser.add_argument("test_enhanced_dir", type=Path)
    parser.add_argument("--snr", type=int, nargs="+", default=[15, 20])
    parser.add_argument("--limits", type=float, nargs="+", default=[30, 24, 20, 16, 12])
    args = parser.parse_args()

    sets = {
        f"real voice {snr} dB": _triples(
            args.mix_dir / "clean",
            args.mix_dir / "noisy",
            sorted(args.enhanced_dir.glob(mix_name(snr, "*", "*"))),
        )
        for snr in args.snr
    }
    sets["test split"] = _triples(
        args.test_dir / "clean", args.test_dir / "noisy", sorted(args.test_enhanced_dir.glob("*.wav"))
    )
    print(
        "| set | noisy | " + " | ".join(["no limit", *(f"L = {limit:g} dB" for limit in args.limits)]) + " |"
    )
    print("|---" * (len(args.limits) + 3) + "|")
    for name, (triples, fs) in sets.items():
        noisy = scores([(c, n, n) for c, n, _ in triples], fs, None)
        cells = [scores(triples, fs, limit) for limit in (None, *args.limits)]
        fmt = " / ".join(["{:.3f}", "{:.3f}", "{:.2f}"])
        print(f"| {name} ({len(triples)}) | " + " | ".join(fmt.format(*c) for c in (noisy, *cells)) + " |")


if __name__ == "__main__":
    main()
