"""Inference: the ``Enhancer``, ``eval.py``'s ``evaluate`` with its inputs, reports, provenance and plots."""
