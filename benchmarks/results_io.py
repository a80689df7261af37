"""Results files of the benchmarks: read a resumable list of runs, write JSON atomically (temp file + rename)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["load_records", "save_json"]


def load_records(path: Path) -> list[dict[str, Any]]:
    """The runs already recorded in ``path`` (a JSON list), or none when it does not exist yet."""
    return json.loads(path.read_text()) if path.exists() else []


def save_json(path: Path, payload: Any, indent: int = 1) -> None:
    """Write ``payload`` to ``path`` so that an interrupted benchmark never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=indent) + "\n")
    tmp.replace(path)
