"""Shared numpy-only math and contracts: AlphaFuse, id conventions. Imports no torch."""
