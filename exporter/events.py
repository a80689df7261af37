"""The service's event stream as training data: ``<prefix>:events`` in Redis -> a canonical interaction log.

The service appends every ``POST /events`` interaction to the stream (``service.store``); this writes it as the CSV
the trainer's canonical reader takes (``user_id,item_id,timestamp``, oldest first), so the next model trains on
what was served. Written to a temporary file in the same folder and renamed: an interrupted dump leaves nothing.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

from service.store import RedisStore

__all__ = ["dump_events"]


async def dump_events(redis_url: str, prefix: str, out: Path) -> int:
    """Write every event under ``prefix`` to ``out``; returns how many. An empty stream is an error."""
    store = RedisStore.from_url(redis_url, prefix)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["user_id", "item_id", "timestamp"])
            async for page in store.iter_events():
                writer.writerows((e.user_id, e.item_id, repr(e.timestamp)) for e in page)
                count += len(page)
        if count == 0:
            raise ValueError(f"no events in the Redis stream {prefix}:events at {redis_url}")
        Path(tmp).replace(out)
    finally:
        Path(tmp).unlink(missing_ok=True)
        await store.close()
    return count
