"""Where the service keeps state that outlives a request: user sequences, the event log, items added after training.

Two implementations of one interface: ``RedisStore`` (``redis.asyncio`` with hiredis; every key under one prefix,
so several services or tests share a server) and ``MemoryStore`` (one process, no persistence). Redis layout::

    <p>:seq:<user_id>          list of item ids, oldest first, trimmed to the history length
    <p>:events                 stream of {user_id, item_id, timestamp}: training data for the next model
    <p>:items                  hash item_id -> text of items added through POST /items
    <p>:items:emb:<encoder>    hash item_id -> float32 text embedding (bytes), per text-encoder version
    <p>:items:fields           hash item_id -> JSON object of its filterable attributes (items that have some)
    <p>:items:log              stream of {item_id}: other pods replay it to add the same items live
    <p>:hidden                 hash item_id -> unix seconds it is hidden until ("inf": until restored)
    <p>:popular                sorted set item_id -> log of its decayed event count (``service.decay``)
    <p>:popular:total          log of the decayed count of all events
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.events import decode_event, encode_event, events_stream
from service.decay import INCREMENT_SCRIPT, DecayedCounts, PopularityUpdate, log_add
from service.errors import store_faults
from service.histories import RedisHistories

__all__ = ["Event", "HistoryStore", "MemoryStore", "RedisStore", "StoredItem", "open_store"]


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    timestamp: float | None = None


@dataclass(frozen=True)
class StoredItem:
    """An item added after training: its text, its text embedding when cached for the current encoder, and its
    normalized filterable attributes (``service.filters``)."""

    item_id: str
    text: str
    embedding: NDArray[np.float32] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


class HistoryStore(Protocol):
    async def ping(self) -> bool: ...
    async def read_history(self, user_id: str, n: int) -> list[str]: ...
    async def read_histories(self, user_ids: Sequence[str], n: int) -> list[list[str]]: ...
    async def append_events(
        self, events: Sequence[Event], keep: int, popularity: PopularityUpdate | None = None
    ) -> None: ...
    async def read_popular(self, n: int) -> DecayedCounts: ...
    async def save_items(self, items: Sequence[StoredItem], encoder: str) -> None: ...
    async def load_items(self, encoder: str) -> tuple[list[StoredItem], str]: ...
    async def cache_embeddings(
        self, item_ids: Sequence[str], embeddings: NDArray[np.float32], encoder: str
    ) -> None: ...
    async def items_since(self, cursor: str, encoder: str) -> tuple[list[StoredItem], str]: ...
    async def hide_items(self, until: dict[str, float]) -> None: ...
    async def restore_items(self, item_ids: Sequence[str]) -> None: ...
    async def load_hidden(self) -> dict[str, float]: ...
    async def close(self) -> None: ...


class RedisStore:
    """Redis behind the ``HistoryStore`` interface. Every failed call raises ``StoreUnavailableError``.

    ``client`` serves writes and background reads; ``reader`` (default: ``client``) serves the reads on the request
    path (``read_history``, ``ping``), so they can have a shorter timeout. redis-py drops a connection whose call
    failed or timed out and reconnects on the next call, so the store recovers by itself when Redis is back.
    ``history_cache``: users whose histories are kept in process (``service.histories``; 0: none).
    """

    def __init__(
        self,
        client: Redis,
        prefix: str,
        stream_maxlen: int = 1_000_000,
        reader: Redis | None = None,
        history_cache: int = 0,
    ) -> None:
        # redis-py annotates replies as bytes | str (it depends on decode_responses); this client has bytes only
        self.client: Any = client
        self.reader: Any = reader or client
        self.prefix, self.stream_maxlen = prefix, stream_maxlen
        self.histories = RedisHistories(self.reader, prefix, history_cache)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str,
        stream_maxlen: int = 1_000_000,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        history_cache: int = 0,
    ) -> RedisStore:
        """Without timeouts: redis-py's defaults (no timeout, retries), for offline tools such as the exporter.

        With them (seconds): each client connects and waits for replies at most that long and never retries, so a
        request waits for the store at most one timeout.
        """
        if read_timeout is None and write_timeout is None:
            client = Redis.from_url(url, decode_responses=False)
            return cls(client, prefix, stream_maxlen, history_cache=history_cache)
        reader = _client(url, read_timeout)
        return cls(_client(url, write_timeout), prefix, stream_maxlen, reader, history_cache)

    async def ping(self) -> bool:
        try:
            return bool(await self.reader.ping())
        except (OSError, ConnectionError, TimeoutError):
            return False
        except Exception:  # redis.exceptions.RedisError and friends: not ready, never a crash
            return False

    async def read_history(self, user_id: str, n: int) -> list[str]:
        return (await self.histories.read([user_id], n))[0]

    async def read_histories(self, user_ids: Sequence[str], n: int) -> list[list[str]]:
        """The last ``n`` items of each user, in one round trip for those not in the history cache."""
        return await self.histories.read(user_ids, n)

    @store_faults("append events")
    async def append_events(
        self, events: Sequence[Event], keep: int, popularity: PopularityUpdate | None = None
    ) -> None:
        """All events of one call, and their popularity counts, in one MULTI/EXEC: stored together or not at all."""
        by_user: dict[str, list[str]] = defaultdict(list)
        pipe = self.client.pipeline(transaction=True)
        for e in events:
            by_user[e.user_id].append(e.item_id)
            ts = time.time() if e.timestamp is None else e.timestamp
            fields = encode_event(e.user_id, e.item_id, ts)
            pipe.xadd(
                events_stream(self.prefix), fields, maxlen=self.stream_maxlen, approximate=True
            )
        for user, items in by_user.items():
            pipe.rpush(self.histories.key(user), *items)
            pipe.ltrim(self.histories.key(user), -keep, -1)
        if popularity is not None and popularity.log_weights:
            pairs = [x for item, w in popularity.log_weights.items() for x in (item, repr(w))]
            popular = f"{self.prefix}:popular"
            pipe.eval(
                INCREMENT_SCRIPT, 2, popular, f"{popular}:total", popularity.max_items, *pairs
            )
        try:
            await pipe.execute()
        finally:  # whether or not it was applied: a timed-out transaction may still have been
            self.histories.wrote(by_user)

    @store_faults("read popularity")
    async def read_popular(self, n: int) -> DecayedCounts:
        """The ``n`` items with the largest decayed event counts, and the total, as of one instant."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zrevrange(f"{self.prefix}:popular", 0, n - 1, withscores=True)
        pipe.get(f"{self.prefix}:popular:total")
        top, total = await pipe.execute()
        items = [(k.decode(), float(v)) for k, v in top]
        return DecayedCounts(items, None if total is None else float(total))

    @store_faults("save items")
    async def save_items(self, items: Sequence[StoredItem], encoder: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(f"{self.prefix}:items", mapping={i.item_id: i.text for i in items})
        embs = {i.item_id: _to_bytes(i.embedding) for i in items if i.embedding is not None}
        if embs:
            pipe.hset(f"{self.prefix}:items:emb:{encoder}", mapping=embs)
        pipe.hdel(f"{self.prefix}:items:fields", *[i.item_id for i in items])
        attrs = {i.item_id: json.dumps(i.attributes) for i in items if i.attributes}
        if attrs:
            pipe.hset(f"{self.prefix}:items:fields", mapping=attrs)
        for i in items:
            pipe.xadd(f"{self.prefix}:items:log", {"item_id": i.item_id})
        await pipe.execute()

    @store_faults("cache embeddings")
    async def cache_embeddings(
        self, item_ids: Sequence[str], embeddings: NDArray[np.float32], encoder: str
    ) -> None:
        mapping = {i: _to_bytes(e) for i, e in zip(item_ids, embeddings, strict=True)}
        await self.client.hset(f"{self.prefix}:items:emb:{encoder}", mapping=mapping)

    @store_faults("load items")
    async def load_items(self, encoder: str) -> tuple[list[StoredItem], str]:
        last = await self.client.xrevrange(f"{self.prefix}:items:log", count=1)
        cursor = last[0][0].decode() if last else "0-0"
        texts: dict[bytes, bytes] = await self.client.hgetall(f"{self.prefix}:items")
        embs: dict[bytes, bytes] = await self.client.hgetall(f"{self.prefix}:items:emb:{encoder}")
        attrs: dict[bytes, bytes] = await self.client.hgetall(f"{self.prefix}:items:fields")
        items = [
            StoredItem(k.decode(), v.decode(), _from_bytes(embs.get(k)), _attrs(attrs.get(k)))
            for k, v in texts.items()
        ]
        return items, cursor

    async def iter_events(self, page: int = 10_000) -> AsyncIterator[list[Event]]:
        """The event stream ``<p>:events``, oldest first, in pages (for ``recsys events``: the next model's data)."""
        start = "-"
        while True:
            entries = await self.client.xrange(
                events_stream(self.prefix), min=start, max="+", count=page
            )
            if not entries:
                return
            yield [Event(*decode_event(f)) for _, f in entries]
            start = "(" + entries[-1][0].decode()  # exclusive: after the last entry read

    @store_faults("read new items")
    async def items_since(self, cursor: str, encoder: str) -> tuple[list[StoredItem], str]:
        entries = await self.client.xread({f"{self.prefix}:items:log": cursor}, count=10_000)
        if not entries:
            return [], cursor
        records = entries[0][1]
        cursor = records[-1][0].decode()
        ids = list(dict.fromkeys(fields[b"item_id"] for _, fields in records))
        texts = await self.client.hmget(f"{self.prefix}:items", ids)
        embs = await self.client.hmget(f"{self.prefix}:items:emb:{encoder}", ids)
        attrs = await self.client.hmget(f"{self.prefix}:items:fields", ids)
        items = [
            StoredItem(i.decode(), t.decode(), _from_bytes(e), _attrs(a))
            for i, t, e, a in zip(ids, texts, embs, attrs, strict=True)
            if t is not None
        ]
        return items, cursor

    @store_faults("hide items")
    async def hide_items(self, until: dict[str, float]) -> None:
        await self.client.hset(
            f"{self.prefix}:hidden", mapping={k: repr(v) for k, v in until.items()}
        )

    @store_faults("restore items")
    async def restore_items(self, item_ids: Sequence[str]) -> None:
        await self.client.hdel(f"{self.prefix}:hidden", *item_ids)

    @store_faults("load hidden items")
    async def load_hidden(self) -> dict[str, float]:
        raw: dict[bytes, bytes] = await self.client.hgetall(f"{self.prefix}:hidden")
        return {k.decode(): float(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self.histories.close()
        await self.client.aclose()
        if self.reader is not self.client:
            await self.reader.aclose()


class MemoryStore:
    """In-process store: the default without a Redis URL (one machine, nothing persisted)."""

    def __init__(self) -> None:
        self.sequences: dict[str, list[str]] = defaultdict(list)
        self.events: list[Event] = []
        self.texts: dict[str, str] = {}
        self.attributes: dict[str, dict[str, Any]] = {}
        self.embeddings: dict[tuple[str, str], NDArray[np.float32]] = {}
        self.log: list[str] = []
        self.hidden: dict[str, float] = {}
        self.popular: dict[str, float] = {}  # item_id -> log decayed count
        self.popular_total: float | None = None

    async def ping(self) -> bool:
        return True

    async def read_history(self, user_id: str, n: int) -> list[str]:
        return self.sequences.get(user_id, [])[-n:]

    async def read_histories(self, user_ids: Sequence[str], n: int) -> list[list[str]]:
        return [self.sequences.get(u, [])[-n:] for u in user_ids]

    async def append_events(
        self, events: Sequence[Event], keep: int, popularity: PopularityUpdate | None = None
    ) -> None:
        for e in events:
            seq = self.sequences[e.user_id]
            seq.append(e.item_id)
            del seq[:-keep]
        self.events.extend(events)
        for item, w in (popularity.log_weights if popularity else {}).items():
            self.popular[item] = log_add(self.popular.get(item), w)
            self.popular_total = log_add(self.popular_total, w)
        if popularity is not None and len(self.popular) > popularity.max_items:
            self.popular = dict(self._top_popular(popularity.max_items))

    async def read_popular(self, n: int) -> DecayedCounts:
        return DecayedCounts(self._top_popular(n), self.popular_total)

    def _top_popular(self, n: int) -> list[tuple[str, float]]:
        return sorted(self.popular.items(), key=lambda kv: kv[1], reverse=True)[:n]

    async def save_items(self, items: Sequence[StoredItem], encoder: str) -> None:
        for i in items:
            self.texts[i.item_id] = i.text
            self.attributes[i.item_id] = dict(i.attributes)
            if i.embedding is not None:
                self.embeddings[(encoder, i.item_id)] = i.embedding
            self.log.append(i.item_id)

    async def cache_embeddings(
        self, item_ids: Sequence[str], embeddings: NDArray[np.float32], encoder: str
    ) -> None:
        for i, e in zip(item_ids, embeddings, strict=True):
            self.embeddings[(encoder, i)] = e

    async def load_items(self, encoder: str) -> tuple[list[StoredItem], str]:
        items = [self._item(k, encoder) for k in self.texts]
        return items, str(len(self.log))

    async def items_since(self, cursor: str, encoder: str) -> tuple[list[StoredItem], str]:
        ids = list(dict.fromkeys(self.log[int(cursor) :]))
        items = [self._item(i, encoder) for i in ids]
        return items, str(len(self.log))

    def _item(self, item_id: str, encoder: str) -> StoredItem:
        emb = self.embeddings.get((encoder, item_id))
        return StoredItem(item_id, self.texts[item_id], emb, self.attributes.get(item_id, {}))

    async def hide_items(self, until: dict[str, float]) -> None:
        self.hidden.update(until)

    async def restore_items(self, item_ids: Sequence[str]) -> None:
        for i in item_ids:
            self.hidden.pop(i, None)

    async def load_hidden(self) -> dict[str, float]:
        return dict(self.hidden)

    async def close(self) -> None:
        return None


def open_store(
    redis_url: str | None,
    prefix: str,
    stream_maxlen: int,
    read_timeout: float | None = None,
    write_timeout: float | None = None,
    history_cache: int = 0,
) -> HistoryStore:
    if redis_url is None:
        return MemoryStore()
    return RedisStore.from_url(
        redis_url, prefix, stream_maxlen, read_timeout, write_timeout, history_cache
    )


def _client(url: str, timeout: float | None) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _to_bytes(x: NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def _attrs(raw: bytes | None) -> dict[str, Any]:
    return {} if raw is None else dict(json.loads(raw))


def _from_bytes(raw: bytes | None) -> NDArray[np.float32] | None:
    return None if raw is None else np.frombuffer(raw, dtype="<f4").copy()
