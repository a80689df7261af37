"""Offline trainer: data, language embeddings, sequence encoders, evaluation, CLI."""
