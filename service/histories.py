"""A process-side cache of the users' stored histories, kept exact by Redis's invalidation messages.

Reading one user's history from Redis costs a ``/recommend`` request by ``user_id`` a round trip and the client's
call (70 to 80 µs of CPU in redis-py's asyncio client), a third of what the whole request costs at one request at a
time. Redis 6 and later can say which keys changed: on a connection that asked for
``CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX <p>:seq:`` and subscribed to ``__redis__:invalidate``, it
publishes the name of every key under that prefix that any client writes. ``HistoryCache`` keeps the histories it
read and drops a user's entry when that user's key is named; ``InvalidationListener`` holds the connection.

What a reader can rely on:

- The cache holds entries only while the listener's connection is subscribed with tracking on. Before that, after
  the connection is lost or silent for longer than its watchdog allows, and against a server that refuses
  tracking, it is empty and every read goes to Redis (the service's behaviour without the cache).
- A read is stored only if no invalidation for its user arrived between sending it and storing its reply, and no
  newer read of that user was sent meanwhile: a reply that may predate a write is never kept.
- A write made through this process drops its users' entries before its call returns, so a client sees its own
  events on the next request to the same replica. A write through another replica reaches this cache one
  invalidation message later (one network hop): the only staleness the cache adds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError

from service.errors import STORE_FAULTS, store_fault

__all__ = ["CHANNEL", "HistoryCache", "InvalidationListener", "RedisHistories"]

logger = logging.getLogger(__name__)

CHANNEL = "__redis__:invalidate"


class RedisHistories:
    """The request-path reads of the users' histories (``<prefix>:seq:<user_id>`` lists), through a
    ``HistoryCache`` of ``cache_users`` entries when that is above 0. A failed read raises
    ``StoreUnavailableError``.

    The cache's listener starts with the first read, in that read's event loop, and stops with ``close``.
    """

    def __init__(self, reader: Any, prefix: str, cache_users: int = 0) -> None:
        self.reader, self.prefix = reader, prefix
        self.listener = (
            InvalidationListener(HistoryCache(cache_users), self._connection, prefix)
            if cache_users > 0
            else None
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def cache(self) -> HistoryCache | None:
        return None if self.listener is None else self.listener.cache

    def key(self, user_id: str) -> str:
        return f"{self.prefix}:seq:{user_id}"

    async def read(self, user_ids: Sequence[str], n: int) -> list[list[str]]:
        """The last ``n`` items of each user: from the cache, the others in one round trip."""
        if self.listener is None:
            return await self._fetch(user_ids, n)
        cache = self.listener.cache
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.listener.run())
        found = [cache.get(u, n) for u in user_ids]
        missing = [u for u, items in zip(user_ids, found, strict=True) if items is None]
        if not missing:
            return [items for items in found if items is not None]
        tokens = [cache.begin(u) for u in missing]
        fetched = await self._fetch(missing, n)
        for user, token, items in zip(missing, tokens, fetched, strict=True):
            cache.put(user, n, items, token)
        rest = iter(fetched)
        return [items if items is not None else next(rest) for items in found]

    def wrote(self, user_ids: Iterable[str]) -> None:
        """This process changed these users' histories: drop them now, before Redis's message arrives."""
        if self.cache is not None:
            self.cache.invalidate(user_ids)

    async def _fetch(self, user_ids: Sequence[str], n: int) -> list[list[str]]:
        """One plain call for one user (it costs the client less than a pipeline of one), else one pipeline."""
        try:
            if len(user_ids) == 1:
                raw = [await self.reader.lrange(self.key(user_ids[0]), -n, -1)]
            else:
                pipe = self.reader.pipeline(transaction=False)
                for user_id in user_ids:
                    pipe.lrange(self.key(user_id), -n, -1)
                raw = await pipe.execute()
        except STORE_FAULTS as exc:
            raise store_fault(exc, "read history") from exc
        return [[b.decode() for b in seq] for seq in raw]

    def _connection(self) -> Any:
        """A new connection like the reader's (same server, credentials and timeouts), speaking RESP2."""
        pool = self.reader.connection_pool
        return pool.connection_class(**{**pool.connection_kwargs, "protocol": 2})

    async def close(self) -> None:
        """Stop the listener. A cancellation that lands in redis-py's connect can be absorbed there (redis-py 8.2
        went on to its next read), so the task is cancelled until it has ended."""
        task, self._task = self._task, None
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)


class HistoryCache:
    """The last ``max_users`` histories read (least recently used dropped first), and the reads in flight.

    A read from the store goes ``token = begin(user)`` → the store call → ``put(user, n, items, token)``.
    """

    def __init__(self, max_users: int) -> None:
        if max_users <= 0:
            raise ValueError(f"max_users must be positive, got {max_users}")
        self.max_users = max_users
        self.live = False
        self.hits = self.misses = self.invalidations = 0
        self._entries: OrderedDict[str, tuple[int, list[str]]] = OrderedDict()
        self._pending: dict[str, int] = {}  # user -> token of the newest read in flight
        self._tokens = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: str, n: int) -> list[str] | None:
        """The user's last ``n`` items if a read of at least ``n`` (or of the whole list) is cached, else None."""
        entry = self._entries.get(user_id)
        if entry is not None:
            read_n, items = entry
            if read_n >= n or len(items) < read_n:
                self._entries.move_to_end(user_id)
                self.hits += 1
                return items[-n:]
        self.misses += 1
        return None

    def begin(self, user_id: str) -> int:
        """Note a read about to be sent; its token lets ``put`` tell whether the reply may be stale."""
        if not self.live:
            return 0
        if len(self._pending) >= self.max_users:  # reads that never came back (their calls failed)
            self._pending.clear()
        token = next(self._tokens)
        self._pending[user_id] = token
        return token

    def put(self, user_id: str, n: int, items: list[str], token: int) -> None:
        """Keep a reply, unless its user was invalidated or read again since ``begin`` gave ``token``."""
        if not token or self._pending.get(user_id) != token:
            return
        del self._pending[user_id]
        # item ids repeat across users: one copy of each (a 50-id entry then takes about 1.1 KB, not 3.6 KB)
        self._entries[user_id] = (n, [sys.intern(i) for i in items])
        self._entries.move_to_end(user_id)
        if len(self._entries) > self.max_users:
            self._entries.popitem(last=False)

    def invalidate(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            self._pending.pop(user_id, None)
            if self._entries.pop(user_id, None) is not None:
                self.invalidations += (
                    1  # entries dropped, not messages (every write to any history sends one)
                )

    def reset(self, live: bool) -> None:
        """Forget everything (and every read in flight); ``live``: whether invalidations are being received."""
        self._entries.clear()
        self._pending.clear()
        self.live = live


class InvalidationListener:
    """Keeps one connection subscribed to the invalidations of the history keys ``<key_prefix>:seq:*``.

    ``connect`` makes an unconnected RESP2 redis-py connection. A PING every ``ping_seconds`` proves the connection
    alive: no reply for three of them and it is dropped (the cache is emptied first, then a new one is made).
    """

    def __init__(
        self,
        cache: HistoryCache,
        connect: Callable[[], Any],
        key_prefix: str,
        ping_seconds: float = 1.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self.cache, self._connect, self.prefix = cache, connect, f"{key_prefix}:seq:"
        self.ping_seconds, self.retry_seconds = ping_seconds, retry_seconds
        self.connections = 0  # sessions that reached the subscribed state (tests and logs)

    async def run(self) -> None:
        """Forever: subscribe, apply invalidations; on any failure empty the cache, wait, and start again."""
        failures = 0  # in a row: the first of a run is logged, then one in 60
        while True:
            connections = self.connections
            try:
                await self._session()
            except Exception as exc:  # whatever it was, the cache is off until a session is up
                failures = 1 if self.connections > connections else failures + 1
                if failures == 1 or failures % 60 == 0:
                    unexpected = not isinstance(exc, RedisError | OSError)
                    logger.warning(
                        "history cache off until Redis invalidations resume: %s",
                        exc,
                        exc_info=unexpected,
                    )
            finally:
                self.cache.reset(live=False)
            await asyncio.sleep(self.retry_seconds)

    async def _session(self) -> None:
        conn = self._connect()
        pinger: asyncio.Task[None] | None = None
        try:
            await conn.connect()
            wait = 3 * self.ping_seconds
            client_id = await _call(conn, wait, "CLIENT", "ID")
            track = ("TRACKING", "ON", "REDIRECT", client_id, "BCAST", "PREFIX", self.prefix)
            await _call(conn, wait, "CLIENT", *track)
            await _call(conn, wait, "SUBSCRIBE", CHANNEL)
            self.cache.reset(live=True)
            self.connections += 1
            pinger = asyncio.create_task(self._ping(conn))
            while True:
                self._apply(await _reply(conn, wait))
        finally:
            self.cache.reset(live=False)
            if pinger is not None:
                pinger.cancel()
            await conn.disconnect(
                nowait=True
            )  # waiting for the close can hang while being cancelled

    def _apply(self, message: list[Any]) -> None:
        if message[0] != b"message":  # a pong
            return
        keys = message[2]
        if keys is None:  # the server flushed its keys (FLUSHDB/FLUSHALL)
            self.cache.reset(live=True)
        else:
            self.cache.invalidate(k[len(self.prefix) :].decode() for k in keys)

    async def _ping(self, conn: Any) -> None:
        """A PING now and then; when one cannot be sent, the reader's watchdog ends the session."""
        try:
            while True:
                await asyncio.sleep(self.ping_seconds)
                await conn.send_command("PING")
        except (RedisError, OSError):
            return


async def _call(conn: Any, timeout: float, *args: Any) -> Any:
    await conn.send_command(*args)
    return await _reply(conn, timeout)


async def _reply(conn: Any, timeout: float) -> Any:
    """The next reply (an error reply raises ``ResponseError``); none within ``timeout`` raises ``TimeoutError``."""
    reply = await conn.read_response(timeout=timeout)
    if reply is None:  # redis-py's answer to a read timeout that its caller chose
        raise TimeoutError(f"Redis sent nothing for {timeout:g} s")
    return reply
