"""Training: the LightningModule, the ``train(cfg)`` entry, checkpoints, EMA, validation."""
