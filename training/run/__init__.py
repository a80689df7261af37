"""A training run: model construction, the run directory, the training loop, checkpoints."""
