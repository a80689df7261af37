"""Both history stores behave the same: sequences trimmed, events streamed, new items persisted and replayed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest
import redis

from service.decay import DecayedCounts, PopularityUpdate, update_for
from service.store import Event, HistoryStore, MemoryStore, RedisStore, StoredItem


@pytest.fixture(params=["memory", "redis", "redis, history cache"])
def make_store(request: pytest.FixtureRequest) -> Callable[[], HistoryStore]:
    if request.param == "memory":
        return MemoryStore
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("key_prefix")
    cache = 100 if "cache" in request.param else 0
    return lambda: RedisStore.from_url(url, prefix, history_cache=cache)


def _run(fn: Callable[[HistoryStore], Coroutine[Any, Any, None]], store: HistoryStore) -> None:
    async def main() -> None:
        try:
            await fn(store)
        finally:
            await store.close()

    asyncio.run(main())


def test_sequences_are_appended_in_order_and_trimmed(
    make_store: Callable[[], HistoryStore],
) -> None:
    async def check(store: HistoryStore) -> None:
        assert await store.ping()
        await store.append_events([Event("u", str(i), 1.0 + i) for i in range(7)], keep=5)
        await store.append_events([Event("v", "a"), Event("u", "7")], keep=5)
        assert await store.read_history("u", 50) == ["3", "4", "5", "6", "7"]
        assert await store.read_history("u", 2) == ["6", "7"]
        assert await store.read_history("v", 50) == ["a"]
        assert await store.read_history("nobody", 50) == []

    _run(check, make_store())


def test_items_persist_with_their_embeddings_and_replay_from_a_cursor(
    make_store: Callable[[], HistoryStore],
) -> None:
    emb = np.arange(6, dtype=np.float32).reshape(2, 3)

    async def check(store: HistoryStore) -> None:
        items, cursor = await store.load_items("enc1")
        assert items == []
        await store.save_items(
            [StoredItem("a", "text a", emb[0]), StoredItem("b", "text b")], "enc1"
        )
        items, cursor2 = await store.load_items("enc1")
        by_id = {i.item_id: i for i in items}
        assert by_id["a"].text == "text a"
        assert by_id["b"].embedding is None
        np.testing.assert_array_equal(by_id["a"].embedding, emb[0])
        since, cursor3 = await store.items_since(cursor, "enc1")
        assert [i.item_id for i in since] == ["a", "b"]
        assert (await store.items_since(cursor3, "enc1"))[0] == []
        # another encoder has no cached vectors until they are computed and cached
        assert all(i.embedding is None for i in (await store.load_items("enc2"))[0])
        await store.cache_embeddings(["b"], emb[1:], "enc2")
        b = {i.item_id: i for i in (await store.load_items("enc2"))[0]}["b"]
        np.testing.assert_array_equal(b.embedding, emb[1])
        assert cursor2 == cursor3

    _run(check, make_store())


def test_items_keep_their_attributes_and_a_resave_replaces_them(
    make_store: Callable[[], HistoryStore],
) -> None:
    attrs = {"categories": ["Beauty > Makeup"], "price": 12.5, "available": True}

    async def check(store: HistoryStore) -> None:
        _, cursor = await store.load_items("enc")
        await store.save_items(
            [StoredItem("a", "text a", None, attrs), StoredItem("b", "b")], "enc"
        )
        by_id = {i.item_id: i for i in (await store.load_items("enc"))[0]}
        assert by_id["a"].attributes == attrs
        assert by_id["b"].attributes == {}
        since, cursor = await store.items_since(cursor, "enc")
        assert {i.item_id: i.attributes for i in since} == {"a": attrs, "b": {}}
        await store.save_items([StoredItem("a", "text a")], "enc")  # sent again without attributes
        assert (await store.items_since(cursor, "enc"))[0][0].attributes == {}
        assert {i.item_id: i.attributes for i in (await store.load_items("enc"))[0]}["a"] == {}

    _run(check, make_store())


def test_redis_events_go_to_the_stream_under_the_prefix(redis_url: str, key_prefix: str) -> None:
    async def check(store: HistoryStore) -> None:
        await store.append_events([Event("u", "i1", 12.5), Event("u", "i2")], keep=10)

    _run(check, RedisStore.from_url(redis_url, key_prefix))
    entries = redis.Redis.from_url(redis_url, decode_responses=True).xrange(f"{key_prefix}:events")
    assert [e[1]["item_id"] for e in entries] == ["i1", "i2"]
    assert entries[0][1]["timestamp"] == "12.5"
    assert entries[0][1]["user_id"] == "u"


def test_unreachable_redis_is_not_ready_rather_than_a_crash() -> None:
    async def check(store: HistoryStore) -> None:
        assert await store.ping() is False

    _run(check, RedisStore.from_url("redis://127.0.0.1:1/0", "x"))


def test_the_hidden_set_is_a_hash_of_until_times(make_store: Callable[[], HistoryStore]) -> None:
    async def check(store: HistoryStore) -> None:
        assert await store.load_hidden() == {}
        await store.hide_items({"a": float("inf"), "b": 1234.5})
        await store.hide_items({"b": 99.0})
        assert await store.load_hidden() == {"a": float("inf"), "b": 99.0}
        await store.restore_items(["a", "missing"])
        assert await store.load_hidden() == {"b": 99.0}

    _run(check, make_store())


def test_decayed_counts_add_in_log_space_and_keep_the_most_popular(
    make_store: Callable[[], HistoryStore],
) -> None:
    half_life = 100.0
    now = 1_000_000.0

    def update(*events: tuple[str, float | None], cap: int = 3) -> PopularityUpdate:
        return update_for(events, now, half_life, cap)

    async def check(store: HistoryStore) -> None:
        assert await store.read_popular(10) == DecayedCounts([], None)
        # a: 2 events now; b: 4 events one half-life ago (worth 2 now); c: 1 event in the future (counts as now)
        old = now - half_life
        await store.append_events(
            [Event("u", "a"), Event("u", "b", old)], 5, update(("a", None), ("b", old))
        )
        await store.append_events([], 5, update(("a", now), ("b", old), ("b", old), ("b", old)))
        await store.append_events([], 5, update(("c", now + 1e6)))
        counts = await store.read_popular(10)
        shares = counts.shares()
        assert shares == pytest.approx({"a": 2 / 5, "b": 2 / 5, "c": 1 / 5}, rel=1e-9)
        assert [i for i, _ in counts.items][-1] == "c"
        assert (await store.read_popular(1)).items == counts.items[:1]
        # a fourth item: the set keeps 3, dropping the least popular; the total still counts every event
        await store.append_events([], 5, update(("d", now), ("d", now)))
        shares = (await store.read_popular(10)).shares()
        assert shares == pytest.approx({"a": 2 / 7, "b": 2 / 7, "d": 2 / 7}, rel=1e-9)
        assert await store.read_history("u", 5) == ["a", "b"]

    _run(check, make_store())


def test_histories_of_many_users_are_read_together(make_store: Callable[[], HistoryStore]) -> None:
    async def check(store: HistoryStore) -> None:
        await store.append_events([Event("u", "1"), Event("v", "2"), Event("u", "3")], keep=5)
        assert await store.read_histories(["u", "nobody", "v", "u"], 1) == [["3"], [], ["2"], ["3"]]
        assert await store.read_histories(["u"], 5) == [["1", "3"]]  # one user: one plain read
        assert await store.read_histories([], 5) == []

    _run(check, make_store())
