"""From /recommend requests and their histories to the answers: a micro-batch of ``POST /recommend`` calls and a
``POST /recommend/batch`` call go the same way (``answer_requests``).

The requests' stored histories are read in one pipelined store call (one round trip for all the users), every
request with a known history goes to the runtime in one encode and one search, and the others get the popularity
fallback. ``check_request`` and ``plan`` are shared, so a request in a batch is limited, looked up and excluded
exactly as it is alone. In a micro-batch of ``/recommend`` calls (``ServiceState.recommend``) a request's own
error (a filter naming an unknown field) is its answer alone; a store fault degrades every request of the batch
that reads a stored history, each answered from the popularity fallback marked ``degraded``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from core.arrays import Float32Array, IntArray
from service.catalogue import HiddenItems
from service.errors import RequestError, StoreUnavailableError, check_limit
from service.metrics import ServiceMetrics
from service.popularity import Popularity
from service.runtime import ModelRuntime, Query
from service.schemas import (
    HistorySource,
    RecommendBatchRequest,
    RecommendBatchResponse,
    RecommendRequest,
    RecommendResponse,
    ScoredItem,
)
from service.settings import Settings
from service.store import HistoryStore

__all__ = [
    "answer_requests",
    "check_request",
    "model_answer",
    "plan",
    "read_histories",
    "recommend_batch",
]

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
    results = []
    for answer in await answer_requests(state, rt, body.requests, BATCH_ROUTE):
        if isinstance(answer, RequestError):
            raise answer
        results.append(answer)
    return RecommendBatchResponse(results=results)


async def answer_requests(
    state: BatchHost, rt: ModelRuntime, requests: Sequence[RecommendRequest], route: str
) -> list[RecommendResponse | RequestError]:
    """The answer of each (already checked) request, or the ``RequestError`` it alone gets; ``route`` labels the
    degraded-answer metric when the store fails."""
    histories, degraded = await read_histories(state, requests, rt.max_len, route)
    plans: list[tuple[Query, list[str]] | RequestError] = []
    for request, ids in zip(requests, histories, strict=True):
        try:
            plans.append(plan(rt, request, ids, state.metrics))
        except RequestError as exc:
            plans.append(exc)
    queries = [p[0] for p in plans if not isinstance(p, RequestError) and len(p[0].rows)]
    found = iter(await rt.run(rt.recommend, queries) if queries else [])
    results: list[RecommendResponse | RequestError] = []
    for request, planned in zip(requests, plans, strict=True):
        if isinstance(planned, RequestError):
            results.append(planned)
        elif len(planned[0].rows):
            results.append(model_answer(rt, planned[0], *next(found), planned[1]))
        else:
            stored = degraded and request.history is None
            results.append(state.popularity.answer(rt, *planned, stored))
    return results


async def read_histories(
    state: BatchHost, requests: Sequence[HistorySource], n: int, route: str
) -> tuple[list[Sequence[str]], bool]:
    """Each request's history (a ``/recommend`` or a ``/score`` one): its inline one, else its user's stored one,
    read for all users in one round trip.

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
            state.metrics.degraded.labels(route, exc.reason).inc(len(users))  # one per answer
            degraded = True
    read = iter(stored)
    return [r.history if r.history is not None else next(read) for r in requests], degraded
