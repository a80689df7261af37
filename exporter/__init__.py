"""Exporter: a training run -> an immutable, versioned serving artifact (the contract: ``core.artifact``)."""
