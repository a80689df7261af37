"""Exporter: a training run -> an immutable, versioned serving artifact (DESIGN.md §5)."""
