"""A short soak (the long one is ``benchmarks/faults.py``'s): open-loop load on the real app on a real port for a few
seconds, with reads and event writes; no answer but 200, and the store grows by what the events explain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from benchmarks.loadgen import run
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import serving


@pytest.fixture
def port(settings: Settings) -> Iterator[int]:
    # reads wait up to 1 s: a busy CI machine may not answer within the default 50 ms, and this test is about errors
    app = create_app(settings.model_copy(update={"redis_timeout_ms": 1000}))
    with serving(app) as port:
        yield port


def _mix(ids: list[str], users: int) -> list[dict[str, Any]]:
    """Per user: one event (a new user each), a /recommend by that user, one by history, one /score."""
    out = []
    for u in range(users):
        event = {"events": [{"user_id": f"soak-{u}", "item_id": ids[u % len(ids)]}]}
        score = {"requests": [{"user_id": f"soak-{u}", "item_ids": ids[:20]}]}
        out += [
            {"path": "/events", "body": event},
            {"path": "/recommend", "body": {"user_id": f"soak-{u}", "k": 10}},
            {"path": "/recommend", "body": {"history": ids[u % 50 : u % 50 + 10], "k": 10}},
            {"path": "/score", "body": score},
        ]
    return out


def test_a_short_soak_answers_everything_and_grows_the_store_by_the_events(
    port: int, artifact: Path, redis_url: str, key_prefix: str
) -> None:
    ids: list[str] = json.loads((artifact / "item_ids.json").read_text())
    client = redis.Redis.from_url(redis_url)
    before = len(list(client.scan_iter(f"{key_prefix}:*")))
    spec = {"host": "127.0.0.1", "port": port, "mode": "open", "rate": 80, "connections": 8}
    out = run({**spec, "duration": 8.0, "window": 4.0, "requests": _mix(ids, users=100)})
    assert out["requests"] == 640
    assert out["status"] == {"200": 640}, out["status"]
    assert out["connection_errors"] == 0
    assert out["degraded"] == 0
    events = out["by_path"]["/events"]["status"]["200"]  # 160: each of the 100 users, then 60 again
    assert client.xlen(f"{key_prefix}:events") == events
    after = {k.decode() for k in client.scan_iter(f"{key_prefix}:*")}
    new_sequences = {k for k in after if k.startswith(f"{key_prefix}:seq:soak-")}
    assert len(new_sequences) == min(events, 100)
    # besides the sequences: the stream and the recent-popularity keys, nothing per request
    assert len(after) - len(new_sequences) - before <= 3, sorted(after - new_sequences)
    assert all(w["errors"] == 0 for w in out["windows"])
