"""``meanflowse-enhance IN [OUT] --ckpt CKPT`` (or ``python -m meanflowse.enhance``): enhance one
recording, any rate, length and channel count, from anywhere.

It needs no configs folder and no working directory of the repository: the checkpoint holds the
model's config. The output keeps the input's rate, length, channels, format and sample format,
and is written atomically (default: ``IN``'s name with ``_enhanced`` before the suffix). For
folders, resume and metrics use ``eval.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def default_output(src: Path) -> Path:
    return src.with_name(f"{src.stem}_enhanced{src.suffix}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="meanflowse-enhance",
        description="Enhance one recording with a MeanFlowSE checkpoint (one network evaluation by default).",
    )
    parser.add_argument("input", type=Path, help="a noisy recording (wav, flac, ...; any rate and channels)")
    parser.add_argument("output", type=Path, nargs="?", help="where to write (default: IN_enhanced.EXT)")
    parser.add_argument("--ckpt", type=Path, required=True, help="a train.py checkpoint (last.ckpt)")
    parser.add_argument("--nfe", type=int, default=None, help="network evaluations (default: the model's)")
    parser.add_argument("--sampler", default=None, help="euler_mf | euler | heun (default: the model's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    parser.add_argument(
        "--atten-lim-db",
        type=float,
        default=None,
        metavar="L",
        help="mix the input back in L dB down: nothing is taken down by more than L dB (default: off)",
    )
    args = parser.parse_args(argv)

    from meanflowse import load_enhancer
    from meanflowse.data.audio import AudioError, audio_info, load_audio
    from meanflowse.inference.attenuation import limit_attenuation
    from meanflowse.inference.audio_io import write_atomic
    from meanflowse.inference.checkpoint import CheckpointError

    if args.atten_lim_db is not None and not args.atten_lim_db > 0:
        return _fail(f"--atten-lim-db must be a level in dB above 0, got {args.atten_lim_db}")
    out = args.output or default_output(args.input)
    if out.resolve() == args.input.resolve():
        return _fail(f"output {out} is the input; choose another file")
    try:
        info = audio_info(args.input)
        noisy, sr = load_audio(args.input, mono=False)
        enhancer = load_enhancer(args.ckpt, nfe=args.nfe, sampler=args.sampler, device=args.device)
        enhanced = limit_attenuation(noisy, enhancer.enhance(noisy, sample_rate=sr), args.atten_lim_db)
        write_atomic(out, enhanced, sr, format=info.format, subtype=info.subtype)
    except (AudioError, CheckpointError, ValueError, OSError) as err:
        return _fail(str(err))
    limit = "" if args.atten_lim_db is None else f", attenuation limit {args.atten_lim_db:g} dB"
    print(f"{args.input} -> {out} ({enhancer.sampler_name}, NFE {enhancer.steps}{limit})")
    return 0


def _fail(message: str) -> int:
    print(f"meanflowse-enhance: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
