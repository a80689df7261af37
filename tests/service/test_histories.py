"""The history cache: exact through Redis's invalidation messages, and empty whenever they cannot arrive."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis.exceptions import ResponseError

import service.histories
from service.app import create_app
from service.histories import HistoryCache
from service.settings import Settings
from service.store import Event, RedisStore

from .faults import FaultyProxy, RedisServer

PING = 0.1  # the listener's PING period in these tests: silent for 3 of them and the cache goes off


def _cached_store(url: str) -> RedisStore:
    store = RedisStore.from_url(url, "p", read_timeout=0.5, write_timeout=0.5, history_cache=100)
    assert store.histories.listener is not None
    store.histories.listener.ping_seconds = PING
    store.histories.listener.retry_seconds = PING
    return store


def _run(url: str, check: Callable[[RedisStore, HistoryCache], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        store = _cached_store(url)
        assert store.histories.cache is not None
        try:
            await check(store, store.histories.cache)
        finally:
            await store.close()

    asyncio.run(main())


async def _until(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.01)


async def _live(store: RedisStore, cache: HistoryCache) -> None:
    await store.read_history("nobody", 5)  # the first read starts the listener
    await _until(lambda: cache.live, "the cache receives invalidations")


def test_a_reply_that_may_predate_a_write_is_never_kept() -> None:
    cache = HistoryCache(10)
    assert cache.begin("u") == 0  # not live: nothing is kept
    cache.put("u", 5, ["1"], 0)
    assert cache.get("u", 5) is None

    cache.reset(live=True)
    token = cache.begin("u")
    cache.invalidate(["u"])  # the user's key changed while the read was in flight
    cache.put("u", 5, ["1"], token)
    assert cache.get("u", 5) is None

    first, second = cache.begin("u"), cache.begin("u")
    cache.put("u", 5, ["1"], first)  # a newer read was sent after it: its reply may be older
    assert cache.get("u", 5) is None
    cache.put("u", 5, ["1", "2"], second)
    assert cache.get("u", 5) == ["1", "2"]

    token = cache.begin("v")
    cache.reset(live=True)  # reconnected: every read in flight is forgotten
    cache.put("v", 5, ["9"], token)
    assert cache.get("v", 5) is None


def test_entries_answer_shorter_reads_and_the_least_recently_used_goes_first() -> None:
    cache = HistoryCache(2)
    cache.reset(live=True)
    cache.put("a", 3, ["1", "2", "3"], cache.begin("a"))
    cache.put("b", 3, ["7"], cache.begin("b"))  # fewer than asked for: the whole list
    assert cache.get("a", 2) == ["2", "3"]
    assert cache.get("a", 4) is None  # a longer read than the one cached
    assert cache.get("b", 50) == ["7"]
    assert cache.get("a", 3) == ["1", "2", "3"]  # "b" is now the least recently used
    cache.put("c", 3, [], cache.begin("c"))
    assert cache.get("b", 3) is None
    assert cache.get("c", 3) == []
    assert cache.get("a", 3) is not None
    assert (cache.hits, cache.misses) == (5, 2)


def test_a_cached_user_takes_about_a_kilobyte() -> None:
    """20,000 users with 50 ids each, drawn from 100,000 ten-character ids (as each read decodes them: new strings):
    the figure docs/serving.md gives for the default size."""
    cache = HistoryCache(20_000)
    cache.reset(live=True)
    tracemalloc.start()
    try:
        for u in range(20_000):
            items = [f"B00{(u * 50 + i) % 100_000:07d}".encode().decode() for i in range(50)]
            cache.put(f"user-{u}", 50, items, cache.begin(f"user-{u}"))
        per_user = tracemalloc.get_traced_memory()[0] / len(cache)
    finally:
        tracemalloc.stop()
    assert 500 < per_user < 1_500, per_user


def test_reads_are_cached_and_dropped_when_any_client_writes(private_redis: RedisServer) -> None:
    other = private_redis.client()
    other.rpush("p:seq:u", "1", "2")

    async def check(store: RedisStore, cache: HistoryCache) -> None:
        await _live(store, cache)
        assert await store.read_histories(["u", "v"], 5) == [["1", "2"], []]
        hits = cache.hits
        private_redis.pause()  # the next read cannot have come from Redis
        try:
            assert await store.read_histories(["v", "u"], 5) == [[], ["1", "2"]]
        finally:
            private_redis.resume()
        assert cache.hits == hits + 2

        other.rpush("p:seq:u", "3")  # another replica's write
        other.rpush("p:other", "x")  # not a history: no invalidation
        await _until(lambda: cache.get("u", 5) is None, "the write's invalidation arrives")
        assert (
            cache.invalidations == 1
        )  # "u" dropped; the write to a key outside the histories sent nothing
        assert await store.read_history("u", 5) == ["1", "2", "3"]
        assert cache.get("v", 5) == []

        # this process's own write is read back at once, without waiting for Redis's message
        await store.append_events([Event("u", "4")], keep=10)
        assert await store.read_history("u", 5) == ["1", "2", "3", "4"]

        other.flushdb()  # every key gone: the whole cache goes
        await _until(lambda: len(cache) == 0, "the flush's invalidation arrives")
        assert cache.live
        assert await store.read_history("u", 5) == []

    _run(private_redis.url, check)


def test_a_lost_connection_empties_the_cache_until_it_is_back(
    private_redis: RedisServer, redis_proxy: FaultyProxy
) -> None:
    other = private_redis.client()
    other.rpush("p:seq:u", "1")

    async def check(store: RedisStore, cache: HistoryCache) -> None:
        await _live(store, cache)
        assert await store.read_history("u", 5) == ["1"]
        assert len(cache) == 1  # "u" (the first read, of "nobody", was before the cache was live)
        redis_proxy.refuse = True
        redis_proxy.drop()  # no invalidation can arrive now
        await _until(lambda: not cache.live, "the listener sees its connection go")
        assert len(cache) == 0
        other.rpush("p:seq:u", "2")  # unseen by this process
        redis_proxy.refuse = False
        assert await store.read_history("u", 5) == ["1", "2"]  # from Redis, not from a stale entry
        await _until(lambda: cache.live, "the listener reconnects")
        assert store.histories.listener is not None
        assert store.histories.listener.connections == 2

    _run(redis_proxy.url, check)


def test_a_hung_server_turns_the_cache_off_within_three_pings(private_redis: RedisServer) -> None:
    async def check(store: RedisStore, cache: HistoryCache) -> None:
        await _live(store, cache)
        private_redis.pause()  # the socket stays open, nothing answers
        try:
            t0 = time.monotonic()
            await _until(lambda: not cache.live, "the watchdog drops the silent connection")
            assert time.monotonic() - t0 < 3 * PING + 1.0
            assert len(cache) == 0
        finally:
            private_redis.resume()
        await _until(lambda: cache.live, "the listener reconnects")

    _run(private_redis.url, check)


def test_a_server_without_tracking_gets_every_read(
    private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    call = service.histories._call

    async def no_tracking(conn: Any, timeout: float, *args: Any) -> Any:
        if "TRACKING" in args:
            raise ResponseError("unknown subcommand 'TRACKING'")
        return await call(conn, timeout, *args)

    monkeypatch.setattr(service.histories, "_call", no_tracking)
    other = private_redis.client()

    async def check(store: RedisStore, cache: HistoryCache) -> None:
        for i in range(3):
            other.rpush("p:seq:u", str(i))
            assert await store.read_history("u", 5) == [str(j) for j in range(i + 1)]
            await asyncio.sleep(3 * PING)
        assert not cache.live
        assert len(cache) == 0
        assert cache.hits == 0

    with caplog.at_level(logging.WARNING, logger="service.histories"):
        _run(private_redis.url, check)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "TRACKING" in warnings[0]


def test_the_service_answers_cached_users_like_stored_ones_and_counts_hits(
    settings: Settings, artifact: Path
) -> None:
    ids = json.loads((artifact / "item_ids.json").read_text())
    with TestClient(create_app(settings)) as c:
        c.post("/recommend", json={"user_id": "nobody"})  # starts the listener
        deadline = time.monotonic() + 10
        while "rec_history_cache_live 1.0" not in c.get("/metrics").text:
            assert time.monotonic() < deadline, "the cache never received invalidations"
            time.sleep(0.02)
        events = {"events": [{"user_id": "u", "item_id": i} for i in ids[:5]]}
        assert c.post("/events", json=events).status_code == 200
        given = c.post("/recommend", json={"history": ids[:5]}).json()["items"]
        for _ in range(3):  # a miss, then two hits
            assert c.post("/recommend", json={"user_id": "u"}).json()["items"] == given
        more = {"events": [{"user_id": "u", "item_id": ids[5]}]}
        assert c.post("/events", json=more).status_code == 200  # read back at once
        given = c.post("/recommend", json={"history": ids[:6]}).json()["items"]
        assert c.post("/recommend", json={"user_id": "u"}).json()["items"] == given
        metrics = c.get("/metrics").text
    assert 'rec_history_cache_lookups_total{result="hit"} 2.0' in metrics
    assert (
        'rec_history_cache_lookups_total{result="miss"} 3.0' in metrics
    )  # nobody, u, u after its event
