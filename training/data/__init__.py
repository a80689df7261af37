"""Readers for every supported input format, filters and splits."""
