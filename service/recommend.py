"""From a /recommend request and its history to the answer, for one request and for ``POST /recommend/batch``.

``check_request`` and ``plan`` are shared by ``ServiceState.recommend`` and ``recommend_batch``, so a request in a
batch is limited, looked up and excluded exactly as it is alone. A batch reads the stored histories of its users in
one pipelined store call and hands every request with a known history to the runtime as one encode and one search
(not one micro-batcher submission each); the others get the popularity fallback.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from core.arrays import Float32Array, IntArray
from service.catalogue import HiddenItems
from service.errors import StoreUnavailableError, check_limit
from service.metrics import ServiceMetrics
from service.popularity import Popularity
from service.runtime import ModelRuntime, Query
from service.schemas import (
    RecommendBatchRequest,
    RecommendBatchResponse,
    RecommendRequest,
    RecommendResponse,
    ScoredItem,
)
from service.settings import Settings
from service.store import HistoryStore

__all__ = ["check_request", "model_answer", "plan", "recommend_batch"]

BATCH_ROUTE = "/recommend/batch"


class BatchHost(Protocol):
    """What ``recommend_batch`` reads of the service state (``service.state.ServiceState`` is one)."""

    settings: Settings
    store: HistoryStore
    metrics: ServiceMetrics
    hidden: HiddenItems
    popularity: Popularity

    def require_runtime(self) -> ModelRuntime: ...


def check_request(settings: Settings, body: RecommendRequest, name: str = "") -> None:
    """422 naming the limit (prefixed with ``name``, e.g. ``requests[3].``) that ``body`` exceeds."""
    check_limit(f"{name}k", body.k, settings.max_k)
    check_limit(f"{name}exclude", len(body.exclude), settings.max_candidates)
    if body.history is not None:
        check_limit(f"{name}history", len(body.history), settings.max_history)


def plan(
    rt: ModelRuntime, body: RecommendRequest, ids: Sequence[str], metrics: ServiceMetrics
) -> tuple[Query, list[str]]:
    """The query for ``body`` with history ``ids`` (known rows, rows never to return), and the unknown ids."""
    rows, unknown = rt.lookup(ids)
    exclude_rows, _ = rt.lookup(body.exclude)
    exclude = frozenset(exclude_rows.tolist()) | (
        frozenset(rows.tolist()) if body.exclude_seen else frozenset()
    )
    where = None if body.filter is None else rt.fields.check(body.filter)
    if unknown:
        metrics.unknown_items.inc(len(unknown))
    return Query(rows, body.k, exclude, where), unknown


def model_answer(
    rt: ModelRuntime, query: Query, found: IntArray, scores: Float32Array, unknown: list[str]
) -> RecommendResponse:
    items = [
        ScoredItem(item_id=rt.item_id(r), score=v)
        for r, v in zip(found.tolist(), scores.tolist(), strict=True)
    ]
    return RecommendResponse(
        items=items,
        model_version=rt.version,
        source="model",
        unknown_items=unknown,
        filtered_short=query.where is not None and len(items) < query.k,
    )


async def recommend_batch(state: BatchHost, body: RecommendBatchRequest) -> RecommendBatchResponse:
    """Each request answered as ``POST /recommend`` answers it alone, with one store read and one model call."""
    rt = state.require_runtime()
    check_limit("requests", len(body.requests), state.settings.max_batch)
    for i, request in enumerate(body.requests):
        check_request(state.settings, request, f"requests[{i}].")
    state.hidden.expire(rt)
    histories, degraded = await _histories(state, body.requests, rt.max_len)
    plans = [
        plan(rt, request, ids, state.metrics)
        for request, ids in zip(body.requests, histories, strict=True)
    ]
    queries = [query for query, _ in plans if len(query.rows)]
    found = iter(await rt.run(rt.recommend, queries) if queries else [])
    results = []
    for request, (query, unknown) in zip(body.requests, plans, strict=True):
        if len(query.rows):
            results.append(model_answer(rt, query, *next(found), unknown))
        else:
            stored = degraded and request.history is None
            results.append(state.popularity.answer(rt, query, unknown, stored))
    return RecommendBatchResponse(results=results)


async def _histories(
    state: BatchHost, requests: Sequence[RecommendRequest], n: int
) -> tuple[list[Sequence[str]], bool]:
    """Each request's history: its inline one, else its user's stored one, read for all users in one round trip.

    If the store fails, the users' histories are empty (their answers come from the popularity fallback) and the
    second value is True.
    """
    users = [r.user_id for r in requests if r.history is None and r.user_id is not None]
    stored: list[list[str]] = [[] for _ in users]
    degraded = False
    if users:
        t0 = time.perf_counter()
        try:
            stored = await state.store.read_histories(users, n)
            state.metrics.stage_seconds.labels("history").observe(time.perf_counter() - t0)
        except StoreUnavailableError as exc:  # answered as users with no history, and said so
            state.metrics.degraded.labels(BATCH_ROUTE, exc.reason).inc()
            degraded = True
    read = iter(stored)
    return [r.history if r.history is not None else next(read) for r in requests], degraded
