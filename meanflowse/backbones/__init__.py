"""Score/velocity backbones. Every backbone follows one contract:

``forward(x_t, y, t, d) -> u`` with ``x_t, y, u`` real ``[B, 2, F, T]`` (Re, Im of complex
spectrograms) and ``t, d = t - r`` of shape ``[B]``; the attribute ``frame_multiple`` says what
``F`` and ``T`` must be divisible by (pad with :func:`meanflowse.method.stft.pad_frames`).
"""

from .dcunet import DCUNet
from .ncsnpp import NCSNpp

__all__ = ["DCUNet", "NCSNpp"]
