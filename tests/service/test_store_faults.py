"""Store faults with a real Redis: stopped, restarted, slow, flapping. Reads answer 200 (by user_id from the
popularity fallback, marked degraded), writes answer 503 with Retry-After and never half-way, nothing answers
another 5xx, and everything recovers by itself when Redis is back."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.faults import FaultyProxy, RedisServer

logger = logging.getLogger(__name__)
PREFIX = "faults"


def _settings(artifact_root: Path, url: str) -> Settings:
    """Without the history cache: these tests check every read that goes to Redis (a cached history is answered
    from the model while Redis is slow, or until the cache sees its connection go; test_histories.py checks that)."""
    return Settings(
        artifact=artifact_root,
        redis_url=url,
        key_prefix=PREFIX,
        cold_sync_seconds=0,
        redis_timeout_ms=50,
        redis_write_timeout_ms=200,
        history_cache_users=0,
    )


class Tally:
    """Counts answers: sent, 200, degraded, 503, other 5xx; fails on anything else unexpected."""

    def __init__(self, scenario: str) -> None:
        self.scenario, self.counts = scenario, Counter[str]()

    def __call__(self, r: httpx.Response, write: bool = False) -> httpx.Response:
        self.counts["sent"] += 1
        if r.status_code == 200:
            self.counts["200"] += 1
            self.counts["degraded"] += bool(r.json().get("degraded"))
        elif r.status_code == 503 and write:
            assert r.headers["retry-after"] == "1"
            assert "store unavailable" in r.json()["detail"]
            self.counts["503"] += 1
        else:
            self.counts["5xx" if r.status_code >= 500 else "other"] += 1
        return r

    def check(self) -> None:
        logger.info("%s: %s", self.scenario, dict(self.counts))
        assert self.counts["5xx"] == 0, self.counts
        assert self.counts["other"] == 0, self.counts


def _ids(artifact: Path) -> list[str]:
    return json.loads((artifact / "item_ids.json").read_text())  # type: ignore[no-any-return]


def _reads(c: TestClient, tally: Tally, ids: list[str], user: str, store_down: bool) -> None:
    """/recommend and /score by user (degraded iff the store is down) and inline (never degraded)."""
    by_user = tally(c.post("/recommend", json={"user_id": user, "k": 5})).json()
    assert by_user["degraded"] is store_down
    assert len(by_user["items"]) == 5
    if store_down:
        assert by_user["source"] == "popular"
    inline = tally(c.post("/recommend", json={"history": ids[:5], "k": 5})).json()
    assert inline["source"] == "model"
    assert inline["degraded"] is False
    body = {
        "requests": [
            {"history": ids[:3], "item_ids": ids[5:8]},
            {"user_id": user, "item_ids": ids[5:8]},
        ]
    }
    scored = tally(c.post("/score", json=body)).json()
    assert scored["degraded"] is store_down
    assert scored["results"][0]["source"] == "model"


def test_redis_stopped_then_restarted(artifact_root: Path, artifact: Path, tmp_path: Path) -> None:
    ids, server = _ids(artifact), RedisServer(tmp_path)
    server.start()
    tally = Tally("redis stopped")
    try:
        with TestClient(create_app(_settings(artifact_root, server.url))) as c:
            events = {"events": [{"user_id": "u", "item_id": i} for i in ids[:5]]}
            assert tally(c.post("/events", json=events), write=True).status_code == 200
            _reads(c, tally, ids, "u", store_down=False)
            server.stop()
            for _ in range(5):
                _reads(c, tally, ids, "u", store_down=True)
                assert tally(c.post("/events", json=events), write=True).status_code == 503
                item = {"items": [{"item_id": "new-x", "text": "A film"}]}
                assert tally(c.post("/items", json=item), write=True).status_code == 503
                assert c.get("/readyz").status_code == 503
            metrics = c.get("/metrics").text
            assert (
                'rec_degraded_answers_total{reason="unavailable",route="/recommend"} 5.0' in metrics
            )
            assert 'rec_degraded_answers_total{reason="unavailable",route="/score"} 5.0' in metrics
            server.start()  # empty: no persistence
            assert c.get("/readyz").status_code == 200
            assert tally(c.post("/events", json=events), write=True).status_code == 200
            _reads(c, tally, ids, "u", store_down=False)
            assert c.post("/recommend", json={"user_id": "u"}).json()["source"] == "model"
            assert tally(c.post("/items", json=item), write=True).status_code == 200
    finally:
        server.stop()
    tally.check()
    assert tally.counts["503"] == 10
    assert tally.counts["degraded"] == 10


def test_slow_redis_degrades_within_the_timeout_and_recovers(
    artifact_root: Path, artifact: Path, private_redis: RedisServer, redis_proxy: FaultyProxy
) -> None:
    ids, tally = _ids(artifact), Tally("redis slow (300 ms)")
    with TestClient(create_app(_settings(artifact_root, redis_proxy.url))) as c:
        for cycle in range(3):
            user = f"slow-{cycle}"
            events = {"events": [{"user_id": user, "item_id": i} for i in ids[10:16]]}
            assert tally(c.post("/events", json=events), write=True).status_code == 200
            _reads(c, tally, ids, user, store_down=False)
            redis_proxy.delay = 0.3
            t0 = time.perf_counter()
            _reads(c, tally, ids, user, store_down=True)
            assert time.perf_counter() - t0 < 1.0  # three requests, each one read timeout (50 ms)
            assert tally(c.post("/events", json=events), write=True).status_code == 503
            assert c.get("/readyz").status_code == 503
            redis_proxy.delay = 0.0
            time.sleep(0.35)  # the late replies arrive on connections the client has dropped
            # recovered, and no late reply is read as the answer to a newer command
            stored = [
                b.decode() for b in private_redis.client().lrange(f"{PREFIX}:seq:{user}", 0, -1)
            ]
            by_user = tally(c.post("/recommend", json={"user_id": user, "k": 10})).json()
            given = c.post("/recommend", json={"history": stored, "k": 10}).json()
            assert by_user["degraded"] is False
            assert by_user["items"] == given["items"]
            assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
        assert 'rec_degraded_answers_total{reason="timeout",route="/recommend"} 3.0' in metrics
    tally.check()


def test_flapping_redis_never_gives_a_5xx(
    artifact_root: Path, artifact: Path, redis_proxy: FaultyProxy
) -> None:
    ids, tally = _ids(artifact), Tally("redis flapping (connections dropped every 20 ms)")
    with TestClient(create_app(_settings(artifact_root, redis_proxy.url))) as c:
        redis_proxy.start_flapping(0.02)
        try:
            for i in range(60):
                event = {"events": [{"user_id": f"f{i % 3}", "item_id": ids[i]}]}
                tally(c.post("/events", json=event), write=True)
                tally(c.post("/recommend", json={"user_id": f"f{i % 3}", "k": 5}))
                tally(c.post("/score", json={"requests": [{"user_id": "f0", "item_ids": ids[:3]}]}))
        finally:
            redis_proxy.stop_flapping()
        assert tally.counts["degraded"] + tally.counts["503"] > 0, "the flapping was never seen"
        for _ in range(3):  # the first call after the flapping may meet a connection dropped last
            c.post("/recommend", json={"user_id": "f0"})
        assert c.post("/recommend", json={"user_id": "f0"}).json()["degraded"] is False
        assert c.post("/events", json=event).status_code == 200
    tally.check()


def test_every_acknowledged_event_survives_a_redis_restart(
    artifact_root: Path, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path, durable=True)
    server.start()
    tally, answers = Tally("events while redis is killed and restarted twice"), {}
    done = threading.Event()

    def bounce() -> None:
        for _ in range(2):
            time.sleep(0.3)
            server.stop()
            time.sleep(0.3)
            server.start()
        done.set()

    try:
        with TestClient(create_app(_settings(artifact_root, server.url))) as c:
            bouncer = threading.Thread(target=bounce)
            bouncer.start()
            i = 0
            while not done.is_set() or i < 50:
                # three events of one user per request: stored together or not at all
                events = [{"user_id": f"user-{i}", "item_id": f"item-{i}-{j}"} for j in range(3)]
                r = tally(c.post("/events", json={"events": events}), write=True)
                answers[i] = r.status_code
                i += 1
            bouncer.join()
        client = server.client()
        stream = {
            (f[b"user_id"].decode(), f[b"item_id"].decode())
            for _, f in client.xrange(f"{PREFIX}:events", "-", "+")
        }
        for i, status in answers.items():
            expected = [f"item-{i}-{j}" for j in range(3)]
            stored = [b.decode() for b in client.lrange(f"{PREFIX}:seq:user-{i}", 0, -1)]
            in_stream = [(f"user-{i}", item) in stream for item in expected]
            if status == 200:
                assert stored == expected, (i, stored)
                assert all(in_stream), (i, in_stream)
            else:  # not acknowledged: absent, or (EXEC ran, its reply was lost) all there
                assert stored in ([], expected), (i, stored)
                assert len(set(in_stream)) == 1, (i, in_stream)
    finally:
        server.stop()
    tally.check()
    assert tally.counts["200"] > 0, tally.counts
    assert tally.counts["503"] > 0, tally.counts
