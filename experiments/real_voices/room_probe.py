"""Does a model keep a room's sound, or strip it? Clean speech with no noise, dry and in synthetic
rooms, is enhanced in one step and compared with its own input (SI-SDR, ESTOI): a model that
leaves good speech alone returns it unchanged whatever the room.

    python experiments/real_voices/room_probe.py CKPT DATA_DIR [--files 6]

DATA_DIR: a generated corpus (its test/clean voices: eSpeak, unseen in training). The shared real
recording (../shared/data/real/speech.wav, which has its own room) is one more row when present.
Rooms: meanflowse.data.signals.room_response (direct path, diffuse exponential tail), one fixed
draw per file and room.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOMS = [(None, None), (0.3, 6.0), (0.5, 3.0)]  # (RT60 s, direct-to-reverberant dB); None: dry
REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "speech.wav"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt")
    parser.add_argument("data_dir")
    parser.add_argument("--files", type=int, default=6)
    args = parser.parse_args()

    import meanflowse
    from meanflowse.data.signals import reverberate, room_response
    from meanflowse.metrics.scores import estoi, si_sdr

    enhancer = meanflowse.load_enhancer(args.ckpt, device="cpu")
    files = sorted(Path(args.data_dir, "test", "clean").glob("*.wav"))[: args.files]
    print(f"| room | test voices ({len(files)}): SI-SDR dB / ESTOI | real recording |\n|---|---|---|")
    for rt60, drr in ROOMS:
        cells = []
        for group in (files, [REAL] if REAL.is_file() else []):
            scores = []
            for i, path in enumerate(group):
                x, sr = sf.read(path, dtype="float32")
                if rt60:
                    h = room_response(np.random.default_rng(i), sr, rt60, drr)
                    x = reverberate(x, h).astype(np.float32)
                x = x / np.abs(x).max() * 0.5
                out = enhancer.enhance(torch.from_numpy(x)[None], sample_rate=sr)[0].numpy()
                scores.append((si_sdr(x, out), estoi(x, out, sr)))
            mean = np.mean(scores, axis=0) if scores else None
            cells.append(f"{mean[0]:.1f} / {mean[1]:.3f}" if scores else "—")
        room = "dry" if rt60 is None else f"RT60 {rt60} s, DRR {drr} dB"
        print(f"| {room} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
