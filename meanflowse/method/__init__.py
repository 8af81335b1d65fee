"""The method as pure functions: STFT, path, JVP, objectives, curriculum, samplers (method.md)."""
