"""Sweeps: one job trains, then evaluates at several NFEs (``job``); ``gather`` tabulates a multirun."""
