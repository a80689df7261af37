"""The service's event stream as training data: ``<prefix>:events`` in Redis -> a canonical interaction log.

The service appends every ``POST /events`` interaction to the stream (layout: ``core.events``); this writes it as
the CSV the trainer's canonical reader takes (``user_id,item_id,timestamp``, oldest first), so the next model
trains on what was served. Written to a temporary file in the same folder and renamed (``core.files.atomic_write``):
an interrupted dump leaves nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from core.events import EVENT_FIELDS, as_text, decode_event, events_stream
from core.files import atomic_write

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["dump_events"]

PAGE = 10_000


def dump_events(redis_url: str, prefix: str, out: Path, page: int = PAGE) -> int:
    """Write every event under ``prefix`` to ``out``; returns how many. An empty stream is an error."""
    from redis import Redis

    client = Redis.from_url(redis_url)
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(EVENT_FIELDS)
            for events in _pages(client, events_stream(prefix), page):
                writer.writerows((user, item, repr(stamp)) for user, item, stamp in events)
                count += len(events)
        if count == 0:
            raise ValueError(
                f"no events in the Redis stream {events_stream(prefix)} at {redis_url}"
            )

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, write)
    finally:
        client.close()
    return count


def _pages(client: Redis, stream: str, page: int) -> Iterator[list[tuple[str, str, float]]]:
    """The stream's entries, oldest first, ``page`` at a time."""
    start = "-"
    while True:
        entries = client.xrange(stream, min=start, max="+", count=page)
        if not entries:
            return
        yield [decode_event(fields) for _, fields in entries]
        start = "(" + as_text(entries[-1][0])  # exclusive: after the last entry read
