"""MeanFlowSE: one-step generative speech enhancement with MeanFlow (average-velocity flow)."""

__version__ = "0.1.0"

# The YAML groups name typed schemas (`schema/<key>` in Hydra's ConfigStore); registering them
# on import means `import meanflowse` is all a notebook needs before `hydra.compose("train")`.
from meanflowse import config as _config  # noqa: E402,F401  (imported for its registration)


def load_enhancer(ckpt_path, **kwargs):
    """An :class:`~meanflowse.inference.enhancer.Enhancer` for a train.py checkpoint (EMA weights,
    its own sampler; ``device="auto"``, ``nfe``, ``sampler``, ``batch_size`` ... as keywords)::

        import meanflowse, soundfile as sf, torch
        enhancer = meanflowse.load_enhancer("outputs/demo/checkpoints/last.ckpt")
        noisy, sr = sf.read("noisy.wav", dtype="float32", always_2d=True)
        clean = enhancer.enhance(torch.from_numpy(noisy.T), sample_rate=sr)
        sf.write("enhanced.wav", clean.T.numpy(), sr)
    """
    from meanflowse.inference.enhancer import Enhancer

    return Enhancer.from_checkpoint(ckpt_path, **kwargs)
