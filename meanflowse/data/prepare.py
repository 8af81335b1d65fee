"""Check a paired folder dataset and fill its resample cache, without training.

    python -m meanflowse.data.prepare data.base_dir=/data/vbd [data.sample_rate=16000]
        [data.cache_dir=...] [data.length_tolerance_s=0.02] [data.spec.n_fft=510]
        [data.limit_files=N]

Keys take the ``data.`` prefix of the training config (it may be left out). Prints a summary per
split; exits with status 1 and the full list of problems when the dataset has any.
"""

from __future__ import annotations

import logging
import sys

from meanflowse.data.folder import (
    DEFAULT_LENGTH_TOLERANCE_S,
    DEFAULT_MIN_SAMPLES,
    SPLITS,
    DatasetError,
)
from meanflowse.data.folder_cache import cache_path, prepare_dataset

_KEYS = {
    "base_dir": str,
    "sample_rate": int,
    "cache_dir": str,
    "length_tolerance_s": float,
    "spec.n_fft": int,
    "limit_files": int,
}


def parse_args(argv: list[str]) -> dict:
    args = {
        "sample_rate": 16000,
        "cache_dir": None,
        "length_tolerance_s": DEFAULT_LENGTH_TOLERANCE_S,
        "spec.n_fft": DEFAULT_MIN_SAMPLES,
        "limit_files": None,
    }
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.removeprefix("data.")
        if not sep or key not in _KEYS:
            raise SystemExit(
                f"unknown argument {arg!r}; expected key=value with keys "
                f"{', '.join('data.' + k for k in _KEYS)}\n\n{__doc__}"
            )
        try:
            args[key] = None if value.lower() in ("null", "none", "") else _KEYS[key](value)
        except ValueError:
            raise SystemExit(f"{arg!r}: data.{key} must be {_KEYS[key].__name__}") from None
    if not args.get("base_dir"):
        raise SystemExit(f"data.base_dir=... is required\n\n{__doc__}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        splits = prepare_dataset(
            args["base_dir"],
            splits=SPLITS,
            sample_rate=args["sample_rate"],
            min_samples=args["spec.n_fft"],
            length_tolerance_s=args["length_tolerance_s"],
            cache_dir=args["cache_dir"],
            limit=args["limit_files"],
        )
    except DatasetError as err:
        print(f"\n{len(err.problems)} problem(s):", file=sys.stderr)
        print("\n".join(f"  - {p}" for p in err.problems), file=sys.stderr)
        return 1
    sr = args["sample_rate"]
    print(f"{args['base_dir']} at {sr} Hz, cache {cache_path(args['base_dir'], sr, args['cache_dir'])}")
    for split, pairs in splits.items():
        hours = sum(p.length for p in pairs) / sr / 3600
        resampled = sum(p.noisy != p.noisy_source for p in pairs)
        clean = "with clean" if pairs and pairs[0].clean is not None else "noisy only"
        print(
            f"  {split:<6} {len(pairs):>7} pairs {hours:8.2f} h  {clean}, "
            f"{resampled} noisy file(s) read from the cache"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
