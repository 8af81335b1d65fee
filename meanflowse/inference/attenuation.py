"""An attenuation limit: the noisy input mixed back into the enhanced output ``limit_db`` dB down.

``out = (1 - g) * enhanced + g * noisy`` with ``g = 10^(-limit_db / 20)`` (DeepFilterNet's
``--atten-lim`` works the same way), so nothing the model removed comes back louder than
``limit_db`` under where it was. For recordings that are already good, where a small model can take
more from the voice than it gives (experiments/real_voices: at 15 dB SNR the demo model's ESTOI
is under the input's, and L = 16 dB brings it back above); it costs noise removal everywhere else.
"""

from __future__ import annotations

from typing import TypeVar

Signal = TypeVar("Signal")  # a numpy array or a torch tensor: only arithmetic is used


def limit_attenuation(noisy: Signal, enhanced: Signal, limit_db: float | None) -> Signal:
    """``enhanced`` with ``noisy`` mixed back in ``limit_db`` dB down (None: ``enhanced`` as is)."""
    if limit_db is None:
        return enhanced
    if not limit_db >= 0:
        raise ValueError(f"an attenuation limit is a level in dB >= 0, got {limit_db}")
    g = 10.0 ** (-limit_db / 20.0)
    return (1.0 - g) * enhanced + g * noisy
