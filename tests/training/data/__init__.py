"""Tests for training.data."""
