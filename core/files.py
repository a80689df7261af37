"""Files and folders written so that a crash never leaves a half-written one: temp name beside it, then rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "publish_dir", "write_json"]


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """Call ``write`` on a temporary sibling of ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as sorted, indented JSON, atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"

    def write(p: Path) -> None:
        p.write_text(text)

    atomic_write(path, write)


def publish_dir(target: Path, write: Callable[[Path], object], mode: int = 0o755) -> None:
    """Call ``write`` on a new temporary folder beside ``target``, then rename that folder to ``target``.

    The folder is ``.tmp-<target name>-<random>`` in ``target``'s parent (which must exist), with permissions
    ``mode`` (its reader may run as another user). Any failure, ``write``'s included, removes it: ``target``
    appears complete or not at all.

    Raises:
        FileExistsError: ``target`` exists, before or after ``write``; a published folder is never replaced.
    """
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        tmp.chmod(mode)  # mkdtemp makes it private
        write(tmp)
        if target.exists():  # rename(2) would replace an empty folder silently
            raise FileExistsError(f"{target} appeared while it was being written")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
