"""Shared fixtures: the real datasets in ../shared/data (tests skip cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the real datasets live: $RECSYS_SHARED_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("RECSYS_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "ml-100k").is_dir():
        pytest.skip(f"real datasets not found at {path}")
    return path
