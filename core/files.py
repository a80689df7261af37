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
    """Call ``write`` on a new temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    Readers see the old file or the whole new one, never a part. The file is readable by all (0644: the service
    may run as another user than the writer). ``suffix`` is the temporary name's ending, for writers that add their
    own (``np.save`` appends ``.npy`` to a name without it). Any failure, ``write``'s included, removes the
    temporary file and leaves ``path`` as it was.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(0o644)  # mkstemp makes it private
        write(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
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
