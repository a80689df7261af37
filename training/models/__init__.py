"""Sequence encoders: one model, one file."""
